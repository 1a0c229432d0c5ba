"""Single operators as a registered scenario: `enginebench ops` plans and times them itself (runner.py, one
process per engine); the registry knows them so that stored operator results find their own table."""

from __future__ import annotations

from enginebench.scenarios.base import CellRun, Grid, Measurement, Scenario


class Operators(Scenario):
    name = "op"
    model_kinds = ()  # not a `run --scenario`: `enginebench ops` runs it

    def cells(self, grid: Grid, settings=None) -> list:
        return []

    def measure(self, run: CellRun) -> Measurement:
        raise NotImplementedError("operators are timed by `enginebench ops` (scenarios/ops/runner.py)")

    def table(self, result) -> str:
        return "operators"


__all__ = ["Operators"]
