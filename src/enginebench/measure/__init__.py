"""Measurement: the clock and stopping rule, statistics, verdicts, memory, fidelity and machine info."""
