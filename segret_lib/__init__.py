"""A-STAR (attention segregation and retention) for Stable Diffusion, WebUI-free core."""

__version__ = "0.1.0"
