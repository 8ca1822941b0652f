"""The shipped foreign network in a real browser: `streamlit run app/main.py` driven by headless Debian Chromium
through Playwright. The address opens checkpoints/fashion_vgg.pt (a plain max-pooling classifier, not an SWWAE); a
click on a tile of the stage's *what* mosaic must open that channel's unit view, drawn as its deconvnet decoding, and
the page must quote no reconstruction error."""
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.browser_app import browser_page, requires_chromium, served_app
from core.model.network_file import read_network_file
from tests.test_browser_units import click_tile, unit_header

pytestmark = requires_chromium
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "checkpoints/fashion_vgg.pt"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.mark.skipif(not (ROOT / SHIPPED).is_file(), reason=f"{SHIPPED} is not shipped in this checkout")
def test_a_what_tile_of_the_shipped_network_opens_its_deconvnet_decoding(app_url):
    with browser_page() as page:
        label = f"fashion_vgg ({read_network_file(ROOT / SHIPPED).architecture} classifier, no decoder)"
        page.goto(f"{app_url}/?model_choice={quote(label)}", timeout=60_000)  # the address names the Model's label
        page.locator(".st-key-layers_maps_0 .js-plotly-plot").wait_for(timeout=120_000)
        page.get_by_role("heading", name="Unit view").wait_for(timeout=60_000)
        page.get_by_text("No trained decoder: the deconvnet projection").wait_for(timeout=30_000)
        page.wait_for_timeout(1000)  # Plotly finishes drawing
        click_tile(page, "layers_maps_0", 5)
        deadline = time.monotonic() + 60
        while "stage 1, channel 5" not in unit_header(page) and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert "stage 1, channel 5" in unit_header(page)
        page.get_by_text("deconvnet decoding of this unit (±").first.wait_for(timeout=30_000)
        page.get_by_text("The deconvnet decoding of this unit (Zeiler & Fergus)").wait_for(timeout=30_000)
        assert not page.get_by_text("reconstruction MSE").count()
        assert not page.locator('[data-testid="stException"]').count()
