"""PoolingNetwork's switches against an independent reference: the input of every nn.MaxPool2d, captured by the
test's own forward hook, pooled by F.max_pool2d(return_indices=True); logits against the plain net; gradients
against the plain net's; what the trace refuses; and concurrent encodes against serial ones.
"""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from core.model.network import NetworkConfig, NetworkError, PoolingNetwork
from core.model.swwae import Encoding

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def wrap(net: nn.Module, size: int, channels: int = 3) -> PoolingNetwork:
    return PoolingNetwork(net.eval(), in_channels=channels, image_size=size, input_mean=MEAN[:channels],
                          input_std=STD[:channels])


def randomise_batch_norm(net: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from the identity, so batch norm changes the maps."""
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return net


class TwoPools(nn.Module):
    """A CIFAR-tutorial-like net: one pool module called twice, functional ReLUs."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))  # (N, 4, 8, 8)
        x = self.pool(F.relu(self.conv2(x)))  # (N, 6, 6, 6) -> (N, 6, 3, 3)
        return self.fc(torch.flatten(x, 1))


class ResidualBeforePool(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.body = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 4))

    def forward(self, x):
        x = self.relu(self.stem(x))
        return self.head(self.pool(self.relu(x + self.body(x))))  # the residual add before the pool


@pytest.fixture(scope="module")
def vgg() -> PoolingNetwork:
    torch.manual_seed(0)
    return wrap(randomise_batch_norm(torchvision.models.vgg11_bn(weights=None, num_classes=10, init_weights=False)), 64)


@pytest.fixture(scope="module")
def alexnet() -> PoolingNetwork:
    torch.manual_seed(0)
    return wrap(torchvision.models.alexnet(weights=None, num_classes=7), 96)


def captured_pool_calls(network: PoolingNetwork, x: torch.Tensor) -> tuple[list[tuple], Encoding]:
    """([(pool, its input, its own output) of every MaxPool2d call], network.encode(x)), the calls seen by the
    test's own hooks (prepended, so they see the module's own output before the network's hook hands one on)."""
    seen = []
    hook = lambda module, inputs, output: seen.append((module, inputs[0].clone(), output.clone()))  # noqa: E731
    pools = [m for m in network.net.modules() if isinstance(m, nn.MaxPool2d)]
    handles = [pool.register_forward_hook(hook, prepend=True) for pool in pools]
    try:
        with torch.no_grad():
            encoding = network.encode(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen, encoding


@pytest.mark.parametrize("which, size", [("vgg", 64), ("alexnet", 96)])
def test_every_switch_is_f_max_pool2d_of_the_pool_input(which, size, request):
    network = request.getfixturevalue(which)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    seen, encoding = captured_pool_calls(network, x)
    assert len(seen) == len(encoding.whats) == len(network.config.pool_sizes) and len(seen) >= 3
    for stage, (pool, pre_pool, own_output) in enumerate(seen):
        what, where = F.max_pool2d(pre_pool, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                   ceil_mode=pool.ceil_mode, return_indices=True)
        assert torch.equal(encoding.pre_pool[stage], pre_pool)
        assert torch.equal(encoding.wheres[stage], where) and encoding.wheres[stage].dtype == torch.int64
        assert torch.equal(encoding.whats[stage], what) and torch.equal(encoding.whats[stage], own_output)
        assert network.config.stage_sizes[stage] == pre_pool.shape[-1]
        assert network.config.channels[stage] == pre_pool.shape[1]
    with torch.no_grad():
        plain = network.net(network.normalise(x))  # (N, K): the wrapped net with nothing recording
    assert torch.equal(encoding.logits, plain) and torch.equal(network(x), plain)
    assert network.config.top_size == encoding.whats[-1].shape[-1]


def test_the_config_describes_the_pools_it_measured(vgg, alexnet):
    assert vgg.config.stage_sizes == (64, 32, 16, 8, 4) and vgg.config.top_size == 2
    assert vgg.config.pool_sizes == vgg.config.pool_strides == (2,) * 5 and not vgg.config.overlapping
    assert vgg.config.channels == (64, 128, 256, 512, 512) and vgg.config.num_classes == 10
    assert vgg.config.decoder == "deconvnet" and vgg.config.decoder_reason == ""
    assert alexnet.config.pool_sizes == (3, 3, 3) and alexnet.config.pool_strides == (2, 2, 2)
    assert alexnet.config.overlapping and alexnet.config.stage_sizes == (23, 11, 5) and alexnet.config.top_size == 2
    assert alexnet.config.num_classes == 7 and alexnet.config.convs_per_stage == 3
    again = NetworkConfig.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in vars(vgg.config).items()})
    assert again == vgg.config  # the plain fields survive JSON's lists
    with pytest.raises(NetworkError, match="unknown"):
        NetworkConfig.from_dict({**vars(vgg.config), "colour": 1})


def test_logits_differentiate_like_the_plain_net(alexnet):
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(3), requires_grad=True)
    (mine,) = torch.autograd.grad(alexnet.encode(x).logits[:, 4].sum(), x)
    (plain,) = torch.autograd.grad(alexnet.net(alexnet.normalise(x))[:, 4].sum(), x)
    assert mine.abs().max() > 0 and torch.allclose(mine, plain, atol=1e-6)
    with torch.no_grad():
        assert not alexnet.encode(x).logits.requires_grad


