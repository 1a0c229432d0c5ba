"""Scenarios: how a loaded session is driven. Each returns a Measurement of raw samples; statistics come later."""

from enginebench.scenarios.base import Measurement

SCENARIOS = ("latency", "throughput")  # encoders
DECODER_SCENARIOS = ("generate",)  # decoders (LLMs): prefill and decode tokens/s

__all__ = ["SCENARIOS", "DECODER_SCENARIOS", "Measurement"]
