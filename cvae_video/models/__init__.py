"""Model: frame encoder/decoder backbones, recurrent cells and the conditional VAE."""

from .svg import CVAE, ModelConfig

__all__ = ["CVAE", "ModelConfig"]
