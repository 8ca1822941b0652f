"""Foreign networks in the explorer, on the CPU: `python -m bench.foreign [--arch torchvision:vgg16] [--size 224]`.

Opens the architecture with random weights at the given input size through the sidebar's "Open your own network"
controls (AppTest, the app's own code path), on an uploaded picture (ImageNet is not on this machine), and times the
Layers page's first render (the network built, its first image encoded) and its reruns (another stage's lens, a new
channel): the server's share of what a person waits for. Baseline in the same run: the shipped SWWAE's Layers page.
Also the process's peak resident memory. Issue 25's target: a first render within 30 s and a rerun within a few
seconds on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TIMEOUT_S = 600
FIRST_RENDER_TARGET_S = 30.0


def photo_png(size: int = 300) -> bytes:
    """A colour picture (a gradient with a bright disc) to feed the page as an upload."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    picture = np.stack([rows, cols, 1 - rows], -1)
    picture[(rows - 0.5) ** 2 + (cols - 0.5) ** 2 < 0.05] = 1.0
    buffer = io.BytesIO()
    Image.fromarray((picture * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return round(time.perf_counter() - start, 2)


def check(at) -> None:
    if at.exception:
        raise SystemExit(f"the page raised: {at.exception[0].value}")


def network_timings(arch: str, size: int, reruns: int) -> dict:
    from streamlit.testing.v1 import AppTest

    from app import networks

    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.selectbox(key=networks.OWN_ARCH).set_value(arch).run()
    at.number_input(key=networks.OWN_SIZE).set_value(size).run()
    at.button(key=networks.OWN_OPEN).click()
    at.session_state["layers_source"] = "Upload"  # the picture as an upload kept from earlier in the session, which
    at.session_state["layers_kept"] = ("photo.png", photo_png())  # the picker takes on the page's first run
    first = timed(at.run)  # the network built and traced, the picture encoded, every stage's views, lens and unit
    check(at)
    stages = len(at.selectbox(key="layers_unit_stage").options)
    times = []
    for i in range(reruns):
        at.selectbox(key="layers_unit_stage").set_value((i + 1) % stages)
        del at.session_state["layers_upload"]  # AppTest drives no uploader: the page takes the kept picture again
        times.append(timed(at.run))
        check(at)
        if not at.get("plotly_chart"):
            raise SystemExit("the rerun drew no lens: the upload was lost")
    return {"first_render_s": first, "rerun_s": statistics.median(times), "rerun_samples_s": times,
            "stages": stages}


def baseline_timings(reruns: int) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    first = timed(at.run)
    check(at)
    times = []
    for i in range(reruns):
        at.selectbox(key="layers_unit_stage").set_value((i + 1) % 3)
        times.append(timed(at.run))
        check(at)
    return {"first_render_s": first, "rerun_s": statistics.median(times), "rerun_samples_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="torchvision:vgg16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reruns", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)  # as the app runs (app/main.py)
    baseline = baseline_timings(args.reruns)
    network = network_timings(args.arch, args.size, args.reruns)
    report = {
        "device": "cpu", "threads": torch.get_num_threads(),
        "network": {"arch": args.arch, "size": args.size, **network},
        "baseline_swwae_default": baseline,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "first_render_target_s": FIRST_RENDER_TARGET_S,
        "meets_target": network["first_render_s"] <= FIRST_RENDER_TARGET_S,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
