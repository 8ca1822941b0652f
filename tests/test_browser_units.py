"""The Layers page's unit view in a real browser: `streamlit run app/main.py` driven by headless Debian Chromium
through Playwright. A click on a tile of the stage's *what* mosaic (a real mouse click at the tile's pixel, which
Plotly turns into a point selection and Streamlit into a rerun) must open that channel's unit view."""
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.browser_app import browser_page, requires_chromium, served_app

pytestmark = requires_chromium

# Page coordinates of the centre of `channel`'s tile in the clickable mosaic of the chart with widget key `key`,
# from Plotly's own axes (so the test clicks where a person would, whatever the layout's size).
TILE_CENTRE_JS = """([key, channel]) => {
  const plot = document.querySelector(`.st-key-${key} .js-plotly-plot`);
  const targets = plot._fullData.find(trace => trace.type === 'scatter' && trace.mode === 'markers');
  const xaxis = plot._fullLayout[targets.xaxis.replace('x', 'xaxis')];
  const yaxis = plot._fullLayout[targets.yaxis.replace('y', 'yaxis')];
  const box = plot.querySelector('.main-svg').getBoundingClientRect();
  const i = Array.from(targets.customdata).indexOf(channel);
  return {x: box.left + xaxis._offset + xaxis.d2p(targets.x[i]), y: box.top + yaxis._offset + yaxis.d2p(targets.y[i])};
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


def unit_header(page) -> str:
    return page.get_by_role("heading", name="Unit view").inner_text()


def lens_header(page) -> str:
    return page.get_by_role("heading", name="Pooling lens").inner_text()


def click_tile(page, key: str, channel: int) -> None:
    page.evaluate("key => document.querySelector(`.st-key-${key}`).scrollIntoView({block: 'center'})", key)
    page.wait_for_timeout(300)
    point = page.evaluate(TILE_CENTRE_JS, [key, channel])
    page.mouse.move(point["x"], point["y"])  # Plotly selects the hovered point on click
    page.wait_for_timeout(200)
    page.mouse.click(point["x"], point["y"])


def wait_for_header(page, text: str, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page.wait_for_timeout(200)
        if text in unit_header(page):
            return True
    return False


def test_clicking_a_what_map_opens_its_unit(app_url, tmp_path):
    with browser_page() as page:
        page.goto(app_url, timeout=60_000)
        page.locator(".st-key-layers_maps_0 .js-plotly-plot").wait_for(timeout=120_000)
        page.get_by_role("heading", name="Unit view").wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # Plotly finishes drawing
        assert "stage 1, channel 0" in unit_header(page)

        click_tile(page, "layers_maps_0", 13)
        assert wait_for_header(page, "stage 1, channel 13"), unit_header(page)
        page.get_by_text("decoding of this unit").wait_for(timeout=30_000)

        page.get_by_role("tab", name="Stage 2", exact=False).click()  # only the open stage is drawn
        page.locator(".st-key-layers_maps_1 .js-plotly-plot").wait_for(timeout=60_000)
        assert wait_for_header(page, "stage 2, channel 13"), unit_header(page)  # the tab moved the unit's stage
        page.wait_for_timeout(1000)
        click_tile(page, "layers_maps_1", 40)
        assert wait_for_header(page, "stage 2, channel 40"), unit_header(page)
        # overview, where, where key (PNGs); the unit's 3 pictures; its top 9 (the closed detail expander draws none)
        assert page.locator('[data-testid="stImage"] img').count() == 3 + 3 + 9
        assert not page.locator('[data-testid="stException"]').count()
        page.screenshot(path=str(tmp_path / "layers_unit.png"), full_page=True)
    if os.environ.get("SWWAE_SCREENSHOT_DIR"):  # keep a copy for a human to look at
        shutil.copy(tmp_path / "layers_unit.png", Path(os.environ["SWWAE_SCREENSHOT_DIR"]) / "layers_unit.png")


# Page coordinates of window (row, col) in the `panel`-th panel with click targets of the lens (0: pre-pool).
WINDOW_JS = """([key, panel, row, col]) => {
  const plot = document.querySelector(`.st-key-${key} .js-plotly-plot`);
  const targets = plot._fullData.filter(trace => trace.type === 'scatter' && trace.mode === 'markers'
                                        && trace.customdata && trace.customdata[0].length === 2)[panel];
  const xaxis = plot._fullLayout[targets.xaxis.replace('x', 'xaxis')];
  const yaxis = plot._fullLayout[targets.yaxis.replace('y', 'yaxis')];
  const box = plot.querySelector('.main-svg').getBoundingClientRect();
  const i = Array.from(targets.customdata).findIndex(d => d[0] === row && d[1] === col);
  return {x: box.left + xaxis._offset + xaxis.d2p(targets.x[i]), y: box.top + yaxis._offset + yaxis.d2p(targets.y[i])};
}"""
OUTLINES_JS = """key => (document.querySelector(`.st-key-${key} .js-plotly-plot`)._fullLayout.shapes || [])
  .filter(s => s.type === 'rect').map(s => [s.xref, s.x0, s.y0])"""


def test_the_lens_follows_a_tile_click_and_links_a_clicked_window(app_url, tmp_path):
    """Click a what tile: the lens shows that channel. Click a window in the large pre-pool panel: it is outlined in
    all three panels, at the same window, and its readout appears."""
    with browser_page(1280, 800) as page:
        page.goto(app_url, timeout=60_000)
        page.locator(".st-key-layers_lens .js-plotly-plot").wait_for(timeout=120_000)
        page.wait_for_timeout(1000)
        assert "stage 1, channel 0" in lens_header(page)
        click_tile(page, "layers_maps_0", 5)
        deadline = time.monotonic() + 60
        while "channel 5" not in lens_header(page) and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert "stage 1, channel 5" in lens_header(page)
        page.evaluate("document.querySelector('.st-key-layers_lens').scrollIntoView({block: 'center'})")
        page.wait_for_timeout(1500)
        assert page.evaluate(OUTLINES_JS, "layers_lens") == []
        point = page.evaluate(WINDOW_JS, ["layers_lens", 0, 6, 7])  # window (6, 7) in the pre-pool panel
        page.mouse.move(point["x"], point["y"])
        page.wait_for_timeout(200)
        page.mouse.click(point["x"], point["y"])
        page.get_by_text("Window (6, 7) covers pixels 12–13 × 14–15").wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        outlines = page.evaluate(OUTLINES_JS, "layers_lens")
        assert sorted(outlines) == [["x", 13.5, 11.5], ["x2", 13.5, 11.5], ["x3", 13.5, 11.5]]
        assert not page.locator('[data-testid="stException"]').count()
