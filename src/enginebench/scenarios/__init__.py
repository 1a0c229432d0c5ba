"""Scenarios: how a loaded session is driven. Each returns a Measurement of raw samples; statistics come later."""

from enginebench.scenarios.base import Measurement

SCENARIOS = ("latency", "throughput")

__all__ = ["SCENARIOS", "Measurement"]
