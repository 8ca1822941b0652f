"""Dashboard timings on CPU for the default checkpoint: `python -m bench.ui [--repeat N] [--checkpoint PATH]`.

Prints JSON: milliseconds (median of N) for each page's core work (encode, swap, decode, layer views, swap matrix,
translation probe, attributions), for building its figures, and for a full AppTest rerun of each page.
Targets: core work for a swap <= 20 ms; a full page rerun <= 300 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"swap_core": 20.0, "page_rerun": 300.0}


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def core_timings(checkpoint: str, repeat: int) -> dict[str, float]:
    import torch

    from app import figures
    from core.attribution import METHODS, LogitsModel, attribute
    from core.checkpoint import load_checkpoint
    from core.data import DataConfig, load_split
    from core.experiments import layer_views, swap_matrix, swap_where, translation_probe
    from core.render import mosaic, panel_png, swap_tiles, where_mosaic

    model = load_checkpoint(checkpoint).model
    cfg = model.config
    images, _ = load_split(DataConfig(dataset="mnist5k"), "val", channels=cfg.in_channels, image_size=cfg.image_size)
    a, b = images[150], images[350]
    every_stage = list(range(len(cfg.channels)))
    with torch.inference_mode():
        encoding = model.encode(a.unsqueeze(0))
    out: dict[str, float] = {}
    with torch.inference_mode():
        out["encode"] = median_ms(lambda: model.encode(a.unsqueeze(0)), repeat)
        out["decode"] = median_ms(lambda: model.decode(encoding), repeat)
    out["swap_core"] = median_ms(lambda: swap_where(model, a, b, every_stage), repeat)
    result = swap_where(model, a, b, every_stage)
    tiles = swap_tiles(a.numpy(), b.numpy(), result)

    def swap_figure():
        panels = [figures.signed_panel(t.title, t.image) if t.signed else figures.gray_panel(t.title, t.image)
                  for t in tiles]
        return figures.panel_figure(panels, columns=5, height=470).to_json()

    out["swap_figure"] = median_ms(swap_figure, repeat)
    out["swap_png"] = median_ms(lambda: panel_png(tiles, 5), repeat)
    out["swap_matrix_6"] = median_ms(lambda: swap_matrix(model, images[[0, 100, 200, 300, 400, 499]], every_stage), repeat)
    out["translation_probe"] = median_ms(lambda: translation_probe(model, a, 2, 1), repeat)
    out["layer_views"] = median_ms(lambda: layer_views(model, a), repeat)
    views = layer_views(model, a)[0]

    def layers_figures():
        for view in views:
            colors, custom = where_mosaic(view.where_offset, view.what, view.pool_size)
            figures.panel_figure([figures.mosaic_panel("pre", mosaic(view.pre_pool)),
                                  figures.mosaic_panel("what", mosaic(view.what)),
                                  figures.where_panel("where", colors, custom)], columns=3, height=300).to_json()

    out["layers_figures"] = median_ms(layers_figures, repeat)
    wrapper = LogitsModel(model)
    for method in METHODS:
        out[f"attribution_{method}"] = median_ms(lambda m=method: attribute(wrapper, a, m), repeat)
    return out


def page_timings(repeat: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300).run()
    out = {}
    for page in ("layers", "swap", "attribution"):
        at.switch_page(f"views/{page}.py").run()
        if at.exception:
            raise RuntimeError(f"{page} page raised: {at.exception[0].value}")
        out[f"rerun_{page}"] = median_ms(at.run, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default.pt"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("SWWAE_APP_THREADS", "1")))  # as the app does
    report = {"device": "cpu", "threads": torch.get_num_threads(), "checkpoint": args.checkpoint,
              "core_ms": core_timings(args.checkpoint, args.repeat), "page_rerun_ms": page_timings(args.repeat)}
    report["targets_ms"] = TARGETS_MS
    report["meets_targets"] = {
        "swap_core": report["core_ms"]["swap_core"] <= TARGETS_MS["swap_core"],
        "page_rerun": max(report["page_rerun_ms"].values()) <= TARGETS_MS["page_rerun"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
