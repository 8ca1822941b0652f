"""The server under several browser sessions at once, in headless Chromium (issue 23): a freshly started server opened
by eight sessions at the same moment (two on each explorer page) shows no exception on any page (libraries that
Streamlit and Plotly import lazily were half imported by one session's thread while another used them: see
app/preload.py), and the eight then clicking their pages' steppers together get every click done."""
from __future__ import annotations

import time

from bench.ui import CLICK_TIMEOUT_S, WATCH_PICTURES_JS, wait_still
from tests.browser_app import IDLE_JS, chromium, requires_chromium, served_app

pytestmark = requires_chromium

# Every session in a background tab: Chromium must not throttle them (a person has each in a window of their own).
SESSION_ARGS = ("--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows")
# URL path: (title, key of its index number_input)
EXPLORER_PAGES = {"": ("Layers", "layers_index"), "swap": ("Swap", "swap_a_index"),
                  "compare": ("Compare", "compare_index"), "attribution": ("Attribution", "attr_index")}
SESSIONS = 8
COLD_TIMEOUT_S = 150  # eight cold pages at once on 2 busy cores; about a minute when the machine is otherwise idle
CLICKS = 2  # rounds of one click in every session at once


def exception_text(page) -> str:
    """The text of the exceptions a page shows ("" when none)."""
    errors = page.locator('[data-testid="stException"]')
    return "\n".join(errors.nth(i).inner_text() for i in range(errors.count()))


def drawn(page, title: str) -> bool:
    """The page's script has run to its end once (its title shown, nothing running), or it shows an exception."""
    try:
        if page.locator('[data-testid="stException"]').count():
            return True
        return bool(page.locator('[data-testid="stMain"] h1').filter(has_text=title).count()
                    and page.evaluate(IDLE_JS))
    except Exception:  # noqa: BLE001 - the page is still navigating: not drawn yet
        return False


def open_sessions(browser, url: str, paths: list[str]) -> list:
    """A browser context (a session) per path, every one navigating at once (none waits for the others)."""
    pages = []
    for path in paths:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.add_init_script(WATCH_PICTURES_JS)  # bench.ui's record of the clicks and picture changes
        page.goto(f"{url}/{path}", wait_until="commit")
        pages.append(page)
    return pages


def click_everywhere(pages, paths: list[str]) -> list[float | None]:
    """One click on the index stepper's "+" of every page, each without waiting for the others; then the ms each took
    to settle (bench.ui's measure), None when not within CLICK_TIMEOUT_S."""
    clicked = []
    for page, path in zip(pages, paths):
        page.evaluate("window.__bench.clickAt = null")
        page.locator(f'.st-key-{EXPLORER_PAGES[path][1]} [data-testid="stNumberInputStepUp"]').click(
            timeout=CLICK_TIMEOUT_S * 1000)
        clicked.append(page.evaluate("window.__bench.clickAt"))
    deadline = time.monotonic() + CLICK_TIMEOUT_S
    took = []
    for page, at in zip(pages, clicked):
        try:
            state = wait_still(page, after=at, timeout_s=max(1.0, deadline - time.monotonic()))
            took.append(state["lastChange"] - at)
        except TimeoutError:
            took.append(None)
    return took


def test_a_cold_server_opened_by_eight_sessions_at_once_shows_no_exception_and_finishes_every_click(tmp_path):
    paths = [list(EXPLORER_PAGES)[i % len(EXPLORER_PAGES)] for i in range(SESSIONS)]
    names = [f"{number}:{path or 'layers'}" for number, path in enumerate(paths)]
    log = tmp_path / "server.log"
    with served_app(log) as url, chromium(SESSION_ARGS) as browser:
        pages = open_sessions(browser, url, paths)
        deadline = time.monotonic() + COLD_TIMEOUT_S
        pending = list(zip(names, paths, pages))
        while pending and time.monotonic() < deadline:
            pending = [(name, path, page) for name, path, page in pending
                       if not drawn(page, EXPLORER_PAGES[path][0])]
            time.sleep(0.5)
        shown = {name: exception_text(page) for name, page in zip(names, pages)}
        assert not {name: text for name, text in shown.items() if text}, shown
        assert not pending, f"not drawn within {COLD_TIMEOUT_S} s: {[name for name, _, _ in pending]}"
        for _ in range(CLICKS):
            took = click_everywhere(pages, paths)
            assert None not in took, f"clicks not done within {CLICK_TIMEOUT_S} s: {dict(zip(names, took))}"
        shown = {name: exception_text(page) for name, page in zip(names, pages)}
    assert not {name: text for name, text in shown.items() if text}, shown
    server = log.read_text(errors="replace")
    assert "Traceback" not in server and "partially initialized" not in server, server[-3000:]
