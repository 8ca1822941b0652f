"""The Swap page in a real browser: `streamlit run app/main.py` on a free localhost port, driven by headless
Debian Chromium through Playwright. Toggling a stage's "take where from B" must redraw the crossings."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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
def app_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "SWWAE_APP_THREADS": "1", "PYTHONUNBUFFERED": "1"}
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


def wait_idle(page) -> None:
    """Until the script has finished running (Streamlit's status widget says 'Running...' meanwhile)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')?.innerText?.includes('Running')",
        timeout=60_000)


def test_swap_stage_toggle_changes_the_crossing(app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{app_url}/swap", timeout=60_000)
            panel = page.locator('[data-testid="stPlotlyChart"]').first
            panel.wait_for(timeout=90_000)
            page.get_by_text("what A + where B").first.wait_for(timeout=30_000)
            wait_idle(page)
            page.wait_for_timeout(500)  # plotly finishes drawing
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
