"""genlab: a config-driven experiment runner for generative models and autoencoders."""

__version__ = "0.1.0"
