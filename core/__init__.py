"""SWWAE Explorer core: a PyTorch library for Stacked What-Where Auto-encoders (arXiv:1506.02351)."""
from core.model import SWWAE, Decoding, Encoding, ModelConfig, digits_config, rgb32_config

__all__ = ["SWWAE", "Decoding", "Encoding", "ModelConfig", "digits_config", "rgb32_config"]
