"""MNIST-format datasets from IDX files: the reader against files written here (gzipped and plain, every way of being
broken), every place the files are looked for, the three splits' rules, uint8 storage, the cache, the test split
kept out of training, and (where Debian's package is installed) the real Fashion-MNIST files."""
import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import core.data.idx as idx_module
from core.data import (CLASS_NAMES, DataConfig, IdxError, class_names, find_idx, holdout, load_split, open_split,
                       read_idx)
from core.data import datasets as datasets_module
from core.data import sources as sources_module
from core.model import digits_config
from core.training import TrainConfig, train
from core.training.loop import _make_batches
from core.training.distributed import DistContext

REPO = Path(__file__).resolve().parents[1]
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def tiny_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random 28x28 images with balanced labels 0..9 (count a multiple of 10)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), np.tile(np.arange(10, dtype=np.uint8), count // 10)


def write_dataset(folder: Path, *, gz: bool, train_count: int = 200, test_count: int = 50) -> dict:
    splits = {"train": tiny_split(train_count, 1), "test": tiny_split(test_count, 2)}
    for split, (images, labels) in splits.items():
        prefix = "t10k" if split == "test" else "train"
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return splits


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Look only where the test puts files (this machine may have Debian's package installed)."""
    monkeypatch.setattr(idx_module, "SYSTEM_DIRS", {})


@pytest.fixture
def small_holdout(monkeypatch):
    monkeypatch.setitem(datasets_module.VAL_HOLDOUT, "fashion-mnist", 20)  # of the 200 written: 10%


# ---- the reader --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_gzipped_and_plain_files(tmp_path, gz):
    images, labels = tiny_split(30, 0)
    assert np.array_equal(read_idx(write_idx(tmp_path / "images", images, gz=gz)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "labels", labels, gz=gz)), labels)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("damage, expected", [
    (lambda data: data[:-7], "truncated"),
    (lambda data: data[:10], "truncated"),
    (lambda data: b"\x01\x02" + data[2:], "not an IDX file"),
    (lambda data: data[:2] + b"\x0d" + data[3:], "expected unsigned bytes"),
    (lambda data: data + b"\x00", "more bytes"),
    (lambda data: b"", "truncated"),
])
def test_read_idx_refuses_a_broken_file_in_one_line_naming_it(tmp_path, gz, damage, expected):
    path = tmp_path / ("broken.gz" if gz else "broken")
    data = damage(idx_bytes(tiny_split(10, 0)[0]))
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IdxError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_read_idx_refuses_a_corrupt_gzip_stream_and_a_header_asking_for_too_much(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(tiny_split(10, 0)[0])))
    packed[len(packed) // 2] ^= 0xFF
    (tmp_path / "corrupt.gz").write_bytes(bytes(packed))
    with pytest.raises(IdxError, match="corrupt.gz"):
        read_idx(tmp_path / "corrupt.gz")
    huge = bytes([0, 0, 8, 3]) + struct.pack(">III", 100_000, 100_000, 100_000)
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(IdxError, match="more than this program reads"):
        read_idx(tmp_path / "huge")


def test_labels_that_do_not_match_the_images_are_refused(tmp_path, no_system_dirs):
    write_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(49, dtype=np.uint8), gz=False)
    with pytest.raises(IdxError, match="49 labels for the 50 images"):
        load_split(DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False), "test")


# ---- where the files are found -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["torchvision", "plain folder"])
@pytest.mark.parametrize("gz", [False, True])
def test_every_layout_loads_the_same_images(tmp_path, layout, gz, no_system_dirs, small_holdout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    written = write_dataset(folder, gz=gz)
    config = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False)
    test_images, test_labels = load_split(config, "test")
    assert torch.equal(test_images, torch.from_numpy(written["test"][0])[:, None].float() / 255)
    assert torch.equal(test_labels, torch.from_numpy(written["test"][1]).long())
    train_subset, val_subset = open_split(config, "train"), open_split(config, "val")
    rows = torch.cat([train_subset.index, val_subset.index]).sort().values
    assert torch.equal(rows, torch.arange(200))  # train + val = the official training set, each row once


def test_the_system_folder_is_used_when_the_data_dir_has_nothing(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_dataset(system, gz=True)
    monkeypatch.setattr(idx_module, "SYSTEM_DIRS", {"fashion-mnist": (system,)})
    assert find_idx("fashion-mnist", "train", tmp_path / "empty") == (
        system / "train-images-idx3-ubyte.gz", system / "train-labels-idx1-ubyte.gz")
    write_dataset(tmp_path / "data", gz=False)  # the data dir comes first when it has the files
    assert find_idx("fashion-mnist", "train", tmp_path / "data")[0] == tmp_path / "data" / "train-images-idx3-ubyte"


def test_missing_files_say_where_they_were_looked_for_and_how_to_get_them(tmp_path, no_system_dirs):
    with pytest.raises(ValueError) as caught:
        load_split(DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False), "train")
    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path) in message and "\n" not in message
    assert sources_module.missing_files("fashion-mnist", str(tmp_path)) is not None
    write_dataset(tmp_path, gz=True)
    assert sources_module.missing_files("fashion-mnist", str(tmp_path)) is None


