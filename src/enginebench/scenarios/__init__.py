"""Scenarios: how a loaded session is driven. Each is a class registered by name (registry.py) that keeps the
contract in base.py; each returns a Measurement of raw samples, statistics come later."""

from enginebench.scenarios.base import Measurement, Scenario
from enginebench.scenarios.registry import default_scenarios, known_scenarios, runnable_scenarios, scenario_class

__all__ = ["Measurement", "Scenario", "scenario_class", "known_scenarios", "runnable_scenarios", "default_scenarios"]
