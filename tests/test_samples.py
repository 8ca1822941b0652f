"""The reconstruction sample strip: `one_per_class` against a plain round-robin written independently, and a short
training run whose samples PNG, read back pixel by pixel, shows one validation digit of each class in class order."""
import numpy as np
import torch
from PIL import Image

from core.training import rundir
from core.data import DataConfig, load_split, one_per_class
from core.model import UNLABELED
from core.model import digits_config
from core.training import TrainConfig, train

TINY_MODEL = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
GRID_PADDING = 2  # torchvision make_grid's default, as rundir.write_samples uses it


def round_robin(labels: list[int], count: int) -> list[int]:
    """Reference: deal rows out of per-class queues, lowest class first, one per class per round; then unlabeled."""
    queues = {c: [i for i, label in enumerate(labels) if label == c] for c in sorted(set(labels) - {UNLABELED})}
    dealt = []
    while any(queues.values()):
        for c in sorted(queues):
            if queues[c]:
                dealt.append(queues[c].pop(0))
    dealt += [i for i, label in enumerate(labels) if label == UNLABELED]
    return dealt[:count]


def test_class_sorted_split_gives_one_row_of_each_class_in_class_order():
    _, labels = load_split(DataConfig(dataset="mnist5k"), "val")
    assert labels.tolist() == sorted(labels.tolist())  # the reason for all this: the split is sorted by class
    rows = one_per_class(labels, 8)
    assert labels[rows].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert rows.tolist() == [int(torch.nonzero(labels == c)[0]) for c in range(8)]  # each class's first row


def test_more_samples_than_classes_cycles_through_the_classes_again():
    labels = torch.tensor([2, 2, 0, 0, 0, 1, 2])
    assert one_per_class(labels, 6).tolist() == [2, 5, 0, 3, 1, 4]  # classes 0 1 2, then 0 _ 2 (1 ran out), then 0
    assert labels[one_per_class(labels, 5)].tolist() == [0, 1, 2, 0, 2]


def test_unlabeled_rows_come_after_labeled_ones_and_an_unlabeled_split_keeps_its_order():
    assert one_per_class(torch.full((10,), UNLABELED), 4).tolist() == [0, 1, 2, 3]
    assert one_per_class(torch.tensor([UNLABELED, 3, UNLABELED, 3, 1]), 5).tolist() == [4, 1, 3, 0, 2]


def test_count_beyond_the_rows_or_zero():
    labels = torch.tensor([1, 0, 1])
    assert one_per_class(labels, 100).tolist() == [1, 0, 2]
    assert one_per_class(labels, 0).tolist() == []
    assert one_per_class(torch.zeros(0, dtype=torch.long), 8).tolist() == []


def test_matches_the_round_robin_reference_on_random_labels():
    generator = torch.Generator().manual_seed(0)
    for trial in range(50):
        size = int(torch.randint(0, 40, (1,), generator=generator))
        classes = int(torch.randint(1, 12, (1,), generator=generator))
        labels = torch.randint(-1, classes, (size,), generator=generator)  # -1 = unlabeled mixed in
        count = int(torch.randint(0, 50, (1,), generator=generator))
        assert one_per_class(labels, count).tolist() == round_robin(labels.tolist(), count), (trial, labels, count)


def strip_tiles(png_path, count: int, side: int) -> np.ndarray:
    """The top row of a samples PNG (validation images over reconstructions) as (count, side, side) bytes."""
    pixels = np.asarray(Image.open(png_path).convert("L"))  # (H', W')
    step = side + GRID_PADDING
    return np.stack([pixels[GRID_PADDING:GRID_PADDING + side, GRID_PADDING + i * step:GRID_PADDING + i * step + side]
                     for i in range(count)])


def test_short_run_samples_show_one_validation_digit_of_each_class(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only add overhead on a shared CPU
    try:
        data = DataConfig(max_train=64)  # the whole validation split (500 digits, sorted by class)
        train(TINY_MODEL, TrainConfig(epochs=1, max_steps=1, batch_size=32, device="cpu", samples=8),
              data, run_dir=tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    [png] = rundir.list_samples(tmp_path / "run")
    tiles = strip_tiles(png, 8, 28).astype(np.int16)  # (8, 28, 28)
    images, labels = load_split(data, "val")
    val_bytes = images.mul(255).round().squeeze(1).numpy().astype(np.int16)  # (500, 28, 28), as make_grid wrote them
    shown = [int(np.abs(val_bytes - tile).sum(axis=(1, 2)).argmin()) for tile in tiles]
    assert all(np.array_equal(val_bytes[row], tile) for row, tile in zip(shown, tiles)), "a tile is no validation image"
    assert labels[shown].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