def test_a_corrupt_file_is_one_error_line_from_the_command_line(tmp_path):
    write_dataset(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(tiny_split(200, 1)[0])[:-100])
    done = subprocess.run([sys.executable, "-m", "core.train", "--dataset", "fashion-mnist", "--data-dir",
                           str(tmp_path), "--no-download", "--run", str(tmp_path / "run"), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: ") and "truncated" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# ---- splits --------------------------------------------------------------------------------------------------------

def test_the_holdout_is_5000_images_of_a_full_set_and_10_percent_of_a_small_one():
    assert datasets_module._holdout_size("fashion-mnist", 60_000) == 5_000
    assert datasets_module._holdout_size("mnist", 1_000) == 100 and datasets_module._holdout_size("cifar10", 50_000) == 5_000


def test_holdout_is_disjoint_class_balanced_and_the_same_every_time():
    labels = torch.arange(10).repeat_interleave(torch.tensor([600, 500, 700, 600, 600, 600, 400, 600, 600, 800]))
    kept, held = holdout(labels, 600, seed=0)
    assert len(set(kept.tolist()) & set(held.tolist())) == 0 and len(kept) + len(held) == len(labels)
    per_class = torch.bincount(labels[held], minlength=10)
    assert per_class.sum() == 600 and torch.equal(per_class, torch.bincount(labels, minlength=10) // 10)
    again_kept, again_held = holdout(labels, 600, seed=0)
    assert torch.equal(held, again_held) and torch.equal(kept, again_kept)
    assert not torch.equal(holdout(labels, 600, seed=1)[1], held)


def test_the_validation_split_is_held_out_of_training_and_the_test_split_is_the_official_one(
        tmp_path, no_system_dirs, small_holdout):
    written = write_dataset(tmp_path, gz=True)
    config = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False)
    train_subset, val_subset = open_split(config, "train"), open_split(config, "val")
    assert len(val_subset) == 20 and len(train_subset) == 180
    assert torch.equal(torch.bincount(val_subset.labels, minlength=10), torch.full((10,), 2))
    assert not set(train_subset.index.tolist()) & set(val_subset.index.tolist())
    val_images, _ = load_split(config, "val")
    assert torch.equal(val_images, torch.from_numpy(written["train"][0][val_subset.index.numpy()])[:, None] / 255)


def test_training_never_opens_the_test_split_unless_asked(tmp_path, no_system_dirs, small_holdout, monkeypatch):
    write_dataset(tmp_path, gz=True)
    opened = []
    real = sources_module.official_split
    monkeypatch.setattr(datasets_module, "official_split",
                        lambda name, which, **kw: opened.append(which) or real(name, which, **kw))
    data = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False)
    train_config = TrainConfig(epochs=2, batch_size=32, log_every=5, device="cpu", samples=4)
    model_config = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
    result = train(model_config, train_config, data, run_dir=tmp_path / "run")
    assert "test" not in opened and not result.test_eval
    assert "test" not in json.loads((tmp_path / "run" / "status.json").read_text())
    opened.clear()
    result = train(model_config, train_config, data, run_dir=tmp_path / "run2", test=True)
    assert opened.count("test") == 1 and result.test_eval["images"] == 50
    assert json.loads((tmp_path / "run2" / "status.json").read_text())["test"]["accuracy"] == result.test_eval["accuracy"]


def test_idx_images_are_held_as_bytes_and_batched_as_the_same_floats(tmp_path, no_system_dirs, small_holdout):
    written = write_dataset(tmp_path, gz=False)
    data = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False)
    batches = _make_batches(data, digits_config(), TrainConfig(batch_size=16), "train", ddp=DistContext(),
                            device=torch.device("cpu"))
    assert batches.images.dtype == torch.uint8 and batches.images.shape == (180, 1, 28, 28)
    images, _ = next(batches.epoch(0))
    assert images.dtype == torch.float32
    rows = open_split(data, "train").index
    reference = torch.from_numpy(written["train"][0][rows.numpy()])[:, None].float() / 255  # (180, 1, 28, 28)
    assert any(torch.equal(images[0], image) for image in reference)


def test_a_loaded_split_is_read_once_per_process(tmp_path, no_system_dirs):
    write_dataset(tmp_path, gz=True)
    first = sources_module.official_split("fashion-mnist", "train", data_dir=str(tmp_path), download=False)
    second = sources_module.official_split("fashion-mnist", "train", data_dir=str(tmp_path), download=False)
    assert first.data is second.data  # the cache's tensor, not a second read


def test_class_names_follow_the_dataset():
    assert class_names("fashion-mnist", 10)[7] == "Sneaker" and class_names("mnist5k", 10)[3] == "3"
    assert class_names("fashion-mnist", 4) == ("0", "1", "2", "3")  # a model that does not fit the names
    assert class_names(None, 3) == ("0", "1", "2") and len(CLASS_NAMES["cifar10"]) == 10


# ---- the real files, where Debian's package put them ---------------------------------------------------------------

@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="Fashion-MNIST is not installed here "
                    "(apt-get install dataset-fashion-mnist puts it in /usr/share/datasets/fashion-mnist)")
def test_the_installed_fashion_mnist_files_read_in_full():
    config = DataConfig(dataset="fashion-mnist", data_dir="/nonexistent", download=False)
    train_subset, val_subset, test_subset = (open_split(config, split) for split in ("train", "val", "test"))
    assert (len(train_subset), len(val_subset), len(test_subset)) == (55_000, 5_000, 10_000)
    official = torch.cat([train_subset.labels, val_subset.labels])
    assert torch.equal(torch.bincount(official), torch.full((10,), 6_000))
    assert torch.equal(torch.bincount(val_subset.labels), torch.full((10,), 500))
    assert torch.equal(torch.bincount(test_subset.labels), torch.full((10,), 1_000))
    assert train_subset.base.data.dtype == torch.uint8 and train_subset.base.data.shape == (60_000, 28, 28)
