"""The results scripts: a variant's command as RESULTS.md prints it reproduces the variant's settings."""
from dataclasses import asdict

import pytest

from bench import report, semisup


def saved_configs(args) -> dict:
    model, train, data = semisup.configs("swwae", 100, 0, args)
    return {"model": asdict(model), "train": asdict(train), "data": asdict(data)}


def test_main_settings_keep_the_key_of_the_published_results():
    # docs/results/semisup.jsonl files its runs under this key; options added later must not change it
    assert semisup.settings_key(semisup.parse_args([])) == "5f0e5b62c2"


@pytest.mark.parametrize("flags", [
    ["--lambda-rec", "30.0", "--lambda-mid", "0.0"],
    ["--channels", "32", "64", "128", "--no-batch-norm", "--dropout", "0.0", "--steps", "1500"],
    ["--pooling", "soft", "--noise", "0.3", "--head-width", "0"],
])
def test_printed_variant_command_reproduces_the_settings(flags):
    args = semisup.parse_args(flags)
    main_args = semisup.parse_args([])
    assert semisup.settings_key(args) != semisup.settings_key(main_args)
    diff = report._settings_diff(saved_configs(args), main_args)
    printed = " ".join(report._flag(k, v) for k, v in diff.items()).split()
    assert semisup.settings_key(semisup.parse_args(printed)) == semisup.settings_key(args)


def test_summary_reduction_is_relative_to_the_supervised_arm():
    records = [{"pool": "mnist5k", "labels": 100, "arm": arm, "test_error": err}
               for arm, errs in (("swwae", (4.0, 6.0)), ("supervised", (10.0, 10.0))) for err in errs]
    row = semisup.summarize(records)["mnist5k"]["100"]
    assert row["swwae"]["mean"] == 5.0 and row["supervised"]["std"] == 0.0
    assert row["relative_reduction"] == pytest.approx(0.5)
