"""The scenario registry: name -> "module:Class". Adding a scenario is one module plus one line here.

Modules are imported when a scenario is first asked for, as engines are, so that reading the registry costs
nothing and a scenario module may use the plan's types."""

from __future__ import annotations

import importlib
from functools import cache

from enginebench.errors import UsageError
from enginebench.scenarios.base import Scenario

REGISTRY: dict[str, str] = {
    "latency": "enginebench.scenarios.latency:Latency",
    "throughput": "enginebench.scenarios.throughput:Throughput",
    "server": "enginebench.scenarios.serving:Server",
    "offline": "enginebench.scenarios.serving:Offline",
    "generate": "enginebench.scenarios.generate:Generate",
    "concurrency": "enginebench.scenarios.concurrency:Concurrency",
    "op": "enginebench.scenarios.ops.scenario:Operators",
    "blocks": "enginebench.scenarios.blocks:Blocks",
}


def known_scenarios() -> list[str]:
    return list(REGISTRY)


@cache
def scenario_class(name: str) -> Scenario:
    """The scenario registered under `name` (an instance: scenarios hold no state)."""
    if name not in REGISTRY:
        raise UsageError(f"unknown scenario {name!r}: use one of {', '.join(runnable_scenarios())}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def table_of(result) -> str:
    """Which table a stored result belongs to (scenarios/base.py TABLES); a scenario this version does not
    know (a newer plugin's) is shown with the encoders."""
    return scenario_class(result.scenario).table(result) if result.scenario in REGISTRY else "encoders"


def in_table(results, table: str) -> list:
    """The results that `table` (one of scenarios/base.py TABLES) shows, in their order."""
    return [r for r in results if table_of(r) == table]


def settings_label(scenario: str, settings: dict | None) -> str:
    """A result's or a cell's own settings in a few words (`4 clients`); empty when it has none."""
    if not settings or scenario not in REGISTRY:
        return ""
    return scenario_class(scenario).settings_from_dict(settings).label()


def scenario_options() -> dict[str, tuple[str, object]]:
    """Every run option a scenario adds: option name -> (the scenario's name, its Option)."""
    return {o.name: (name, o) for name in REGISTRY for o in scenario_class(name).options}


def add_scenario_arguments(run_parser) -> None:
    """The options scenarios add (Scenario.options): each scenario's own group."""
    groups = {}
    for name, (scenario, option) in scenario_options().items():
        if scenario not in groups:
            groups[scenario] = run_parser.add_argument_group(f"{scenario} (--scenario {scenario})")
        groups[scenario].add_argument(option.flag, dest=name, metavar=option.metavar, help=option.help,
                                      **(dict(action="append", default=None) if option.many else {}))


def scenario_option_values(args) -> dict:
    """The scenario options given on the command line: {name: value}."""
    return {name: getattr(args, name) for name in scenario_options() if getattr(args, name, None) is not None}


def runnable_scenarios(kind: str | None = None) -> list[str]:
    """The scenarios `run --scenario` takes (for models of `kind`, or any)."""
    return [n for n in REGISTRY if (kind in scenario_class(n).model_kinds if kind else scenario_class(n).model_kinds)]


def default_scenarios(kind: str) -> list[str]:
    return [n for n in runnable_scenarios(kind) if scenario_class(n).default]


__all__ = ["REGISTRY", "scenario_class", "scenario_options", "add_scenario_arguments", "scenario_option_values", "table_of", "in_table", "settings_label", "known_scenarios", "runnable_scenarios", "default_scenarios"]
