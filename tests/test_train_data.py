"""Datasets through the real code paths, offline: synthetic IDX files in torchvision's layout, an image folder,
the semi-supervised label split, on-device batching and the shift augmentation."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.data import DeviceBatches, StreamBatches, epoch_order, random_shift
from core.data import DataConfig, DatasetUnavailable, keep_labels, load_split, open_split
from core.model import UNLABELED
from core.runs.cli import main
from core.training import TrainConfig, train
from tests.test_idx_data import write_idx
from core.model import digits_config

TRAIN_COUNT, TEST_COUNT = 40, 20


@pytest.fixture
def idx_root(tmp_path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """MNIST and FashionMNIST as torchvision expects them: <root>/<Name>/raw/<split>-images-idx3-ubyte etc."""
    rng = np.random.default_rng(0)
    arrays = {}
    for folder in ("MNIST", "FashionMNIST"):
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        for split, count in (("train", TRAIN_COUNT), ("t10k", TEST_COUNT)):
            images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
            labels = (np.arange(count) % 10).astype(np.uint8)
            write_idx(raw / f"{split}-images-idx3-ubyte", images, gz=False)
            write_idx(raw / f"{split}-labels-idx1-ubyte", labels, gz=False)
            arrays[f"{folder}/{split}"] = (images, labels)
    return tmp_path, arrays


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_idx_files_load_offline(idx_root, dataset, folder):
    root, arrays = idx_root
    config = DataConfig(dataset=dataset, data_dir=str(root), download=False)
    images, labels = load_split(config, "test")  # the official test split, as written
    expected_images, expected_labels = arrays[f"{folder}/t10k"]
    assert images.shape == (len(expected_labels), 1, 28, 28) and images.dtype == torch.float32
    assert torch.equal(images[:, 0], torch.from_numpy(expected_images).float() / 255)
    assert torch.equal(labels, torch.from_numpy(expected_labels).long())
    expected_images, expected_labels = arrays[f"{folder}/train"]  # train + val: the official training set
    rows = {split: open_split(config, split).index for split in ("train", "val")}
    assert len(rows["val"]) == TRAIN_COUNT // 10 and sorted(torch.cat(list(rows.values())).tolist()) == list(range(TRAIN_COUNT))
    for split in ("train", "val"):
        images, labels = load_split(config, split)
        assert torch.equal(images[:, 0], torch.from_numpy(expected_images[rows[split].numpy()]).float() / 255)
        assert torch.equal(labels, torch.from_numpy(expected_labels[rows[split].numpy()]).long())
    # the streamed path (one image at a time) agrees with the in-memory one
    lazy = open_split(config, "test")
    assert torch.equal(lazy[3][0], load_split(config, "test")[0][3]) and lazy[3][1] == 3


def test_conversion_to_the_model_shape(idx_root):
    root, arrays = idx_root
    config = DataConfig(dataset="mnist", data_dir=str(root), download=False)
    images, _ = load_split(config, "test", channels=3, image_size=32)
    assert images.shape == (TEST_COUNT, 3, 32, 32)
    assert torch.equal(images[:, 0], images[:, 2])  # gray copied to every channel
    gray = torch.from_numpy(arrays["MNIST/t10k"][0]).float()[:, None] / 255
    reference = F.interpolate(gray, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.allclose(images[:, :1], reference, atol=1e-6)


def test_trains_on_torchvision_files(idx_root, tmp_path):
    root, _ = idx_root
    model = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
    result = train(model, TrainConfig(epochs=1, batch_size=8, device="cpu", samples=2),
                   DataConfig(dataset="mnist", data_dir=str(root), download=False), run_dir=tmp_path / "run")
    assert result.state == "finished" and result.step == (TRAIN_COUNT - TRAIN_COUNT // 10) // 8  # less the hold-out


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "svhn"])
def test_missing_files_give_one_clear_error(tmp_path, dataset):
    with pytest.raises(DatasetUnavailable) as info:
        load_split(DataConfig(dataset=dataset, data_dir=str(tmp_path / "empty"), download=False), "train")
    message = str(info.value)
    assert "\n" not in message and "mnist5k" in message and str(tmp_path / "empty") in message


def test_missing_files_on_the_command_line(tmp_path, capsys):
    code = main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--no-download", "--run", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: dataset 'cifar10'") and err.count("\n") == 1
    assert "Traceback" not in err


def test_image_folder_converted_to_model_channels_and_size(tmp_path):
    colours = {"red": (255, 0, 0), "green": (0, 255, 0)}
    for name, rgb in colours.items():
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i, size in enumerate([(40, 30), (17, 50), (64, 64), (20, 20), (33, 12)]):
            Image.new("RGB", size, rgb).save(tmp_path / "pics" / name / f"{i}.png")
    config = DataConfig(dataset=f"folder:{tmp_path / 'pics'}")
    train_images, train_labels = load_split(config, "train", channels=1, image_size=28)
    val_images, val_labels = load_split(config, "val", channels=1, image_size=28)
    assert len(train_labels) + len(val_labels) == 10 and len(val_labels) >= 1
    images, labels = torch.cat([train_images, val_images]), torch.cat([train_labels, val_labels])
    assert images.shape == (10, 1, 28, 28)
    luma = {0: 0.587, 1: 0.299}  # ImageFolder sorts classes: green = 0, red = 1; ITU-R 601 weights
    for image, label in zip(images, labels.tolist()):
        assert torch.allclose(image, torch.full_like(image, luma[label]), atol=1e-5)
    with pytest.raises(DatasetUnavailable):
        load_split(DataConfig(dataset=f"folder:{tmp_path / 'nope'}"), "train")


def test_keep_labels_is_balanced_seeded_and_exact():
    labels = torch.arange(1000) % 10
    kept = keep_labels(labels, 100, seed=3)
    assert (kept != UNLABELED).sum() == 100
    assert torch.equal(torch.bincount(kept[kept != UNLABELED], minlength=10), torch.full((10,), 10))
    assert torch.equal(kept[kept != UNLABELED], labels[kept != UNLABELED])  # kept labels are the true ones
    assert torch.equal(kept, keep_labels(labels, 100, seed=3))
    assert not torch.equal(kept, keep_labels(labels, 100, seed=4))
    odd = keep_labels(labels, 13, seed=0)
    counts = torch.bincount(odd[odd != UNLABELED], minlength=10)
    assert counts.sum() == 13 and counts.max() - counts.min() <= 1
    assert torch.equal(keep_labels(labels, -1, seed=0), labels)


def test_mnist5k_semi_supervised_split():
    images, labels = load_split(DataConfig(labels=100, label_seed=1), "train")
    assert images.shape == (4500, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(torch.bincount(labels[labels != UNLABELED]), torch.full((10,), 10))
    val_images, val_labels = load_split(DataConfig(labels=100), "val")
    assert len(val_labels) == 500 and (val_labels != UNLABELED).all()  # validation keeps every label


def test_epoch_order_shards_without_overlap_and_repeats_per_epoch():
    shards = [epoch_order(103, epoch=2, seed=5, rank=r, world_size=2, batch_size=10) for r in range(2)]
    assert all(len(s) == 50 for s in shards)  # 51 per rank -> 5 full batches each
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(shards[0], epoch_order(103, epoch=2, seed=5, rank=0, world_size=2, batch_size=10))
    assert not torch.equal(shards[0], epoch_order(103, epoch=3, seed=5, rank=0, world_size=2, batch_size=10))


def test_device_and_stream_batches_give_the_same_batches():
    images, labels = torch.rand(50, 1, 6, 6), torch.arange(50)
    common = dict(batch_size=8, seed=1, rank=1, world_size=2)
    on_device = list(DeviceBatches(images, labels, **common).epoch(4, start_step=1))
    streamed = list(StreamBatches(torch.utils.data.TensorDataset(images, labels), workers=0, **common).epoch(4, start_step=1))
    assert len(on_device) == len(streamed) == 2  # 25 per rank -> 3 batches, resumed from the second
    for (a, la), (b, lb) in zip(on_device, streamed):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(a, images[la])


def test_random_shift_matches_a_per_image_reference():
    images = torch.rand(6, 2, 9, 9)
    max_shift = 3
    shifted = random_shift(images, max_shift, torch.Generator().manual_seed(7))
    offsets = torch.randint(0, 2 * max_shift + 1, (6, 2), generator=torch.Generator().manual_seed(7))
    for image, out, (dy, dx) in zip(images, shifted, offsets.tolist()):
        padded = F.pad(image, (max_shift,) * 4)
        assert torch.equal(out, padded[:, dy:dy + 9, dx:dx + 9])
    assert random_shift(images, 0, torch.Generator()) is images
