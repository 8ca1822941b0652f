"""Formation you can see, in a real browser: a tiny run trained here, the Runs page's "Play the steps" advances the
lens's step slider through the run's snapshots; and the sidebar's Play, step by step (app.scrub.next_step)."""
import subprocess
import sys
import time

import pytest

from app.scrub import next_step
from core.training import rundir
from tests.browser_app import ROOT, browser_page, requires_chromium, served_app, wait_idle

TINY = ["--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--head-width", "0",
        "--device", "cpu", "--batch-size", "16", "--max-train", "96", "--max-val", "32", "--epochs", "1", "--quiet"]
SLIDER_JS = """() => document.querySelector('.st-key-runs_formation_step input[type="range"]')
  ?.getAttribute('aria-valuetext')?.replace(/,/g, '')"""


def test_next_step_walks_from_the_checkpoint_through_the_snapshots_and_back():
    steps = [1, 2, 5, 10, 12]  # 12: the checkpoint's own step
    shown, seen = None, []
    for _ in range(6):
        shown = next_step(steps, 12, shown)
        seen.append(shown)
        if shown is None:
            break
    assert seen == [1, 2, 5, 10, None]


@requires_chromium
def test_play_advances_the_lens_step(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    subprocess.run([sys.executable, "-m", "core.train", "--dataset", "mnist5k", "--run", str(run_dir), *TINY],
                   cwd=ROOT, check=True, timeout=300, env={"SWWAE_RUNS_DIR": str(tmp_path / "runs"),
                                                             "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    steps = [step for step, _ in rundir.list_snapshots(run_dir)]
    assert len(steps) >= 3, steps
    with served_app(tmp_path / "server.log", SWWAE_RUNS_DIR=str(tmp_path / "runs")) as url:
        with browser_page(1280, 900) as page:
            page.goto(f"{url}/runs", timeout=60_000)
            page.locator(".st-key-runs_formation_step").wait_for(timeout=120_000)
            wait_idle(page)
            deadline = time.monotonic() + 30
            while page.evaluate(SLIDER_JS) is None and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert int(page.evaluate(SLIDER_JS)) == steps[-1]  # the lens starts at the last step
            page.get_by_role("button", name="Play the steps").click()
            seen = set()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(seen) < 3:
                value = page.evaluate(SLIDER_JS)
                if value is not None:
                    seen.add(int(value))
                page.wait_for_timeout(300)
            assert len(seen) >= 3 and seen <= set(steps), (seen, steps)
            assert not page.locator('[data-testid="stException"]').count()
