"""Which models the explorer pages (Layers, Swap, Attribution) can show.

The pages draw input images, reconstructions and examples as pictures: grayscale for 1 channel, RGB for 3. A
model of any other channel count trains fine (`--in-channels 2 ...`) but has no picture, so the app refuses it
at load with one line instead of failing on every page. So is a model too large to explore on this machine: its
input over MAX_VIEWABLE_SIZE pixels a side, or one image's activations over MAX_IMAGE_ACTIVATION_BYTES (every page
runs it on its example set; a 512x512 one-stage model took a minute and 10 GB on its first Layers render).
"""
from __future__ import annotations

from core.analysis.running import activation_bytes
from core.model import CheckpointError, ModelConfig

__all__ = ["VIEWABLE_CHANNELS", "MAX_VIEWABLE_SIZE", "MAX_IMAGE_ACTIVATION_BYTES", "check_viewable"]

MAX_VIEWABLE_SIZE = 128  # pixels a side: the datasets are 28 to 96
MAX_IMAGE_ACTIVATION_BYTES = 64 * 2**20  # one image's activations; the explorer runs batches of its examples

VIEWABLE_CHANNELS = (1, 3)  # grayscale, RGB


def check_viewable(config: ModelConfig) -> None:
    """CheckpointError (one line) unless the explorer can draw this model's images."""
    if config.in_channels not in VIEWABLE_CHANNELS:
        raise CheckpointError(f"a {config.in_channels}-channel model cannot be shown: the explorer draws only "
                              "1-channel (grayscale) and 3-channel (RGB) models")
    if config.image_size > MAX_VIEWABLE_SIZE:
        raise CheckpointError(f"a {config.image_size}x{config.image_size}-input model is larger than the explorer "
                              f"shows on this machine (at most {MAX_VIEWABLE_SIZE}x{MAX_VIEWABLE_SIZE})")
    needed = activation_bytes(config)
    if needed > MAX_IMAGE_ACTIVATION_BYTES:
        raise CheckpointError(f"this model needs {needed / 2**20:.0f} MB of activations per image, more than the "
                              f"explorer's {MAX_IMAGE_ACTIVATION_BYTES / 2**20:.0f} MB")
