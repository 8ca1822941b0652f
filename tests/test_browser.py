"""The app in a real browser: `streamlit run app/main.py` on a free localhost port, driven by headless Debian
Chromium through Playwright. Toggling a stage's "take where from B" must redraw the crossings; a run started on
the Train page must show up on the Runs page and its curve must grow without reloading the page."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.monitor import RUNS_ENV, pid_alive, read_launch, summarize

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at {CHROMIUM} "
                                "(Debian package 'chromium'; .ci/run installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


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
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "SWWAE_APP_THREADS": "1", "PYTHONUNBUFFERED": "1", RUNS_ENV: str(runs_dir),
           "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
             "--server.address", "localhost", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


# While a script runs, Streamlit's status widget shows a running icon and "Stop" (before 1.50: "Running...").
IDLE_JS = """() => {
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  return !status || !(/Running|Stop/.test(status.innerText || '')
    || status.querySelector('[data-testid^="stStatusWidgetRunning"]'));
}"""


def wait_idle(page) -> None:
    """Until the script has finished running (Streamlit's status widget says 'Running...' meanwhile)."""
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE_JS, timeout=60_000)


def test_swap_stage_toggle_changes_the_crossing(app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
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
        finally:
            browser.close()
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
    sync_api = pytest.importorskip("playwright.sync_api")
    run_dir = runs_dir / "browser-run"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
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
            page.get_by_label("Training samples (0 = all)", exact=True).fill("128")
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
            assert page.evaluate("window.__same_page === true"), "the page was reloaded"
            assert not page.locator('[data-testid="stException"]').count()

            page.get_by_role("button", name="Stop").first.click()
            deadline = time.monotonic() + 120  # generous: a loaded 2-core machine runs the trainer slowly
            while summarize(run_dir).state != "stopped" and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            page.locator('[data-testid="stCaptionContainer"]').filter(has_text="stopped at step").first.wait_for(
                timeout=90_000)  # the page saw it end, without a reload
        finally:
            browser.close()
    assert summarize(run_dir).state == "stopped"
    if os.environ.get("SWWAE_SCREENSHOT_DIR"):
        shutil.copy(tmp_path / "runs_page.png", Path(os.environ["SWWAE_SCREENSHOT_DIR"]) / "runs_page.png")
