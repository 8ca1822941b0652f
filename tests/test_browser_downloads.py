"""Downloads in a real browser: press a page's download buttons as a person would, then open what arrived. The
files must be what their names say (a PNG that decodes, a 300-dpi print PNG, a CSV whose numbers are the page's
table), named after the model, the image and the stage."""
import csv
import io

import pytest
from PIL import Image

from tests.browser_app import CHROMIUM, CHROMIUM_ARGS, requires_chromium, served_app, wait_idle

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


def download(page, label: str):
    """Press the download button labelled `label`; (file name, bytes) of what the browser saved."""
    button = page.get_by_role("button", name=label).first
    button.scroll_into_view_if_needed()
    with page.expect_download(timeout=60_000) as arrival:
        button.click()
    saved = arrival.value
    return saved.suggested_filename, open(saved.path(), "rb").read()


def test_downloads_arrive_as_the_files_their_names_say(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
        page.goto(f"{app_url}/swap", timeout=60_000)
        page.get_by_role("button", name="Download this table (CSV)").wait_for(timeout=120_000)
        wait_idle(page)

        name, data = download(page, "Download this figure (PNG)")
        assert name == "swwae_swap_default_A-150-3_B-350-7_stages-1-2-3.png"  # model, both images, the stages
        screen = Image.open(io.BytesIO(data))
        screen.load()
        assert screen.format == "PNG" and screen.width > 300

        name, data = download(page, "Figure for a paper (300 dpi, 3.5 in)")
        paper = Image.open(io.BytesIO(data))
        assert paper.format == "PNG" and round(paper.info["dpi"][0]) == 300
        assert 3.5 * 300 <= paper.width < 1.2 * 3.5 * 300  # a column (3.5 in) wide at print resolution

        name, data = download(page, "Download this table (CSV)")
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        assert name.endswith(".csv") and len(rows) == 8
        page_table = page.locator('[data-testid="stTable"]').first.inner_text()
        for row in rows:  # every number in the file is the page's table's, to the digits the page shows
            mse = f"{float(row['MSE to A']):.4f}"
            assert mse in page_table, (mse, page_table[:300])

        page.goto(app_url, timeout=60_000)
        page.get_by_role("button", name="Where map (PNG)").wait_for(timeout=120_000)
        wait_idle(page)
        name, data = download(page, "Where map (PNG)")
        assert "stage-1" in name and "where" in name
        Image.open(io.BytesIO(data)).verify()
        browser.close()
