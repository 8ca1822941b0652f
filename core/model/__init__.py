"""The network layer: what-where pooling (hard, soft, none), the SWWAE and its config, its loss, and the checkpoint
format that stores a model with its configs. Imports torch only: nothing else of core/.
"""
from __future__ import annotations

from core.model.pooling import POOLING_MODES, pool, unpool, soft_pool, soft_unpool, where_offsets
from core.model.fields import check_field_types
from core.model.swwae import ModelConfig, SWWAE, Encoding, Decoding, digits_config, rgb32_config
from core.model.losses import UNLABELED, swwae_loss
from core.model.checkpoint import (
    FORMAT, FORMAT_VERSION, CheckpointError, Checkpoint, save_checkpoint, load_checkpoint, atomic_write_bytes,
)

__all__ = [
    "POOLING_MODES", "pool", "unpool", "soft_pool", "soft_unpool", "where_offsets", "check_field_types",
    "ModelConfig", "SWWAE", "Encoding", "Decoding", "digits_config", "rgb32_config", "UNLABELED", "swwae_loss",
    "FORMAT", "FORMAT_VERSION", "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint",
    "atomic_write_bytes",
]
from core.model.network import NetworkError, NetworkConfig, PoolingNetwork

__all__ += ["NetworkError", "NetworkConfig", "PoolingNetwork"]
