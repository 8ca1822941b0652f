"""What two models differ in, and the model B Compare opens with (core.analysis.compare), on the shipped checkpoints:
the differences against the checkpoint files read directly (config, train_config, data_config), the one-line
sentences for the shipped pairs, and the default-B rules (the where ablation's hard <-> none <-> soft, a run's
checkpoint <-> its earlier snapshot, the shipped model's fallback)."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from core.analysis import (
    ModelTraits, Partner, cross_refusal, default_partner, differences_sentence, model_differences, model_traits,
)
from core.analysis.compare import earlier_steps
from core.model import ModelConfig, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("default", "ablation_hard", "ablation_none", "ablation_soft", "fashion", "fashion_ablation_hard",
           "fashion_ablation_none", "fashion_ablation_soft")
FALLBACKS = {"mnist5k": ["checkpoints/ablation_none.pt", "checkpoints/default.pt"],  # app.sidebar's NONE / SHIPPED
             "fashion-mnist": ["checkpoints/fashion_ablation_none.pt", "checkpoints/fashion.pt"]}
# The model B each shipped model opens with: one difference (pooling) where the where ablation has one.
EXPECTED_B = {
    "default": "ablation_none",  # no shipped model differs from it in one thing: the where ablation's none
    "ablation_hard": "ablation_none", "ablation_none": "ablation_hard", "ablation_soft": "ablation_hard",
    "fashion": "fashion_ablation_none",
    "fashion_ablation_hard": "fashion_ablation_none", "fashion_ablation_none": "fashion_ablation_hard",
    "fashion_ablation_soft": "fashion_ablation_hard",
}
# What the differences are named for, by the checkpoint's config field.
FIELD_NAMES = {"pooling": "pooling", "channels": "width", "convs_per_stage": "convs per stage",
               "dropout": "classifier dropout", "head_width": "classifier head width", "num_classes": "classes"}


def source(name: str) -> str:
    return f"checkpoints/{name}.pt"


@pytest.fixture(scope="module")
def shipped() -> dict[str, ModelTraits]:
    return {source(name): model_traits(load_checkpoint(ROOT / source(name))) for name in SHIPPED}


def raw(name: str) -> dict:
    """The checkpoint file's dict, read without core.model: the reference the traits are checked against."""
    return torch.load(ROOT / source(name), map_location="cpu", weights_only=True)


def reference_differences(name_a: str, name_b: str) -> set[str]:
    """The names of what two shipped checkpoints differ in, from their files' plain dicts: config fields, whether
    labels trained the classifier (train_config's mode), the dataset (data_config; none named: mnist5k)."""
    a, b = raw(name_a), raw(name_b)
    defaults = asdict(ModelConfig())  # a field an older file leaves out holds its default
    config = lambda ckpt: {f: tuple(v) if isinstance(v, list) else v  # noqa: E731
                           for f, v in {**defaults, **ckpt["model_config"]}.items()}
    supervised = lambda ckpt: (ckpt.get("train_config") or {}).get("mode") != "unsupervised"  # noqa: E731
    dataset = lambda ckpt: (ckpt.get("data_config") or {}).get("dataset", "mnist5k")  # noqa: E731
    both_supervised = supervised(a) and supervised(b)
    config_a, config_b = config(a), config(b)
    found = {FIELD_NAMES.get(field, field) for field in config_a if config_a[field] != config_b[field]
             and (both_supervised or field not in ("dropout", "head_width", "num_classes"))}
    if supervised(a) != supervised(b):
        found.add("supervision")
    if dataset(a) != dataset(b):
        found.add("dataset")
    return found


@pytest.mark.parametrize("name_a", SHIPPED)
@pytest.mark.parametrize("name_b", SHIPPED)
def test_differences_name_exactly_what_the_files_differ_in(shipped, name_a, name_b):
    found = model_differences(shipped[source(name_a)], shipped[source(name_b)])
    assert {d.name for d in found} == reference_differences(name_a, name_b)
    assert len(found) == len({d.name for d in found})  # each thing once
    assert all(d.a != d.b for d in found)


def test_the_shipped_pairs_read_as_one_line(shipped):
    line = lambda a, b: differences_sentence(model_differences(shipped[source(a)], shipped[source(b)]))  # noqa: E731
    assert line("default", "ablation_none") == (
        "A and B differ in pooling (hard vs none), width (32/64/128 vs 16/32/64) and supervision (labels vs none): "
        "the differences below mix them.")
    assert line("ablation_hard", "ablation_none") == "A and B differ in one thing: pooling (hard vs none)."
    assert line("ablation_soft", "ablation_hard") == "A and B differ in one thing: pooling (soft vs hard)."
    assert line("fashion", "fashion_ablation_none") == (
        "A and B differ in pooling (hard vs none), width (32/64/128 vs 16/32/64), convs per stage (2 vs 1) and "
        "supervision (labels vs none): the differences below mix them.")
    assert line("default", "fashion") == (  # both trained with labels: the head's dropout counts
        "A and B differ in convs per stage (1 vs 2), dataset (mnist5k vs fashion-mnist) and classifier dropout (0 vs "
        "0.3): the differences below mix them.")
    assert line("ablation_hard", "fashion_ablation_hard") == (
        "A and B differ in one thing: dataset (mnist5k vs fashion-mnist).")
    assert line("default", "default") == "A and B have the same architecture, pooling, supervision and dataset."


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_opens_on_its_expected_b(shipped, name):
    a = shipped[source(name)]
    partner = default_partner(a, shipped, fallbacks=FALLBACKS[a.dataset])
    assert partner == Partner(source(EXPECTED_B[name]))
    singles = [s for s, traits in shipped.items() if len(model_differences(a, traits)) == 1]
    if singles:  # B differs from A in one thing wherever such a model exists
        assert len(model_differences(a, shipped[partner.source])) == 1


