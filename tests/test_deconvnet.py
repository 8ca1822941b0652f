"""The deconvnet (Zeiler & Fergus 2014) of a PoolingNetwork against hand-written references: max_unpool2d with the
switches F.max_pool2d gives, relu, conv_transpose2d with the layers' own weights and hand-computed output padding;
and, for VGG-11, against autograd's "deconvolution" (each ReLU's backward replaced by relu of the signal), which
is the same projection when pooling windows do not overlap.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from core.model.network import NetworkError, PoolingNetwork
from core.model.swwae import Encoding

unpool, relu, deconv = F.max_unpool2d, F.relu, F.conv_transpose2d


def wrap(net: nn.Module, size: int, channels: int) -> PoolingNetwork:
    return PoolingNetwork(net.eval(), in_channels=channels, image_size=size, input_mean=(0.3,) * channels,
                          input_std=(0.2,) * channels)


def two_layer(kernel: int, stride: int, top_side: int) -> nn.Sequential:
    """conv -> relu -> maxpool -> conv -> relu -> maxpool -> flatten -> linear."""
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(kernel, stride),
                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(kernel, stride),
                         nn.Flatten(), nn.Linear(4 * top_side**2, 5))


def two_layer_reference(net, x, kernel, stride, stage, channels=None):
    """The deconvnet by hand: pooled by F.max_pool2d, unpooled by F.max_unpool2d, from `stage` keeping `channels`.
    -> (projection (N, 2, H, W), [unpooled stage 0, unpooled stage 1 (when stage == 1)])."""
    conv1, conv2 = net[0], net[3]
    act0 = relu(conv1(x))  # (N, 3, H, W)
    what0, where0 = F.max_pool2d(act0, kernel, stride, return_indices=True)  # (N, 3, h0, w0)
    act1 = relu(conv2(what0))  # (N, 4, h0, w0)
    what1, where1 = F.max_pool2d(act1, kernel, stride, return_indices=True)  # (N, 4, h1, w1)
    signal = [what0, what1][stage]
    if channels is not None:
        keep = torch.zeros(signal.shape[1])
        keep[channels] = 1
        signal = signal * keep.view(1, -1, 1, 1)
    unpooled = []
    if stage == 1:
        unpooled.insert(0, unpool(signal, where1, kernel, stride, output_size=act1.shape[-2:]))  # (N, 4, h0, w0)
        signal = deconv(relu(unpooled[0]), conv2.weight, padding=1)  # (N, 3, h0, w0)
    unpooled.insert(0, unpool(signal, where0, kernel, stride, output_size=act0.shape[-2:]))  # (N, 3, H, W)
    return deconv(relu(unpooled[0]), conv1.weight, padding=1), unpooled  # (N, 2, H, W)


@pytest.mark.parametrize("kernel, stride, size, top_side", [(2, 2, 12, 3), (3, 2, 13, 2)],
                         ids=["2x2-stride-2", "overlapping-3x3-stride-2"])
def test_the_two_layer_deconvnet_equals_the_hand_written_one(kernel, stride, size, top_side):
    torch.manual_seed(0)
    network = wrap(two_layer(kernel, stride, top_side), size, 2)
    x = torch.rand(3, 2, size, size)
    with torch.no_grad():
        encoding = network.encode(x)
        decoding = network.decode(encoding)
        expected, unpooled = two_layer_reference(network.net, network.normalise(x), kernel, stride, stage=1)
    assert expected.abs().max() > 0.01
    assert torch.allclose(decoding.recon, expected, atol=1e-5) and decoding.recon.shape == x.shape
    assert len(decoding.unpooled) == 2 and decoding.hiddens == []
    for mine, theirs in zip(decoding.unpooled, unpooled):
        assert torch.allclose(mine, theirs, atol=1e-6)
    for stage in (0, 1):  # one unit, as the app's unit view decodes it
        for channel in (0, 2):
            with torch.no_grad():
                unit = network.decode(encoding.keeping_channels(stage, [channel]), from_stage=stage)
                reference, _ = two_layer_reference(network.net, network.normalise(x), kernel, stride, stage, channel)
            assert torch.allclose(unit.recon, reference, atol=1e-5) and len(unit.unpooled) == stage + 1
    with torch.no_grad():  # no channel kept, no bias added: nothing comes back
        assert torch.equal(network.decode(encoding.keeping_channels(1, []), from_stage=1).recon, torch.zeros_like(x))


def test_strides_dilation_groups_batch_norm_and_dropout_follow_the_documented_rules():
    """conv stride 2 (floor drops a row: output_padding 1) -> BN (skipped) -> ReLU -> Dropout (identity) -> pool 3/2
    -> conv dilation 2, groups 2 -> ReLU -> pool 2."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.MaxPool2d(3, 2), nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    network = wrap(net, 22, 3)
    x = torch.rand(2, 3, 22, 22)
    with torch.no_grad():
        encoding = network.encode(x)
        recon = network.decode(encoding).recon
        act0 = relu(net[1](net[0](network.normalise(x))))  # (N, 4, 10, 10)
        what0, where0 = F.max_pool2d(act0, 3, 2, return_indices=True)  # (N, 4, 4, 4)
        act1 = relu(net[5](what0))  # (N, 6, 4, 4)
        what1, where1 = F.max_pool2d(act1, 2, return_indices=True)  # (N, 6, 2, 2)
        signal = relu(unpool(what1, where1, 2, output_size=(4, 4)))  # (N, 6, 4, 4)
        signal = deconv(signal, net[5].weight, padding=2, dilation=2, groups=2)  # (N, 4, 4, 4)
        signal = relu(unpool(signal, where0, 3, 2, output_size=(10, 10)))  # (N, 4, 10, 10); dropout, BN: skipped
        expected = deconv(signal, net[0].weight, stride=2, padding=1, output_padding=1)  # (N, 3, 22, 22)
    assert network.config.decoder == "deconvnet" and expected.abs().max() > 0.01
    assert torch.allclose(recon, expected, atol=1e-5)


