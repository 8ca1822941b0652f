"""Compare and the snapshot step slider in a real browser: pick model B, change the input and see both
reconstructions change; choose a run's checkpoint in the sidebar, move its step slider and see the Layers page
change."""
import re
import subprocess
import sys
import time

import pytest
import torch

from core.runs import RUNS_ENV
from core.training import rundir, train
from tests.browser_app import ROOT, browser_page, requires_chromium, served_app, wait_idle
from tests.test_train import TINY_DATA, TINY_FLAGS, TINY_MODEL, subprocess_env, tiny_train

pytestmark = requires_chromium
FINDING = re.compile(r"B's reconstruction MSE is ([0-9.]+), [0-9.]+× A's ([0-9.]+)")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train(TINY_MODEL, tiny_train(epochs=13, max_steps=100), TINY_DATA, run_dir=root / "tiny")
    torch.set_num_threads(threads)
    return root


def choose(page, container: str, label: str, option: str) -> None:
    page.locator(f'{container} [data-testid="stSelectbox"]').filter(has_text=label).locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def both_errors(page) -> tuple[str, str]:
    """(B's, A's) reconstruction MSE as the page's finding states them."""
    finding = page.locator('[data-testid="stMain"] li').filter(has_text="B's reconstruction MSE")
    text = finding.inner_text(timeout=30_000)
    match = FINDING.search(text)
    assert match, text
    return match.group(1), match.group(2)


def settled(page, done, timeout_s: float = 30) -> tuple[str, str]:
    """both_errors once `done(them)` holds (the rerun's new elements replace the old ones one by one)."""
    deadline = time.monotonic() + timeout_s
    errors = both_errors(page)
    while not done(errors) and time.monotonic() < deadline:
        page.wait_for_timeout(300)
        errors = both_errors(page)
    return errors


def recon_mse(page) -> str:
    """The reconstruction MSE the Layers page's overview line states."""
    line = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"]').filter(
        has_text="reconstruction MSE").first
    return re.search(r"reconstruction MSE ([0-9.]+)", line.inner_text(timeout=30_000)).group(1)


def test_pick_model_b_then_a_new_input_changes_both_reconstructions(tmp_path, runs_root):
    with served_app(tmp_path / "server.log", **{RUNS_ENV: str(runs_root)}) as url, browser_page() as page:
        page.goto(f"{url}/compare", timeout=60_000)
        page.get_by_text("B's reconstruction MSE").wait_for(timeout=90_000)
        wait_idle(page)
        initial = both_errors(page)
        choose(page, '[data-testid="stMain"]', "Model B", "checkpoints/ablation_hard.pt")
        page.get_by_text("B: checkpoints/ablation_hard.pt").first.wait_for(timeout=60_000)
        before = settled(page, lambda errors: errors[0] != initial[0])  # B's figure is the new model's
        picture = page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first.get_attribute("src")
        index = page.locator('[data-testid="stMain"] [data-testid="stNumberInput"]').filter(has_text="index")
        index.locator("button").last.click()  # "+": the next dataset image
        wait_idle(page)
        assert index.locator("input").input_value() == "1"
        after = settled(page, lambda errors: errors != before)
        assert after[0] != before[0] and after[1] != before[1]  # B's and A's reconstructions both changed
        assert page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first.get_attribute("src") != picture
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        assert not page.locator('[data-testid="stException"]').count()


def test_moving_a_runs_step_slider_changes_the_layers_page(tmp_path, runs_root):
    with served_app(tmp_path / "server.log", **{RUNS_ENV: str(runs_root)}) as url, browser_page() as page:
        page.goto(url, timeout=60_000)
        page.get_by_text("reconstruction MSE").first.wait_for(timeout=90_000)
        wait_idle(page)
        choose(page, '[data-testid="stSidebar"]', "Model", str(runs_root / "tiny" / "best.pt"))
        slider = page.locator('[data-testid="stSidebar"] input[type="range"]')
        slider.wait_for(state="attached", timeout=60_000)  # a visually hidden range input
        before = recon_mse(page)
        slider.focus()
        page.keyboard.press("Home")  # the first snapshot: step 1
        wait_idle(page)
        deadline = time.monotonic() + 60  # the Layers page redraws for the step-1 snapshot's model
        while recon_mse(page) == before and time.monotonic() < deadline:
            page.wait_for_timeout(300)
        assert recon_mse(page) != before
        assert not page.locator('[data-testid="stException"]').count()


def test_a_training_runs_new_snapshots_join_the_sidebar_slider_without_a_reload(tmp_path, runs_root):
    run_dir = runs_root / "live"
    process = subprocess.Popen([sys.executable, "-m", "core.train", "--dataset", "mnist5k", "--run", str(run_dir),
                                "--epochs", "400", *TINY_FLAGS], cwd=ROOT, env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # 3,200 steps
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / rundir.LAST_CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        with served_app(tmp_path / "server.log", **{RUNS_ENV: str(runs_root)}) as url, browser_page() as page:
            page.goto(url, timeout=60_000)
            page.get_by_text("reconstruction MSE").first.wait_for(timeout=90_000)
            wait_idle(page)
            choose(page, '[data-testid="stSidebar"]', "Model", str(run_dir / "last.pt"))
            page.evaluate("window.__same_page = true")  # gone if anything reloads the page
            slider = page.locator('[data-testid="stSidebar"] input[type="range"]')
            slider.wait_for(state="attached", timeout=60_000)
            before, grown = int(slider.get_attribute("max")), None
            deadline = time.monotonic() + 90
            while grown is None and time.monotonic() < deadline:  # the fragment looks every 2 s; no clicks
                page.wait_for_timeout(1000)
                if slider.count() and int(slider.get_attribute("max")) > before:
                    grown = int(slider.get_attribute("max"))
            assert grown is not None, f"no snapshot joined the slider ({before + 1} options)"
            assert page.evaluate("window.__same_page === true"), "the page was reloaded"
            assert not page.locator('[data-testid="stException"]').count()
    finally:
        process.kill()
        process.wait()
