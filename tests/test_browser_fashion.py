"""The Fashion-MNIST model in a real browser: choose it in the sidebar, upload a photo-like picture of a clothing
item (a dark ankle boot on light paper, off-centre, tilted, blurred, JPEG), and the Layers page names its class."""
import io

import numpy as np

from bench.uploads import photo, product_ink
from core.data import load_examples
from tests.browser_app import browser_page, requires_chromium, served_app, wait_idle

pytestmark = requires_chromium


def boot_photo(path) -> None:
    """The first shipped Fashion-MNIST test image (an ankle boot) as a photo: the product's intensity as its ink."""
    ink = product_ink(load_examples("fashion-mnist", channels=1, image_size=28).images[0, 0].numpy())
    buffer = io.BytesIO()
    photo(ink, np.random.default_rng(0), by_longest_side=True).save(buffer, format="JPEG", quality=70)
    path.write_bytes(buffer.getvalue())


def predicted(page) -> str:
    readout = page.locator('[data-testid="stMarkdownContainer"] p').filter(has_text="Predicted").first
    return readout.locator("strong").first.inner_text(timeout=30_000).strip()


def test_an_uploaded_clothing_photo_is_named_by_the_fashion_model(tmp_path):
    boot_photo(tmp_path / "boot.jpg")
    with served_app(tmp_path / "server.log") as url, browser_page() as page:
        page.goto(url, timeout=60_000)
        page.get_by_text("Predicted").first.wait_for(timeout=90_000)
        wait_idle(page)
        page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Model").locator(
            "input").click()
        page.get_by_role("option", name="fashion (shipped)", exact=True).click()
        wait_idle(page)
        page.get_by_text("fashion-mnist index").wait_for(timeout=60_000)
        page.locator('[data-testid="stMain"]').get_by_text("Upload", exact=True).click()
        wait_idle(page)
        page.locator('[data-testid="stMain"] input[type="file"]').set_input_files(str(tmp_path / "boot.jpg"))
        page.get_by_text("What the model sees").wait_for(timeout=60_000)
        wait_idle(page)
        page.screenshot(path=str(tmp_path / "fashion_upload.png"), full_page=True)
        assert predicted(page) == "Ankle boot"
        assert page.get_by_text("Prepare like Fashion-MNIST").count()
        assert not page.locator('[data-testid="stException"]').count()