def test_alexnet_first_stage_unpools_overlapping_windows_and_undoes_the_stride_4_conv():
    torch.manual_seed(0)
    network = wrap(torchvision.models.alexnet(weights=None, num_classes=4), 96, 3)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        encoding = network.encode(x)
        decoding = network.decode(encoding.keeping_channels(0, [5, 9]), from_stage=0)
        conv = network.net.features[0]
        act = relu(conv(network.normalise(x)))  # (N, 64, 23, 23)
        what, where = F.max_pool2d(act, 3, 2, return_indices=True)  # (N, 64, 11, 11)
        keep = torch.zeros(64)
        keep[[5, 9]] = 1
        signal = relu(unpool(what * keep.view(1, -1, 1, 1), where, 3, 2, output_size=(23, 23)))  # (N, 64, 23, 23)
        expected = deconv(signal, conv.weight, stride=4, padding=2, output_padding=1)  # (N, 3, 96, 96)
        whole = network.decode(encoding)  # from the top, through all three overlapping pools
    assert torch.allclose(decoding.recon, expected, atol=1e-5) and expected.abs().max() > 0
    assert whole.recon.shape == x.shape and torch.isfinite(whole.recon).all()
    assert [u.shape[-1] for u in whole.unpooled] == [23, 11, 5]


def test_vgg11_deconvnet_equals_autograd_deconvolution():
    """With non-overlapping pools, no batch norm and each ReLU's backward replaced by relu(signal), the gradient of
    <top what, top what> / 2 is the deconvnet's projection of the top what (conv backward = conv_transpose2d, max
    pool backward = unpooling by the switches)."""
    torch.manual_seed(0)
    network = wrap(torchvision.models.vgg11(weights=None, num_classes=3, init_weights=False), 32, 3)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        encoding = network.encode(x)
        recon = network.decode(encoding).recon
    features = copy.deepcopy(network.net.features)
    for module in features:
        if isinstance(module, nn.ReLU):
            module.inplace = False
            module.register_full_backward_hook(lambda module, grad_in, grad_out: (relu(grad_out[0]),))
    image = network.normalise(x).requires_grad_(True)
    top = features(image)  # (N, 512, 1, 1)
    (expected,) = torch.autograd.grad(top, image, grad_outputs=encoding.whats[-1])
    assert torch.equal(top.detach(), encoding.whats[-1]) and expected.abs().max() > 0
    assert torch.allclose(recon, expected, atol=1e-5 * expected.abs().max().item())


def test_pooling_none_places_whats_without_the_switches():
    torch.manual_seed(0)
    network = wrap(two_layer(2, 2, 3), 12, 2)
    x = torch.rand(1, 2, 12, 12)
    with torch.no_grad():
        encoding = network.encode(x)
        decoding = network.decode(encoding, pooling="none", from_stage=1)
    nearest = encoding.whats[1].repeat_interleave(2, -1).repeat_interleave(2, -2)  # (1, 4, 6, 6)
    assert torch.equal(decoding.unpooled[1], nearest)
    for bad in ({"pooling": "soft"}, {"from_stage": 2}, {"from_stage": -1}):
        with pytest.raises(NetworkError):
            network.decode(encoding, **bad)
    with pytest.raises(NetworkError, match="stages"):
        network.decode(Encoding(encoding.whats[:1], encoding.wheres[:1], encoding.pre_pool[:1], encoding.logits))

