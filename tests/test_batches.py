"""Semi-supervised batches with a fixed labeled/unlabeled mix."""
import pytest
import torch

from core.data import DeviceBatches


def test_labeled_per_batch_mixes_every_batch_and_cycles_the_labeled_pool():
    images = torch.arange(40.0).view(40, 1, 1, 1)  # image value = its index, to trace samples
    labels = torch.full((40,), -1)
    labels[[3, 17, 29]] = torch.tensor([0, 1, 2])
    batches = DeviceBatches(images, labels, batch_size=8, seed=0, labeled_per_batch=2)
    seen = []
    for batch_images, batch_labels in batches.epoch(0):
        index = batch_images.flatten().long()
        assert batch_labels[:2].tolist() == labels[index[:2]].tolist()  # labeled part keeps true labels
        assert set(index[:2].tolist()) <= {3, 17, 29}
        assert torch.all(batch_labels[2:] == -1)  # the rest is unlabeled, whatever it was
        seen += index[:2].tolist()
    assert len(seen) == 5 * 2 and set(seen) == {3, 17, 29}  # 40 // 8 steps, each labeled sample visited
    # a resumed epoch replays the same batches
    replay = [b.flatten().tolist() for b, _ in batches.epoch(0, start_step=3)]
    full = [b.flatten().tolist() for b, _ in batches.epoch(0)]
    assert replay == full[3:]


def test_labeled_per_batch_is_checked():
    with pytest.raises(ValueError, match="labeled_per_batch"):
        DeviceBatches(torch.zeros(10, 1, 1, 1), torch.full((10,), -1), batch_size=4, seed=0, labeled_per_batch=2)
    with pytest.raises(ValueError, match="1..batch_size"):
        DeviceBatches(torch.zeros(10, 1, 1, 1), torch.zeros(10, dtype=torch.long), batch_size=4, seed=0,
                      labeled_per_batch=5)
