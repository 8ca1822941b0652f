"""The config dataclasses check their fields' types the same way whatever the source: flags, the Train page
(core.runs.make_configs) or a config.json read on --resume (issue 18 item 13)."""
import json
import math

import pytest

from core.data import DataConfig
from core.model import ModelConfig
from core.runs import make_configs
from core.runs.cli import main
from core.training import TrainConfig

BAD_VALUES = [  # (section, field, value): each used to pass, or to fail later with a traceback
    ("train", "epochs", math.nan), ("train", "epochs", math.inf), ("train", "lr", True),
    ("train", "warmup_steps", 1e308), ("data", "dataset", 5), ("data", "shift", 1.5), ("model", "channels", [32, "x"]),
    ("train", "mode", 3), ("data", "flip", "yes"),
]
CLASSES = {"train": TrainConfig, "data": DataConfig, "model": ModelConfig}


@pytest.mark.parametrize("section, name, value", BAD_VALUES)
def test_each_config_refuses_a_value_of_the_wrong_type(section, name, value):
    with pytest.raises(ValueError, match=f"{CLASSES[section].__name__}.{name} must be"):
        CLASSES[section](**{name: value})


@pytest.mark.parametrize("section, name, value", BAD_VALUES)
def test_the_train_page_refuses_it_the_same_way(section, name, value):
    options = {"data": {}, "train": {}, "model": {}}
    options[section][name] = value
    with pytest.raises(ValueError, match=f"{name} must be"):
        make_configs(**options)


@pytest.mark.parametrize("section, name, value", BAD_VALUES)
def test_a_resumed_config_json_with_it_is_one_error_line(tmp_path, capsys, section, name, value):
    configs = {"model": {}, "train": {}, "data": {}}
    configs[section][name] = value
    (tmp_path / "config.json").write_text(json.dumps(configs))  # NaN and Infinity as Python's json writes them
    code = main(["--resume", "--run", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and f"{name} must be" in err and err.count("\n") == 1


def test_numbers_of_the_right_kind_still_pass():
    assert TrainConfig(lr=1, epochs=3).lr == 1  # an int is a number
    assert ModelConfig(channels=[8, 16], kernel_sizes=[3, 3], pool_sizes=[2, 2]).channels == (8, 16)  # JSON lists
