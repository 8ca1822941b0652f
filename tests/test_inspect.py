"""`python -m core.inspect`: the per-pooling-layer numbers of any max-pooling network, checked against independent
references (switches and ties recomputed from hooked pooling inputs by brute force, the shift probe's own figures),
and its failures as one line."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

from core import inspect as inspector
from core.analysis import shift_probe, window_ties
from core.model import load_checkpoint
from core.model.network import PoolingNetwork


def png_files(tmp_path, count: int, size: int, channels: int = 3) -> list[str]:
    generator = np.random.default_rng(0)
    files = []
    for i in range(count):
        pixels = (generator.random((size, size, channels)) * 255).astype(np.uint8)
        pixels[: size // 3] = 0  # a flat band: windows there tie
        path = tmp_path / f"image{i}.png"
        Image.fromarray(pixels if channels == 3 else pixels[..., 0]).save(path)
        files.append(str(path))
    return files


def brute_force(pre_pool: torch.Tensor, kernel: int, stride: int, padding: int) -> tuple[float, float]:
    """(tie share, switch entropy in bits) of max pooling read window by window, the slow way."""
    padded = F.pad(pre_pool, (padding,) * 4, value=-math.inf)
    _, where = F.max_pool2d(pre_pool, kernel, stride, padding, return_indices=True)
    h, w = where.shape[-2:]
    ties, counts = [], np.zeros(kernel * kernel)
    for i in range(h):
        for j in range(w):
            window = padded[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel].flatten(2)
            tied = (window == window.amax(-1, keepdim=True)).sum(-1) > 1  # (N, C)
            ties.append(tied)
            top, left = i * stride - padding, j * stride - padding
            flat = where[:, :, i, j]
            cell = (flat // pre_pool.shape[-1] - top) * kernel + (flat % pre_pool.shape[-1] - left)
            np.add.at(counts, cell[~tied].numpy(), 1)
    share = counts[counts > 0] / counts.sum()
    return float(torch.stack(ties).float().mean()), float(-(share * np.log2(share)).sum())


def pool_inputs(net: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
             for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    with torch.no_grad():
        net(images)
    for hook in hooks:
        hook.remove()
    return seen


def test_swwae_report_matches_the_lens_ties_and_the_shift_probe():
    report = inspector.inspect("checkpoints/default.pt", examples=8, shifts=(1, 2))
    model = load_checkpoint("checkpoints/default.pt").model
    images = inspector.example_images("mnist5k", 1, 28, 8)[0]
    with torch.no_grad():
        encoding = model.encode(images)
    probes = {shift: shift_probe(model, images, shift, 0) for shift in (1, 2)}
    assert [layer["pre_pool_shape"] for layer in report["layers"]] == [[32, 28, 28], [64, 14, 14], [128, 7, 7]]
    for layer, stage in zip(report["layers"], range(3)):
        assert layer["tied_share"] == pytest.approx(window_ties(encoding.pre_pool[stage], 2).mean(), abs=1e-6)
        tie_share, entropy = brute_force(encoding.pre_pool[stage], 2, 2, 0)
        assert layer["switch_entropy_bits"] == pytest.approx(entropy, abs=1e-5)
        assert layer["shift_probe_note"] is None
        for row, shift in zip(layer["shift_probe"], (1, 2)):
            expected = probes[shift][stage]
            assert row["shift_x"] == shift and row["switches"] == expected.switches
            assert row["what_per_pre_pool"] == pytest.approx(expected.what_per_pre_pool, abs=1e-6)
            assert row["where_followed"] == pytest.approx(expected.where_followed, abs=1e-6)


def test_torchvision_vgg_report_against_hooked_pooling_inputs(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None, num_classes=7).eval()
    weights = tmp_path / "vgg11.pth"
    torch.save(net.state_dict(), weights)
    files = png_files(tmp_path, 3, 80)
    report = inspector.inspect("torchvision:vgg11", weights=str(weights), image_size=64, images=files, shifts=(2,))
    model = inspector.open_model("torchvision:vgg11", str(weights), 64)[0]
    inputs = pool_inputs(net, model.normalise(inspector.read_images(files, 3, 64)[0]))
    assert len(report["layers"]) == 5 == len(inputs)
    for layer, pre_pool in zip(report["layers"], inputs):
        assert layer["pre_pool_shape"] == list(pre_pool.shape[1:])
        assert layer["what_shape"] == [pre_pool.shape[1], pre_pool.shape[2] // 2, pre_pool.shape[3] // 2]
        tie_share, entropy = brute_force(pre_pool, 2, 2, 0)
        assert layer["tied_share"] == pytest.approx(tie_share, abs=1e-6)
        assert layer["switch_entropy_bits"] == pytest.approx(entropy, abs=1e-5)
    assert report["layers"][0]["shift_probe"][0]["shift_x"] == 2  # VGG's convs keep the size: the probe applies


def test_overlapping_pools_are_measured_by_their_own_windows_and_skip_the_probe(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(), nn.LazyLinear(3))
    net(torch.zeros(1, 1, 32, 32))
    model = PoolingNetwork(net.eval(), in_channels=1, image_size=32, input_mean=(0.0,), input_std=(1.0,))
    images = inspector.read_images(png_files(tmp_path, 2, 32, channels=1), 1, 32)[0]
    layers = inspector.layer_reports(model, images, [1])
    inputs = pool_inputs(net, images)
    for layer, pre_pool, (kernel, stride, padding) in zip(layers, inputs, [(3, 2, 1), (3, 2, 0)]):
        assert (layer["kernel"], layer["stride"], layer["padding"]) == (kernel, stride, padding)
        tie_share, entropy = brute_force(pre_pool, kernel, stride, padding)
        assert layer["tied_share"] == pytest.approx(tie_share, abs=1e-6)
        assert layer["switch_entropy_bits"] == pytest.approx(entropy, abs=1e-5)
        assert layer["switch_entropy_max_bits"] == pytest.approx(math.log2(9))
        assert layer["shift_probe"] is None and "3x3 windows at stride 2" in layer["shift_probe_note"]


def test_cli_writes_the_printed_report_and_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert inspector.main(["checkpoints/default.pt", "--examples", "4", "--shifts", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(out.read_text())
    for argv, words in [(["torchvision:no_such_net"], "no_such_net"),
                        (["torchvision:vgg11", "--image-size", "64"], "--images"),
                        (["zoo:small_vgg", "--images", str(tmp_path / "missing.png")], "missing.png"),
                        (["checkpoints/default.pt", "--shifts", "99"], "--shifts")]:
        assert inspector.main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and words in error and error.count("\n") == 1, error
