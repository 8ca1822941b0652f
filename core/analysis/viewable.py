"""Which models the explorer pages (Layers, Swap, Attribution) can show.

The pages draw input images, reconstructions and examples as pictures: grayscale for 1 channel, RGB for 3. A
model of any other channel count trains fine (`--in-channels 2 ...`) but has no picture, so the app refuses it
at load with one line instead of failing on every page.
"""
from __future__ import annotations

from core.model import CheckpointError
from core.model import ModelConfig

__all__ = ["VIEWABLE_CHANNELS", "check_viewable"]

VIEWABLE_CHANNELS = (1, 3)  # grayscale, RGB


def check_viewable(config: ModelConfig) -> None:
    """CheckpointError (one line) unless the explorer can draw this model's images."""
    if config.in_channels not in VIEWABLE_CHANNELS:
        raise CheckpointError(f"a {config.in_channels}-channel model cannot be shown: the explorer draws only "
                              "1-channel (grayscale) and 3-channel (RGB) models")
