"""The server under several browser sessions at once, in headless Chromium (issue 23): a freshly started server opened
by eight sessions at the same moment shows no exception on any page (libraries that Streamlit and Plotly import
lazily were imported half-way by one session's thread while another used them); and sessions clicking the explorer
pages' steppers together all get their clicks done."""
from __future__ import annotations

import time

import pytest

from tests.browser_app import IDLE_JS, chromium, requires_chromium, served_app

pytestmark = requires_chromium

# Each page in its own background tab: Chromium must not throttle them (a person has each in a window of their own).
SESSION_ARGS = ("--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows")
EXPLORER_PAGES = {"": "Layers", "swap": "Swap", "compare": "Compare", "attribution": "Attribution"}
COLD_SESSIONS = 8
COLD_TIMEOUT_S = 50


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
        page.goto(f"{url}/{path}", wait_until="commit")
        pages.append(page)
    return pages


def test_a_cold_server_opened_by_eight_sessions_at_once_shows_no_exception(tmp_path):
    paths = [list(EXPLORER_PAGES)[i % len(EXPLORER_PAGES)] for i in range(COLD_SESSIONS)]
    log = tmp_path / "server.log"
    with served_app(log) as url, chromium(SESSION_ARGS) as browser:
        pages = open_sessions(browser, url, paths)
        deadline = time.monotonic() + COLD_TIMEOUT_S
        pending = list(zip(paths, pages))
        while pending and time.monotonic() < deadline:
            pending = [(path, page) for path, page in pending if not drawn(page, EXPLORER_PAGES[path])]
            time.sleep(0.5)
        shown = {f"{number}:{path or 'layers'}": exception_text(page)
                 for number, (path, page) in enumerate(zip(paths, pages))}
    assert not {session: text for session, text in shown.items() if text}, shown
    assert not pending, f"not drawn within {COLD_TIMEOUT_S} s: {[path or 'layers' for path, _ in pending]}"
    server = log.read_text(errors="replace")
    assert "Traceback" not in server and "partially initialized" not in server, server[-3000:]
