"""Drawing a digit in a real browser: `streamlit run app/main.py` on a free localhost port, headless Debian Chromium
through Playwright. On the Layers page, choose "Draw", drag the mouse over the canvas, and the prediction readout
must become the drawn class.

streamlit-drawable-canvas 0.13 is a Streamlit components-v2 component: it renders in the page itself, inside the
shadow root of `[data-testid="stBidiComponentIsolated"]` (no iframe); Playwright's CSS locators pierce open shadow
roots, so `canvas` under it is Fabric.js's top (mouse) canvas, the last of three stacked canvases."""
import os
import shutil
from pathlib import Path

import pytest

from tests.browser_app import browser_page, requires_chromium, served_app, wait_idle

pytestmark = requires_chromium

STROKES = {  # digit -> strokes, each a list of (x, y) in fractions of the canvas
    1: [[(0.50, 0.15), (0.50, 0.85)]],
    7: [[(0.25, 0.18), (0.75, 0.18), (0.42, 0.85)]],
}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


def drag(page, box: dict, stroke: list[tuple[float, float]], steps: int = 12) -> None:
    """Press, move through the stroke's points in small steps (freedraw records every move), release."""
    points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
    page.mouse.move(*points[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        for i in range(1, steps + 1):
            page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    page.mouse.up()


def predicted(page) -> str:
    readout = page.locator('[data-testid="stMarkdownContainer"] p').filter(has_text="Predicted").first
    return readout.locator("strong").first.inner_text()


def wait_predicted(page, value: str, timeout_ms: int = 20_000) -> str:
    """Poll until the prediction readout names `value` (the rerun's delta lands a moment after the mouse-up)."""
    waited = 0
    while waited < timeout_ms:
        wait_idle(page)
        if predicted(page) == value:
            return value
        page.wait_for_timeout(250)
        waited += 550
    return predicted(page)


def clear(page) -> None:
    page.locator('[data-testid="stBidiComponentIsolated"]').hover()
    page.locator('[data-testid="stBidiComponentIsolated"] button[title="Reset canvas & history"]').click()


def test_drawing_a_digit_changes_the_prediction(app_url, tmp_path):
    with browser_page() as page:
        page.goto(app_url, timeout=60_000)
        page.get_by_text("Predicted").first.wait_for(timeout=90_000)
        wait_idle(page)
        dataset_prediction = predicted(page)  # mnist5k #0 is a 0
        page.locator('[data-testid="stRadio"]').filter(has_text="Upload").get_by_text("Draw", exact=True).click()
        canvas = page.locator('[data-testid="stBidiComponentIsolated"] canvas').last
        canvas.wait_for(timeout=30_000)
        page.get_by_text("Showing the dataset image below until a digit is drawn.").wait_for(timeout=30_000)
        wait_idle(page)
        box = canvas.bounding_box()
        assert box and round(box["width"]) == 280 and round(box["height"]) == 280

        for digit, strokes in STROKES.items():
            assert str(digit) != dataset_prediction
            for stroke in strokes:
                drag(page, box, stroke)
            assert wait_predicted(page, str(digit)) == str(digit), f"drew a {digit}"
            page.get_by_text("What the model sees (28x28)").wait_for(timeout=10_000)
            page.screenshot(path=str(tmp_path / f"draw_{digit}.png"), full_page=True)
            clear(page)
            assert wait_predicted(page, dataset_prediction) == dataset_prediction  # back on the dataset image
        assert not page.locator('[data-testid="stException"]').count()
        assert not page.locator('[data-testid="stAlertContentError"]').count()
    if os.environ.get("SWWAE_SCREENSHOT_DIR"):  # keep a copy for a human to look at
        shutil.copy(tmp_path / "draw_7.png", Path(os.environ["SWWAE_SCREENSHOT_DIR"]) / "draw_page.png")
