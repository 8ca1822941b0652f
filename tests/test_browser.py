"""The app in a real browser: `streamlit run app/main.py` on a free localhost port, driven by headless Debian
Chromium through Playwright. Toggling a stage's "take where from B" must redraw the crossings; a run started on
the Train page must show up on the Runs page and its curve must grow without reloading the page."""
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from core.runs import RUNS_ENV, pid_alive, read_launch, summarize
from tests.browser_app import browser_page, requires_chromium, served_app, wait_idle

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """The server's runs folder ($SWWAE_RUNS_DIR): runs started in these tests never land in the repository."""
    root = tmp_path_factory.mktemp("runs")
    yield root
    for run_dir in root.iterdir():  # leave no training process behind
        launched = read_launch(run_dir)
        if launched and pid_alive(launched["pid"]):
            os.kill(launched["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, runs_dir):
    with served_app(tmp_path_factory.mktemp("streamlit") / "server.log", **{RUNS_ENV: str(runs_dir)}) as url:
        yield url


def test_swap_stage_toggle_changes_the_crossing(app_url, tmp_path):
    with browser_page() as page:
        page.goto(f"{app_url}/swap", timeout=60_000)
        panel = page.locator('[data-testid="stImage"]').first  # the swap panel, a PNG
        panel.wait_for(timeout=90_000)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)
        wait_idle(page)
        page.wait_for_timeout(500)  # the page finishes drawing
        before = panel.screenshot(path=str(tmp_path / "before.png"))

        page.get_by_text("stage 1 (28 → 14)").click()
        changed = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # poll: the redraw lands after the rerun's delta arrives
            page.wait_for_timeout(300)
            shot = panel.screenshot()
            if shot != before:
                changed = shot
                break
        wait_idle(page)
        page.screenshot(path=str(tmp_path / "swap_page.png"), full_page=True)
        assert changed is not None, "the swap panel did not change after toggling stage 1"
        assert not page.locator('[data-testid="stException"]').count()
        assert not page.locator('[data-testid="stAlertContentError"]').count()
        assert not page.get_by_role("checkbox", name="stage 1 (28 → 14)").is_checked()
    assert (tmp_path / "swap_page.png").stat().st_size > 10_000
    if os.environ.get("SWWAE_SCREENSHOT_DIR"):  # keep a copy for a human to look at
        shutil.copy(tmp_path / "swap_page.png", Path(os.environ["SWWAE_SCREENSHOT_DIR"]) / "swap_page.png")


def screenshot(locator) -> bytes | None:
    """The element's pixels, or None when a redraw swapped it out mid-shot."""
    try:
        return locator.screenshot(timeout=10_000)
    except Exception:  # playwright Error: element detached while being captured
        return None


def choose(page, label: str, option: "str | re.Pattern") -> None:
    """Pick `option` in the selectbox labelled `label`."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_train_page_run_updates_the_runs_page_live(app_url, runs_dir, tmp_path):
    run_dir = runs_dir / "browser-run"
    with browser_page() as page:
        page.goto(f"{app_url}/train", timeout=60_000)
        page.get_by_text("Start training").wait_for(timeout=90_000)
        wait_idle(page)
        page.get_by_label("Run name", exact=True).fill("browser-run")
        choose(page, "Architecture (channels per stage)", "tiny (4, 8)")
        choose(page, "Device", re.compile(r"^cpu\b"))  # labelled with its core count, e.g. "cpu — 2 cores"
        page.get_by_label("Epochs", exact=True).fill("300")  # 1,200 steps: it runs while we watch
        page.get_by_label("Batch size", exact=True).fill("32")
        page.get_by_text("More options").click()
        page.get_by_label("Log every (steps)", exact=True).fill("10")
        page.get_by_label("Training images", exact=True).fill("128")
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Started browser-run").wait_for(timeout=30_000)
        page.evaluate("window.__same_page = true")  # gone if anything reloads the page

        page.get_by_role("link", name="Runs", exact=True).click()  # client-side navigation, not a reload
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.wait_for(timeout=120_000)
        records = page.get_by_text("browser-run:").first
        page.wait_for_timeout(1000)
        before_text, before = records.inner_text(), screenshot(chart)
        grown = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the fragment refreshes by itself; no clicks, no reload
            page.wait_for_timeout(1000)
            if records.inner_text() != before_text and screenshot(chart) not in (before, None):
                grown = records.inner_text()
                break
        page.screenshot(path=str(tmp_path / "runs_page.png"), full_page=True)
        assert grown is not None, f"the curve did not update: still {before_text!r}"
        snapshots = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="Snapshot steps so far")
        snapshots.first.wait_for(timeout=60_000)  # the row of snapshot steps, refreshing itself too
        before_steps, more_steps = snapshots.first.inner_text(), None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            if snapshots.count() and snapshots.first.inner_text() != before_steps:
                more_steps = snapshots.first.inner_text()
                break
        assert more_steps is not None, f"no new snapshot joined the row: still {before_steps!r}"
        assert page.evaluate("window.__same_page === true"), "the page was reloaded"
        assert not page.locator('[data-testid="stException"]').count()

        page.get_by_role("button", name="Stop").first.click()
        deadline = time.monotonic() + 120  # generous: a loaded 2-core machine runs the trainer slowly
        while summarize(run_dir).state != "stopped" and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        page.locator('[data-testid="stCaptionContainer"]').filter(has_text="stopped at step").first.wait_for(
            timeout=90_000)  # the page saw it end, without a reload
    assert summarize(run_dir).state == "stopped"
    if os.environ.get("SWWAE_SCREENSHOT_DIR"):
        shutil.copy(tmp_path / "runs_page.png", Path(os.environ["SWWAE_SCREENSHOT_DIR"]) / "runs_page.png")