def test_concurrent_encodes_match_serial_ones(alexnet):
    inputs = [torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(10 + i)) for i in range(4)]
    with torch.no_grad():
        serial = [alexnet.encode(x) for x in inputs]
        with ThreadPoolExecutor(max_workers=4) as pool:  # one shared network, four threads encoding at once
            concurrent = list(pool.map(alexnet.encode, inputs * 3))
    for index, encoding in enumerate(concurrent):
        expected = serial[index % len(inputs)]
        assert torch.equal(encoding.logits, expected.logits)
        for mine, theirs in zip(encoding.wheres + encoding.whats, expected.wheres + expected.whats):
            assert torch.equal(mine, theirs)


def test_a_pool_module_called_twice_gives_two_stages_and_functions_between_refuse_the_deconvnet():
    torch.manual_seed(0)
    network = wrap(TwoPools(), 16, channels=1)
    x = torch.rand(3, 1, 16, 16)
    seen, encoding = captured_pool_calls(network, x)
    assert network.config.stage_sizes == (16, 6) and network.config.channels == (4, 6)
    for stage, (pool, pre_pool, _) in enumerate(seen):
        assert torch.equal(encoding.wheres[stage], F.max_pool2d(pre_pool, 2, return_indices=True)[1])
    assert network.config.decoder == "none" and "'pool'" in network.config.decoder_reason
    with pytest.raises(NetworkError, match="no deconvnet.*'pool'"):
        network.decode(encoding)


def test_resnet18_encodes_its_one_pool_and_a_residual_add_before_a_pool_refuses_the_deconvnet():
    torch.manual_seed(0)
    resnet = wrap(randomise_batch_norm(torchvision.models.resnet18(weights=None, num_classes=3)), 64)
    x = torch.rand(2, 3, 64, 64)
    seen, encoding = captured_pool_calls(resnet, x)
    (pool, pre_pool, _), = seen
    assert torch.equal(encoding.wheres[0], F.max_pool2d(pre_pool, 3, 2, 1, return_indices=True)[1])
    assert torch.equal(encoding.logits, resnet.net(resnet.normalise(x)).detach())
    # conv1 -> bn1 -> relu -> maxpool is a chain; the residual blocks all come after the last (only) pool
    assert resnet.config.decoder == "deconvnet"
    residual = wrap(ResidualBeforePool(), 16)
    assert residual.config.decoder == "none" and "'relu'" in residual.config.decoder_reason
    with pytest.raises(NetworkError, match="residual add"):
        residual.decode(residual.encode(torch.rand(1, 3, 16, 16)))


def test_a_pool_followed_by_an_in_place_relu_keeps_the_switches_as_pooled():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(inplace=True), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 3))
    network = wrap(net, 16, channels=1)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        encoding = network.encode(x)
        pre_pool = net[0](network.normalise(x))  # (N, 4, 16, 16)
        what, where = F.max_pool2d(pre_pool, 2, return_indices=True)
        plain = net(network.normalise(x))
    assert (what < 0).any(), "the test needs negative whats for the in-place ReLU to change"
    assert torch.equal(encoding.whats[0], what) and torch.equal(encoding.wheres[0], where)
    assert torch.equal(encoding.logits, plain)


def test_a_pool_that_returns_its_indices_is_read_as_it_is():
    class Unpacks(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(3, 2, padding=1, return_indices=True)
            self.fc = nn.Linear(2 * 5 * 5, 2)

        def forward(self, x):
            what, _ = self.pool(self.conv(x))  # (N, 2, 5, 5)
            return self.fc(what.flatten(1))

    torch.manual_seed(0)
    network = wrap(Unpacks(), 10, channels=1)
    x = torch.rand(2, 1, 10, 10)
    with torch.no_grad():
        encoding = network.encode(x)
        reference = F.max_pool2d(network.net.conv(network.normalise(x)), 3, 2, 1, return_indices=True)
    assert torch.equal(encoding.whats[0], reference[0]) and torch.equal(encoding.wheres[0], reference[1])
    assert network.config.decoder == "deconvnet" and network.config.pool_paddings == (1,)


@pytest.mark.parametrize("net, size, match", [
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2)), 16, "no nn.MaxPool2d"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.MaxPool2d(2)), 16, r"class logits .* got \(1, 2, 7, 7\)"),
    (nn.Sequential(nn.MaxPool2d((2, 3)), nn.Flatten(), nn.LazyLinear(2)), 16, "non-square kernel"),
    (nn.Sequential(nn.Conv2d(5, 2, 3), nn.MaxPool2d(2)), 16, "does not run on a .*RuntimeError"),
    (nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(2)), 4096, "outside what"),
    (nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2)), 4, "outside what"),
], ids=["no-pool", "not-logits", "non-square", "wrong-channels", "too-big", "too-small"])
def test_networks_the_explorer_cannot_serve_are_refused_in_one_line(net, size, match):
    with pytest.raises(NetworkError, match=match) as caught:
        wrap(net, size)
    assert "\n" not in str(caught.value)


def test_bad_inputs_are_refused_in_one_line(vgg):
    for bad in (torch.rand(1, 3, 32, 32), torch.rand(3, 64, 64), torch.zeros(1, 3, 64, 64, dtype=torch.int64),
                torch.full((1, 3, 64, 64), float("nan"))):
        with pytest.raises(NetworkError) as caught:
            vgg.encode(bad)
        assert "\n" not in str(caught.value)
    assert issubclass(NetworkError, ValueError)  # callers that catch the SWWAE's ValueError catch this too
