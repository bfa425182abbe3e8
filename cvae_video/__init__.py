"""cvae_video: action-conditioned stochastic video prediction (SVG-style conditional VAE)."""

__version__ = "0.1.0"
