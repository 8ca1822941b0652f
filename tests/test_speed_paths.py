"""The fast paths give the plain path's results: channels_last against the contiguous layout (pooling, unpooling and
whole training steps), and --compile, which falls back to the eager step, with a warning, where it cannot compile."""
import os
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.runs.cli import _configs, _parser
from core.data import DataConfig
from core.model import SWWAE, digits_config
from core.model import pool, unpool
from core.training import TrainConfig, build_optimizer, memory_format, train, train_step, training_net

TINY_MODEL = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16, dropout=0.3)
TINY_DATA = DataConfig(max_train=128, max_val=32, shift=1)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def test_max_unpool2d_of_a_channels_last_input_equals_the_contiguous_one():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 7)  # odd size: floor mode drops the last row and column
    what, where = F.max_pool2d(x, 2, 2, return_indices=True)  # (3, 5, 3, 3) twice
    expected = F.max_unpool2d(what, where, 2, 2, output_size=(7, 7))  # (3, 5, 7, 7)
    for what_, where_ in ((channels_last(what), channels_last(where)), (channels_last(what), where)):
        assert torch.equal(F.max_unpool2d(what_, where_, 2, 2, output_size=(7, 7)), expected)
    cl_what, cl_where = F.max_pool2d(channels_last(x), 2, 2, return_indices=True)
    assert torch.equal(cl_what, what) and torch.equal(cl_where, where)  # flat (H, W) indices in either layout


@pytest.mark.parametrize("mode", ["hard", "soft", "none"])
def test_pool_and_unpool_give_the_same_values_and_gradients_in_channels_last(mode):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9)
    grad = torch.randn(2, 6, 9, 9)
    results = []
    for layout in (x.clone(), channels_last(x)):
        layout.requires_grad_(True)
        what, where = pool(layout, mode, 2, 4.0)  # (2, 6, 4, 4), where (2, 6, 4, 4) or (2, 6, 4, 4, 2)
        out = unpool(what, where, mode, 2, (9, 9))  # (2, 6, 9, 9)
        out.backward(grad)
        results.append((what, where, out, layout.grad))
    for plain, fast in zip(*results):
        assert torch.equal(plain, fast)


def steps(layout: bool, count: int = 4) -> tuple[list[float], dict[str, torch.Tensor]]:
    """`count` of the trainer's own steps (shift, dropout, Adam) from the same seed, in one layout."""
    config = TrainConfig(device="cpu", channels_last=layout, lr=3e-3)
    torch.manual_seed(0)
    model = SWWAE(TINY_MODEL).to(CPU, memory_format=memory_format(config, CPU)).train()
    optimizer, net = build_optimizer(model, config), training_net(model, config)
    augment = torch.Generator().manual_seed(1)
    images, labels = torch.rand(count, 16, 1, 28, 28), torch.randint(0, 10, (count, 16))
    losses = []
    for x, y in zip(images, labels):
        terms, _ = train_step(net, optimizer, x, y, config=config, device=CPU, shift=1, augment=augment)
        losses.append(terms["total"].item())
    return losses, model.state_dict()


def test_training_steps_in_channels_last_equal_the_contiguous_ones():
    plain_losses, plain_state = steps(layout=False)
    fast_losses, fast_state = steps(layout=True)
    assert memory_format(TrainConfig(), CPU) == torch.channels_last
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for name, value in plain_state.items():
        torch.testing.assert_close(fast_state[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_the_cli_takes_compile_and_channels_last():
    args = _parser().parse_args(["--compile", "--no-channels-last", "--dataset", "mnist5k"])
    _, train_config, _ = _configs(args)
    assert train_config.compile and not train_config.channels_last
    assert not TrainConfig().compile and TrainConfig().channels_last  # the defaults: eager, channels_last


class Uncompilable(nn.Module):
    """Stands in for torch.compile's wrapper on a machine where compiling fails at the first call."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self._orig_mod = net

    def forward(self, *args):
        raise RuntimeError("no C++ compiler found")


def test_compile_falls_back_to_the_eager_step_with_a_warning_and_the_same_weights(tmp_path, monkeypatch):
    config = TrainConfig(batch_size=32, device="cpu", epochs=1, max_steps=3, log_every=1, samples=0)
    plain = train(TINY_MODEL, config, TINY_DATA, run_dir=tmp_path / "plain")
    monkeypatch.setattr(torch, "compile", Uncompilable)
    with pytest.warns(RuntimeWarning, match="torch.compile cannot compile .*no C\\+\\+ compiler found"):
        fallback = train(TINY_MODEL, TrainConfig(**{**vars(config), "compile": True}), TINY_DATA,
                         run_dir=tmp_path / "fallback")
    assert fallback.state == plain.state == "finished" and fallback.step == 3
    for name, value in plain.model.state_dict().items():  # the failed attempt left nothing behind
        assert torch.equal(fallback.model.state_dict()[name], value), name


@pytest.mark.skipif(os.environ.get("SWWAE_COMPILE_TESTS") != "1", reason="compiling the step with inductor takes "
                    "about a minute on a 2-core CPU; set SWWAE_COMPILE_TESTS=1 to run it")
def test_a_compiled_step_equals_the_eager_one():
    """Without dropout: compiled code draws its random numbers its own way, so dropout masks differ from eager."""
    config = TrainConfig(device="cpu", compile=True, lr=3e-3)
    eager = TrainConfig(device="cpu", lr=3e-3)
    results = []
    for cfg in (eager, config):
        torch.manual_seed(0)
        model = SWWAE(replace(TINY_MODEL, dropout=0.0)).to(CPU, memory_format=memory_format(cfg, CPU)).train()
        optimizer, net = build_optimizer(model, cfg), training_net(model, cfg)
        torch.manual_seed(1)
        x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback would make this test pass for the wrong reason
            losses = [train_step(net, optimizer, x, y, config=cfg, device=CPU)[0]["total"].item() for _ in range(3)]
        results.append((losses, model.state_dict()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    for name, value in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], value, rtol=1e-3, atol=1e-4, msg=name)
