"""Links that reopen a view, in a real browser: change widgets, open the page's address in a fresh browser context
and see the same values and pictures; an address naming something gone gives one line; an upload survives a trip to
another page."""
import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.browser_app import CHROMIUM, CHROMIUM_ARGS, requires_chromium, served_app, wait_idle

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def fresh_page(browser):
    """A page in a new browser context: no cookies, no session, as a student opening a teacher's link."""
    return browser.new_context(viewport={"width": 1280, "height": 900}).new_page()


def settle(page, timeout_s: float = 60) -> None:
    wait_idle(page)
    page.wait_for_timeout(800)
    wait_idle(page)


def number(page, key: str) -> str:
    return page.locator(f".st-key-{key} input").input_value()


def findings(page) -> str:
    return page.locator('[data-testid="stMarkdownContainer"] li').filter(has_text="closer to").first.inner_text()


def test_a_swap_view_reopens_from_its_address(app_url, browser):
    page = fresh_page(browser)
    page.goto(f"{app_url}/swap", timeout=90_000)
    page.locator(".st-key-swap_a_index input").wait_for(timeout=120_000)
    settle(page)
    page.locator(".st-key-swap_a_index input").fill("7")
    page.keyboard.press("Enter")
    settle(page)
    page.locator(".st-key-swap_where_1 label").click()  # untick stage 2
    settle(page)
    address, sentence = page.url, findings(page)
    assert "swap_a_index=7" in address and "swap_where_1=false" in address
    page.context.close()

    student = fresh_page(browser)
    start = time.monotonic()
    student.goto(address, timeout=90_000)
    student.locator(".st-key-swap_a_index input").wait_for(timeout=120_000)
    settle(student)
    reopened_s = time.monotonic() - start
    assert number(student, "swap_a_index") == "7"
    assert not student.locator(".st-key-swap_where_1 input").is_checked()
    assert student.locator(".st-key-swap_where_0 input").is_checked()
    assert findings(student) == sentence  # the same numbers, so the same pictures' errors
    assert not student.locator('[data-testid="stException"]').count()
    print(f"reopened the swap view in {reopened_s:.1f} s")
    student.context.close()


def test_a_lens_window_reopens_from_its_address(app_url, browser):
    page = fresh_page(browser)
    page.goto(f"{app_url}/?layers_index=3&layers_unit_channel=5&window=6,7", timeout=90_000)
    page.get_by_text("Window (6, 7) covers pixels 12–13 × 14–15").wait_for(timeout=120_000)
    settle(page)
    assert "channel 5" in page.get_by_role("heading", name="Pooling lens").inner_text()
    assert number(page, "layers_index") == "3"
    page.context.close()


def test_an_address_naming_what_is_gone_gives_one_line(app_url, browser):
    page = fresh_page(browser)
    page.goto(f"{app_url}/swap?swap_a_index=99999&model_choice=checkpoints/gone.pt", timeout=90_000)
    note = page.locator('[data-testid="stAlertContentWarning"]').filter(has_text="This link asked for")
    note.wait_for(timeout=120_000)
    text = note.locator('[data-testid="stMarkdownContainer"]').inner_text().strip()  # the line, without the icon
    assert "swap_a_index=99999" in text and "gone.pt" in text and "\n" not in text
    assert not page.locator('[data-testid="stException"]').count()
    page.context.close()


def test_an_upload_survives_a_trip_to_another_page(app_url, browser, tmp_path):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255  # a "1"
    path = tmp_path / "one.png"
    Image.fromarray(pixels).save(path)
    page = fresh_page(browser)
    page.goto(app_url, timeout=90_000)
    page.locator(".st-key-layers_source").wait_for(timeout=120_000)
    settle(page)
    page.locator(".st-key-layers_source").get_by_text("Upload").click()
    settle(page)
    page.locator('.st-key-layers_upload input[type="file"]').set_input_files(str(path))
    page.get_by_text("What the model sees").wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("link", name="Swap").click()
    page.locator(".st-key-swap_a_index").wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("link", name="Layers").click()
    page.get_by_text("Showing one.png, uploaded earlier in this session").wait_for(timeout=60_000)
    assert not page.locator('[data-testid="stException"]').count()
    page.context.close()
