"""The encoder (pure Flax NNX: no torch, no I/O)."""

from nforge_jax.model.config import ConfigError, EncoderConfig, MlpSpec
from nforge_jax.model.encoder import FmriEncoder

__all__ = ["ConfigError", "EncoderConfig", "FmriEncoder", "MlpSpec"]
