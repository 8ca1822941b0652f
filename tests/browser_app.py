"""What the real-browser tests share: Debian Chromium's path and flags, a `streamlit run app/main.py` server on a
free localhost port, and a wait for Streamlit's script to finish."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
requires_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Chromium is not installed at "
                                       f"{CHROMIUM} (Debian package 'chromium'; .ci/run installs it)")

# While a script runs, Streamlit's status widget shows a running icon and "Stop" (before 1.50: "Running...").
IDLE_JS = """() => {
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  return !status || !(/Running|Stop/.test(status.innerText || '')
    || status.querySelector('[data-testid^="stStatusWidgetRunning"]'));
}"""


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


@contextlib.contextmanager
def served_app(log: Path, **env: str) -> Iterator[str]:
    """`streamlit run app/main.py` on a free localhost port, its output in `log`; yields its URL, then stops it."""
    port = free_port()
    env = {**os.environ, "SWWAE_APP_THREADS": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **env}
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
    """Until the script has finished running."""
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE_JS, timeout=60_000)


@contextlib.contextmanager
def chromium(extra_args: tuple[str, ...] = ()):
    """Headless Debian Chromium (Playwright's sync API; the test skips without the package)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args],
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1100):
    """A page in headless Debian Chromium (Playwright's sync API; the test skips without the package)."""
    with chromium() as browser:
        yield browser.new_page(viewport={"width": width, "height": height})
