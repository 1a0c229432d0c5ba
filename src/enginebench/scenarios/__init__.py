"""Scenarios: how a loaded session is driven. Each returns a Measurement of raw samples; statistics come later."""

from enginebench.scenarios.base import Measurement

SCENARIOS = ("latency", "throughput")  # encoders, run by default
SERVING = ("server", "offline")  # encoders, driven by MLPerf LoadGen (the loadgen extra): asked for by name
DECODER_SCENARIOS = ("generate",)  # decoders (LLMs): prefill and decode tokens/s

__all__ = ["SCENARIOS", "SERVING", "DECODER_SCENARIOS", "Measurement"]
