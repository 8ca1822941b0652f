"""The app's chrome in a real browser (issue 24 item 3): `streamlit run app/main.py` (which reads
.streamlit/config.toml from the repository root) in headless Debian Chromium. Users see no Deploy button and no
developer or recording items in the menu, only the app's About and the theme choice; in the dark theme (the
browser asking for it, as a viewer's system would) every picture of a page is drawn and its figures' text stays
readable on their white cards; a glossary link (`about#tie`) scrolls to its term."""
import pytest

from tests.browser_app import browser_page, chromium, requires_chromium, served_app, wait_idle

pytestmark = requires_chromium

MENU_ITEMS_HIDDEN = ("Deploy", "Rerun", "Clear cache", "Record", "Print", "Settings", "Developer", "Version",
                     "Streamlit v")
MIN_CONTRAST = 3.0  # WCAG's ratio for large text; light-theme text on a white card (what dark mode broke) is ~1.1

# WCAG contrast of each figure's text (titles, axis ticks and titles, colour bars, legends, subplot titles) against
# the figure's own background (the page's where the figure is transparent): the ones below `min`.
LOW_CONTRAST_JS = """(min) => {
  const rgba = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => v / 255).map(c => c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4)
    .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const page = rgba(getComputedStyle(document.querySelector('[data-testid="stApp"]')).backgroundColor);
  const low = [];
  for (const plot of document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')) {
    let paper = rgba(getComputedStyle(plot.querySelector('.main-svg')).backgroundColor);
    if (paper.length < 3 || paper[3] === 0) paper = page;
    const selector = '.gtitle, .annotation-text, .xtick text, .ytick text, .g-xtitle text, .g-ytitle text, ' +
                     '.cbtitle text, .colorbar text, .legendtext';
    for (const text of plot.querySelectorAll(selector)) {
      if (!text.textContent.trim()) continue;
      const [a, b] = [lum(rgba(getComputedStyle(text).fill)), lum(paper)];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < min) low.push(`${text.textContent.trim()} (${ratio.toFixed(2)})`);
    }
  }
  return low;
}"""
PICTURES_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const images = [...main.querySelectorAll('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img')];
  return {images: images.length, broken: images.filter(img => !(img.complete && img.naturalWidth > 0)).length,
          plots: main.querySelectorAll('.js-plotly-plot').length,
          drawn: main.querySelectorAll('.js-plotly-plot .main-svg').length > 0
                 && [...main.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg')),
          exceptions: main.querySelectorAll('[data-testid="stException"]').length};
}"""
BACKGROUND_LUMINANCE_JS = """() => {
  const [r, g, b] = getComputedStyle(document.querySelector('[data-testid="stApp"]')).backgroundColor.match(/\\d+/g).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=120_000)  # the first visit loads the model
    wait_idle(page)


def test_no_deploy_button_nor_developer_menu_only_about_and_the_theme_choice(app_url):
    with browser_page(1280, 800) as page:
        open_page(page, f"{app_url}/about")
        assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
        assert "Deploy" not in page.locator('[data-testid="stToolbar"]').all_inner_texts()
        page.locator('[data-testid="stMainMenu"]').click()
        menu = page.locator('[data-testid="stMainMenuList"]')
        menu.wait_for()
        items = menu.inner_text()
        assert not [hidden for hidden in MENU_ITEMS_HIDDEN if hidden in items], items
        themes = menu.locator('[data-testid^="stMainMenuItem-theme-"]')
        assert themes.evaluate_all("items => items.map(i => i.dataset.testid.split('-').pop())") == ["System", "Light",
                                                                                                   "Dark"]
        assert menu.locator('[data-testid="stMainMenuItem-about"]').count() == 1
        assert page.evaluate(BACKGROUND_LUMINANCE_JS) > 0.8  # the browser asks for light: the light theme
        menu.locator('[data-testid="stMainMenuItem-theme-Dark"]').click()  # the viewer's choice
        page.wait_for_timeout(500)
        assert page.evaluate(BACKGROUND_LUMINANCE_JS) < 0.2


@pytest.mark.parametrize("path", ["", "attribution"])  # Layers (PNG pictures and Plotly figures), Attribution
def test_dark_theme_draws_every_picture_readably(app_url, path):
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark").new_page()
        open_page(page, f"{app_url}/{path}")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMain\"] .js-plotly-plot .main-svg')"
                               ".length > 0", timeout=60_000)
        page.wait_for_timeout(1000)
        assert page.evaluate(BACKGROUND_LUMINANCE_JS) < 0.2  # the theme follows the system: dark
        pictures = page.evaluate(PICTURES_JS)
        assert pictures["exceptions"] == 0 and pictures["broken"] == 0 and pictures["drawn"], pictures
        assert pictures["plots"] >= 2 and (pictures["images"] >= 1 or path == "attribution"), pictures
        assert page.evaluate(LOW_CONTRAST_JS, MIN_CONTRAST) == []


def test_a_glossary_link_scrolls_to_its_term(app_url):
    with browser_page(1280, 800) as page:
        open_page(page, f"{app_url}/about#l2m")
        heading = page.locator("#l2m")
        page.wait_for_function("() => { const h = document.getElementById('l2m'); const r = h && h.getBoundingClientRect();"
                               " return r && r.top >= 0 && r.top < window.innerHeight / 2; }", timeout=30_000)
        assert heading.inner_text().strip() == "L2M"
