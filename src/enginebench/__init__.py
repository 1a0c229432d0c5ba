"""enginebench: benchmark ML inference engines side by side on real models."""

__version__ = "0.1.0"