def test_without_fallbacks_the_closest_model_of_the_same_input_shape(shipped):
    a = shipped[source("default")]
    partner = default_partner(a, shipped)
    assert partner == Partner(source("ablation_hard"))  # width and supervision: the fewest differences (2)
    alone = {source("default"): a}
    assert default_partner(a, alone) is None  # only A itself: no B


def test_a_model_of_another_input_shape_is_never_the_default(shipped):
    a = shipped[source("ablation_hard")]
    rgb = replace(a, config=replace(a.config, in_channels=3, input_mean=(0.5,) * 3, input_std=(0.5,) * 3))
    found = model_differences(a, rgb)
    assert [str(d) for d in found] == ["input shape (1×28×28 vs 3×28×28)", "input mean (0.1307 vs 0.5/0.5/0.5)",
                                       "input std (0.3081 vs 0.5/0.5/0.5)"]
    assert default_partner(a, {"rgb.pt": rgb}) is None
    assert cross_refusal(a.config, rgb.config) == "A takes 1×28×28 images, B 3×28×28"


# ---- a run's checkpoint and its snapshots ---------------------------------------------------------------------------

def run_traits(shipped, step: int, run: str | None = "runs/tiny") -> ModelTraits:
    return replace(shipped[source("ablation_hard")], step=step, run=run)


def test_earlier_steps_start_in_the_middle():
    assert earlier_steps([1, 2, 5, 10, 20, 50, 100], 100) == [10, 20, 5, 50, 2, 1]
    assert earlier_steps([1, 5, 20, 40], 40) == [5, 20, 1]
    assert earlier_steps([5, 10], 5) == [] and earlier_steps([], 100) == []


def test_a_runs_checkpoint_opens_on_its_middle_earlier_snapshot(shipped):
    a = run_traits(shipped, 100)
    candidates = {**shipped, "runs/tiny/last.pt": a}
    steps = [1, 2, 5, 10, 20, 50]
    partner = default_partner(a, candidates, a_file="runs/tiny/last.pt", snapshot_steps=steps)
    assert partner == Partner("runs/tiny/last.pt", 10)
    assert [str(d) for d in model_differences(a, run_traits(shipped, 10))] == ["training step (100 vs 10)"]
    # a snapshot that cannot be drawn beside A (another input shape, unreadable) is passed over
    partner = default_partner(a, candidates, a_file="runs/tiny/last.pt", snapshot_steps=steps, shows=lambda s: s != 10)
    assert partner == Partner("runs/tiny/last.pt", 20)
    # no snapshot drawable: the where ablation's partner, as for the shipped file
    partner = default_partner(a, candidates, a_file="runs/tiny/last.pt", snapshot_steps=steps, shows=lambda s: False)
    assert partner == Partner(source("ablation_none"))


def test_a_first_snapshot_opens_on_its_runs_checkpoint(shipped):
    a = run_traits(shipped, 1)  # the sidebar's step slider at the run's first snapshot
    candidates = {"runs/tiny/last.pt": run_traits(shipped, 100), "runs/other/last.pt": run_traits(shipped, 100,
                                                                                                     "runs/other")}
    partner = default_partner(a, candidates, a_file="runs/tiny/last.pt", snapshot_steps=[1, 2, 5])
    assert partner == Partner("runs/tiny/last.pt")  # the one difference: the training step


def test_steps_of_separate_trainings_are_no_difference(shipped):
    one, other = run_traits(shipped, 100, "runs/a"), run_traits(shipped, 3000, "runs/b")
    assert model_differences(one, other) == []
    assert "training step" not in {d.name for d in model_differences(shipped[source("default")],
                                                                     shipped[source("fashion")])}  # 490 vs 17,180


def test_the_cross_where_refusal_reads_in_proper_notation(shipped):
    a, b = shipped[source("default")].config, shipped[source("ablation_none")].config
    assert cross_refusal(a, b) == "their stages differ (A: 32/64/128 channels, B: 16/32/64)"
    pools = replace(b, channels=a.channels, pool_sizes=(2, 2, 3))
    assert cross_refusal(a, pools) == "their pooling windows differ (A: 2×2, 2×2, 2×2, B: 2×2, 2×2, 3×3)"
    assert cross_refusal(shipped[source("ablation_hard")].config, b) is None  # hard and none: both switch indices
