"""Which models the explorer pages (Layers, Swap, Attribution) can show.

The pages draw input images, reconstructions and examples as pictures: grayscale for 1 channel, RGB for 3. A
model of any other channel count trains fine (`--in-channels 2 ...`) but has no picture, so the app refuses it
at load with one line instead of failing on every page. So is a model too large to explore on this machine: its
input over MAX_VIEWABLE_SIZE pixels a side, or one image's activations over MAX_IMAGE_ACTIVATION_BYTES (every page
runs it on its example set; a 512x512 one-stage model took a minute and 10 GB on its first Layers render).

A foreign pooling network (core.model.NetworkConfig) has its own, larger limits: ImageNet classifiers take 224x224
inputs and have no decoder (VGG-16 at 224x224: about 150 MB of activations per image); the pages run them on single
images and small batches (`core.analysis.batch_size_for`).
"""
from __future__ import annotations

from core.analysis.running import activation_bytes
from core.model import CheckpointError, ModelConfig, NetworkConfig

__all__ = ["VIEWABLE_CHANNELS", "MAX_VIEWABLE_SIZE", "MAX_IMAGE_ACTIVATION_BYTES", "MAX_NETWORK_SIZE",
           "MAX_NETWORK_ACTIVATION_BYTES", "check_viewable"]

MAX_VIEWABLE_SIZE = 128  # pixels a side: the datasets are 28 to 96
MAX_IMAGE_ACTIVATION_BYTES = 64 * 2**20  # one image's activations; the explorer runs batches of its examples

MAX_NETWORK_SIZE = 512  # pixels a side, for a foreign network (ImageNet's 224 and more)
MAX_NETWORK_ACTIVATION_BYTES = 256 * 2**20  # one image's activations, for a foreign network
VIEWABLE_CHANNELS = (1, 3)  # grayscale, RGB


def check_viewable(config: ModelConfig | NetworkConfig) -> None:
    """CheckpointError (one line) unless the explorer can draw this model's images."""
    network = isinstance(config, NetworkConfig)
    max_size = MAX_NETWORK_SIZE if network else MAX_VIEWABLE_SIZE
    max_bytes = MAX_NETWORK_ACTIVATION_BYTES if network else MAX_IMAGE_ACTIVATION_BYTES
    if config.in_channels not in VIEWABLE_CHANNELS:
        raise CheckpointError(f"a {config.in_channels}-channel model cannot be shown: the explorer draws only "
                              "1-channel (grayscale) and 3-channel (RGB) models")
    if config.image_size > max_size:
        raise CheckpointError(f"a {config.image_size}x{config.image_size}-input model is larger than the explorer "
                              f"shows on this machine (at most {max_size}x{max_size})")
    needed = activation_bytes(config)
    if needed > max_bytes:
        raise CheckpointError(f"this model needs {needed / 2**20:.0f} MB of activations per image, more than the "
                              f"explorer's {max_bytes / 2**20:.0f} MB")
