"""The zoo's small_vgg against a hand-written functional forward, and the pooling-network file format: a round trip
that gives identical weights and outputs, and one-line refusals of every bad file, none of which runs code."""
import io
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.model import SWWAE, NetworkError, digits_config, save_checkpoint
from core.model.network_file import (
    NETWORK_FORMAT, NETWORK_FORMAT_VERSION, NetworkFileError, read_network_file, save_network_file,
)
from core.model.zoo import ARCHITECTURES, build, small_vgg

SMALL = {"in_channels": 1, "num_classes": 10, "widths": [4, 8], "image_size": 28}  # fast; 28 -> 14 -> 7
INPUT = {"channels": 1, "size": 28, "mean": [0.286], "std": [0.353]}


def _trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics that are not the initial ones (a round trip must keep them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in net.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) * 0.5 + 0.1)  # > 0: valid running_var
    return net.eval()


def _reference_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """small_vgg in eval mode written out by hand with torch.nn.functional, block by block, from its weights."""
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, nn.BatchNorm2d)]
    linears = [m for m in net.classifier if isinstance(m, nn.Linear)]
    h = x
    for block in range(len(convs) // 2):
        for conv, norm in zip(convs[2 * block:2 * block + 2], norms[2 * block:2 * block + 2]):
            h = F.conv2d(h, conv.weight, conv.bias, padding=1)  # (N, C, H, W), size kept
            h = (h - norm.running_mean[:, None, None]) / torch.sqrt(norm.running_var[:, None, None] + norm.eps)
            h = F.relu(h * norm.weight[:, None, None] + norm.bias[:, None, None])
        h = F.max_pool2d(h, 2)  # (N, C, H/2, W/2)
    h = h.flatten(1)  # (N, C * top * top)
    h = F.relu(F.linear(h, linears[0].weight, linears[0].bias))
    return F.linear(h, linears[1].weight, linears[1].bias)  # (N, num_classes)


# ---- the zoo --------------------------------------------------------------------------------------------------

def test_small_vgg_matches_a_hand_written_forward():
    net = _trained_like(small_vgg(widths=(4, 8, 16)))
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(net(x), _reference_forward(net, x), rtol=1e-4, atol=1e-5)


def test_small_vgg_default_layout_pools_28_14_7_3():
    net = build("small_vgg")
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[-1], o.shape[1], o.shape[-1])))
             for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    net.eval()(torch.rand(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    assert seen == [(28, 32, 14), (14, 64, 7), (7, 128, 3)]  # (pre-pool side, channels, pooled side) per pool
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(p.numel() for p in net.parameters()) == 585_066  # about 0.59M: 2.3 MB of float32
    assert [type(m).__name__ for m in net.classifier] == ["Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]


@pytest.mark.parametrize("name, kwargs, needle", [
    ("resnet", {}, "unknown zoo network 'resnet'"),
    ("small_vgg", {"depth": 3}, "unexpected keyword argument 'depth'"),
    ("small_vgg", {"widths": []}, "widths must be a non-empty list"),
    ("small_vgg", {"widths": [8, 0]}, "widths must be a positive integer"),
    ("small_vgg", {"in_channels": True}, "in_channels must be a positive integer"),
    ("small_vgg", {"image_size": 7}, "too small for 3 pools"),
    ("small_vgg", {"dropout": 1.0}, "dropout must be in [0, 1)"),
])
def test_build_refuses_bad_names_and_arguments_in_one_line(name, kwargs, needle):
    with pytest.raises(ValueError) as caught:
        build(name, **kwargs)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert "small_vgg" in ARCHITECTURES


# ---- the file format --------------------------------------------------------------------------------------------

def _save(path: Path, net: nn.Module | None = None, **overrides) -> nn.Module:
    net = net if net is not None else _trained_like(build("small_vgg", **SMALL))
    fields = dict(architecture="zoo:small_vgg", architecture_args=SMALL, input=INPUT,
                  data_config={"dataset": "fashion-mnist"}, train_config={"optimizer": "adamw", "lr": 2e-3},
                  step=430, epoch=1, metrics={"val_acc": 0.9, "test_acc": 0.89})
    save_network_file(path, net, **{**fields, **overrides})
    return net


def test_a_saved_file_reads_back_with_identical_weights_and_outputs(tmp_path):
    path = tmp_path / "net.pt"
    net = _save(path)
    loaded = read_network_file(path)
    assert set(loaded.state) == set(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state[key], value), key  # exact, buffers (BN statistics) included
    assert (loaded.architecture, loaded.architecture_args, loaded.input) == ("zoo:small_vgg", SMALL, INPUT)
    assert (loaded.step, loaded.epoch, loaded.dataset, loaded.format_version) == (430, 1, "fashion-mnist", 1)
    assert loaded.metrics == {"val_acc": 0.9, "test_acc": 0.89} and loaded.train_config["optimizer"] == "adamw"
    rebuilt = build(loaded.architecture[len("zoo:"):], **loaded.architecture_args)
    rebuilt.load_state_dict(loaded.state)  # strict: every key and shape
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(rebuilt.eval()(x), net(x))
    assert read_network_file(path.read_bytes()).state.keys() == loaded.state.keys()  # bytes (an upload) read too
    assert read_network_file(io.BytesIO(path.read_bytes())).architecture == "zoo:small_vgg"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644) and not list(tmp_path.glob(".*.tmp"))


def test_tuples_are_stored_as_plain_lists(tmp_path):
    _save(tmp_path / "net.pt", architecture_args={**SMALL, "widths": (4, 8)},
          input={**INPUT, "mean": (0.286,), "std": (0.353,)})
    loaded = read_network_file(tmp_path / "net.pt")
    assert loaded.architecture_args["widths"] == [4, 8] and loaded.input["mean"] == [0.286]


class _Payload:
    """Pickles as a call to os.mkdir(marker): loading it with a plain pickle would run that call."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_file_holding_a_pickled_object_is_refused_and_not_run(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"format": NETWORK_FORMAT, "format_version": 1, "state": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(NetworkFileError, match="refused, not run") as caught:
        read_network_file(path)
    assert "\n" not in str(caught.value) and not marker.exists()
    torch.load(path, weights_only=False)  # the reference: an unsafe load does run it, so the file is a real test
    assert marker.exists()


def test_an_swwae_checkpoint_is_refused_with_a_line_that_says_so(tmp_path):
    path = tmp_path / "swwae.pt"
    save_checkpoint(path, SWWAE(digits_config()))
    with pytest.raises(NetworkFileError, match="this is an SWWAE checkpoint") as caught:
        read_network_file(path)
    assert "\n" not in str(caught.value)


def _payload(**changes) -> dict:
    net = build("small_vgg", **SMALL)
    payload = {"format": NETWORK_FORMAT, "format_version": NETWORK_FORMAT_VERSION, "architecture": "zoo:small_vgg",
               "architecture_args": dict(SMALL), "input": dict(INPUT), "data_config": None, "train_config": None,
               "state": net.state_dict(), "step": 0, "epoch": 0, "metrics": {}}
    payload.update(changes)
    return payload


def _bytes(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("data, needle", [
    (b"", "the file is empty"),
    (b"not a torch file at all", "not a readable PyTorch file"),
    (_bytes(_payload())[:2000], "not a readable PyTorch file (truncated or corrupt?)"),
    (_bytes({"weights": torch.zeros(3)}), "no 'pooling-network' format marker"),
    (_bytes([1, 2, 3]), "no 'pooling-network' format marker"),
    (_bytes(_payload(format_version=2)), "format version 2 is newer than this program's (1)"),
    (_bytes(_payload(format_version="1")), "format_version '1'"),
    (_bytes(_payload(architecture=7)), "architecture is not a one-line name"),
    (_bytes(_payload(architecture_args=[1, 10])), "architecture_args is a list, not a dictionary"),
    (_bytes(_payload(input=None)), "input is a NoneType, not a dictionary"),
    (_bytes(_payload(train_config="adam")), "train_config is a str, not a dictionary"),
    (_bytes(_payload(metrics={1: 0.5})), "metrics has a key that is not a string"),
    (_bytes(_payload(step=-1)), "step is not a count"),
    (_bytes(_payload(epoch=True)), "epoch is not a count"),
    (_bytes(_payload(input={**INPUT, "channels": 0})), "input channels 0"),
    (_bytes(_payload(input={**INPUT, "size": 5000})), "input size 5000 is not an image side"),
    (_bytes(_payload(input={**INPUT, "mean": [0.1, 0.2]})), "input mean is not 1 finite number(s)"),
    (_bytes(_payload(input={**INPUT, "std": [float("nan")]})), "input std is not 1 finite number(s)"),
    (_bytes(_payload(input={**INPUT, "std": [0.0]})), "input std must be > 0"),
    (_bytes(_payload(state={"w": [1.0, 2.0]})), "state is not a dict of named tensors"),
    (_bytes(_payload(state={})), "state is not a dict of named tensors"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, data, needle):
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(NetworkFileError) as caught:
            read_network_file(source)
        message = str(caught.value)
        assert needle in message and "\n" not in message, message
        assert message.startswith(str(path) if source is path else "uploaded file")


def test_a_missing_file_is_refused_in_one_line(tmp_path):
    with pytest.raises(NetworkError, match="no such file"):  # a NetworkFileError is a NetworkError, a ValueError
        read_network_file(tmp_path / "nothing.pt")
    assert issubclass(NetworkFileError, NetworkError) and issubclass(NetworkFileError, ValueError)


def test_saving_refuses_what_could_not_be_read_and_writes_nothing(tmp_path):
    path = tmp_path / "net.pt"
    with pytest.raises(NetworkFileError, match="input std must be > 0"):
        _save(path, input={**INPUT, "std": [-1.0]})
    with pytest.raises(NetworkFileError, match="architecture is not a one-line name"):
        _save(path, architecture="")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "net.pt"
    _save(path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        _save(path, metrics={"val_acc": 0.1})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
