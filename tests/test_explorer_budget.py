"""The explorer's work is budgeted by the model's activation size (issue 18 item 3): batches derived from a memory
budget instead of fixed counts, and a model too large to explore refused at load in one line."""
import pytest
import torch

from core.analysis import (MAX_IMAGE_ACTIVATION_BYTES, activation_bytes, batch_size_for, channel_peaks,
                           check_viewable)
from core.model import SWWAE, CheckpointError, ModelConfig, digits_config


def test_batches_follow_the_activation_budget_and_give_the_same_peaks():
    model = SWWAE(digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)).eval()
    images = torch.rand(37, 1, 28, 28)
    reference = channel_peaks(model, images, batch_size=37)  # one batch
    budgeted = channel_peaks(model, images, batch_size=batch_size_for(model.config, 5 * activation_bytes(model.config)))
    assert batch_size_for(model.config, 5 * activation_bytes(model.config)) == 5
    assert all(torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-6) for a, b in zip(reference, budgeted))
    big = ModelConfig(image_size=96, channels=(64,), kernel_sizes=(3,), pool_sizes=(2,))
    assert batch_size_for(big) < batch_size_for(digits_config())  # larger inputs, smaller batches


@pytest.mark.parametrize("config, reason", [
    (ModelConfig(image_size=512, channels=(32,), kernel_sizes=(3,), pool_sizes=(2,)), "larger than the explorer"),
    (ModelConfig(image_size=128, channels=(512,), kernel_sizes=(3,), pool_sizes=(2,)), "MB of activations"),
])
def test_a_model_too_large_to_explore_is_refused_at_load_in_one_line(config, reason):
    with pytest.raises(CheckpointError, match=reason) as caught:
        check_viewable(config)
    assert "\n" not in str(caught.value)


def test_the_shipped_architectures_are_explorable():
    for config in (digits_config(), digits_config(convs_per_stage=2)):
        check_viewable(config)
        assert activation_bytes(config) < MAX_IMAGE_ACTIVATION_BYTES
