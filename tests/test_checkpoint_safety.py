"""Loading a checkpoint never runs code, and every bad file fails with a one-line CheckpointError."""
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

from core.model import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from core.model import SWWAE, digits_config


def tiny_model(**overrides) -> SWWAE:
    torch.manual_seed(0)
    shape = dict(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
    return SWWAE(digits_config(**{**shape, **overrides}))


@pytest.fixture
def good_bytes(tmp_path) -> bytes:
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 1, 28, 28))[0].logits.sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "good.pt", model, optimizer=optimizer, step=3, epoch=1,
                    rng_state={"torch": torch.get_rng_state()})
    return (tmp_path / "good.pt").read_bytes()


class CreatesFile:
    """Unpickling this calls open(target, 'w'): a file appears if the loader runs code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def assert_one_line_error(source) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(source)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_good_checkpoint_round_trip_gives_identical_outputs(tmp_path, good_bytes):
    checkpoint = load_checkpoint(good_bytes)
    again = load_checkpoint(io.BytesIO(good_bytes))
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(checkpoint.model.encode(x).logits, again.model.encode(x).logits)
    assert checkpoint.step == 3 and checkpoint.epoch == 1
    assert checkpoint.optimizer_state["state"]  # Adam moments came back
    assert checkpoint.rng_state["torch"].dtype == torch.uint8 and checkpoint.rng_state["torch"].numel() > 0


def test_weights_only_file_is_smaller(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 1, 28, 28))[0].logits.sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "full.pt", model, optimizer=optimizer)
    save_checkpoint(tmp_path / "weights.pt", model)
    assert os.path.getsize(tmp_path / "weights.pt") < 0.6 * os.path.getsize(tmp_path / "full.pt")
    assert load_checkpoint(tmp_path / "weights.pt").optimizer_state is None


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty" in assert_one_line_error(tmp_path / "empty.pt")
    assert_one_line_error(b"")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_file(tmp_path, good_bytes, fraction):
    (tmp_path / "cut.pt").write_bytes(good_bytes[:int(len(good_bytes) * fraction)])
    assert_one_line_error(tmp_path / "cut.pt")


def test_random_bytes(tmp_path):
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    assert_one_line_error(tmp_path / "noise.pt")
    (tmp_path / "text.pt").write_bytes(b"garbage " * 64)  # read as a legacy pickle: not code, just unreadable
    message = assert_one_line_error(tmp_path / "text.pt")
    assert "not a readable PyTorch file" in message and "refused" not in message


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_never_runs(tmp_path, writer):
    target = tmp_path / "pwned.txt"
    payload = {"format": "swwae", "format_version": 1, "model_state": CreatesFile(target)}
    buffer = io.BytesIO()
    if writer == "torch.save":
        torch.save(payload, buffer)
    else:
        pickle.dump(payload, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    message = assert_one_line_error(tmp_path / "evil.pt")
    assert not target.exists(), "loading the checkpoint ran code from it"
    if writer == "torch.save":
        assert "refused" in message  # said as code refused, not as an unreadable file
    # the reference: an unsafe loader really would have created the file
    if writer == "torch.save":
        torch.load(tmp_path / "evil.pt", weights_only=False)
    else:
        pickle.loads(buffer.getvalue())
    assert target.exists()


def test_foreign_file(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    assert "not an SWWAE checkpoint" in assert_one_line_error(tmp_path / "foreign.pt")


def test_newer_format(tmp_path, good_bytes):
    payload = torch.load(io.BytesIO(good_bytes), weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    assert "newer" in assert_one_line_error(tmp_path / "future.pt")


def test_wrong_architecture(tmp_path, good_bytes):
    payload = torch.load(io.BytesIO(good_bytes), weights_only=True)
    payload["model_config"]["channels"] = [4, 16]  # the stored weights are for (4, 8)
    torch.save(payload, tmp_path / "mismatch.pt")
    assert "architecture" in assert_one_line_error(tmp_path / "mismatch.pt")


def test_interrupted_write_keeps_previous_file(tmp_path, good_bytes, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(good_bytes)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed between writing the temp file and renaming it

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_model(channels=(4, 16)))
    monkeypatch.undo()
    assert path.read_bytes() == good_bytes
    assert not list(tmp_path.glob("*.tmp")), "a temp file was left behind"
    load_checkpoint(path)


def test_marked_checkpoint_with_wrong_field_types(tmp_path):
    """A file with the right marker but a nonsense step is a CheckpointError, not a crash."""
    path = tmp_path / "odd.pt"
    save_checkpoint(path, SWWAE(digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=8)))
    payload = torch.load(path, weights_only=True)
    payload["step"] = "many"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("train_config, trained", [
    (None, True),  # unknown: assume the head was trained
    ({"mode": "supervised", "lambda_nll": 1.0}, True),
    ({"mode": "semi-supervised", "lambda_nll": 0.5}, True),
    ({"mode": "unsupervised", "lambda_nll": 1.0}, False),  # the trainer forces lambda_nll to 0 in this mode
    ({"mode": "semi-supervised", "lambda_nll": 0.0}, False),
])
def test_classifier_trained_follows_the_train_config(tmp_path, train_config, trained):
    save_checkpoint(tmp_path / "model.pt", tiny_model(), train_config=train_config)
    assert load_checkpoint(tmp_path / "model.pt").classifier_trained is trained


@pytest.mark.parametrize("name, trained", [("default", True), ("ablation_hard", False), ("ablation_soft", False),
                                           ("ablation_none", False)])
def test_shipped_checkpoints_say_whether_their_head_was_trained(name, trained):
    path = Path(__file__).resolve().parents[1] / "checkpoints" / f"{name}.pt"
    assert load_checkpoint(path).classifier_trained is trained


@pytest.mark.parametrize("key, value", [("train_config", "supervised"), ("data_config", ["mnist5k"]),
                                        ("optimizer_state", 3), ("rng_state", "seed")])
def test_every_dictionary_of_a_checkpoint_is_type_checked_at_load(tmp_path, good_bytes, key, value):
    """Issue 18 item 11: such a file used to load, then crash the Layers and Attribution pages."""
    payload = torch.load(io.BytesIO(good_bytes), weights_only=True)
    payload[key] = value
    torch.save(payload, tmp_path / "odd.pt")
    message = assert_one_line_error(tmp_path / "odd.pt")
    assert key in message and "not a dictionary" in message
