"""recommend --confirm N: the pick of stored results, measured again before it is named.

A pick made over stored results is the best of many noisy figures, so its figure flatters it (the winner's
curse), and the results it is compared with may come from other runs, hours apart. The confirmation round
measures the pick, the runner-up and the baselines again, each in N fresh processes, their repetitions
interleaved and shuffled (the launcher's order), as one new run; the answer is recommend's over that run only,
so the pick's figure, its speed-ups and whether it beats the runner-up come from processes measured side by
side after the choice was made.

`enginebench recommend` runs the round by default (3 processes) whenever the stored results offer a choice and
it can: the pick was measured on this machine and every configuration's engine loads here. Where it cannot,
it answers from the stored results and says why (`round_plan`'s UsageError)."""

from __future__ import annotations

import dataclasses
import shlex

from enginebench.config import RunConfig
from enginebench.errors import UsageError
from enginebench.store.identity import cell_identity, differences

MIN_PROCESSES = 2  # an interval over processes needs two
DEFAULT_PROCESSES = 3


@dataclasses.dataclass
class Confirmation:
    """The first pick (from stored results), what the round measured, and the answer from the round alone."""

    first: object  # results.recommend.Recommendation
    confirmed: object  # the Recommendation over the round's run only
    run_id: str
    processes: int
    measured: list[str]  # the configurations measured, as recommend names them
    left_out: list[str]  # configurations the round could not hold, and why
    same_pick: bool = False  # the round's pick is the same cell (store/identity.py) as the stored results' pick

    def lines(self) -> list[str]:
        from enginebench.analysis.recommend import configuration_text

        out = [f"confirmation round: {len(self.measured)} configurations, each in {self.processes} fresh processes, "
               f"interleaved (run {self.run_id}): {'; '.join(self.measured)}"]
        out += [f"  left out: {why}" for why in self.left_out]
        if self.confirmed.best is None:
            out.append("  the round gave no answer: " + (self.confirmed.why_none or "nothing qualified"))
        elif self.same_pick:
            out.append("  the round confirms the pick; its figures below come from the round only")
        else:
            out.append(f"  the round picks another configuration than the stored results did "
                       f"({configuration_text(self.first.best)}): the stored pick's lead was noise or drift")
        return out + self.confirmed.lines()

    def to_dict(self) -> dict:
        return {"stored": self.first.to_dict(), "confirmed": self.confirmed.to_dict(), "run_id": self.run_id,
                "processes": self.processes, "measured": self.measured, "left_out": self.left_out,
                "same_pick": self.same_pick}


def check_processes(text: str | int) -> int:
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--confirm {text!r} is not a whole number: give the processes per configuration, "
                         "e.g. --confirm 3") from None
    if n < MIN_PROCESSES:
        raise UsageError(f"--confirm {n}: an interval over processes needs at least {MIN_PROCESSES}: give e.g. "
                         "--confirm 3")
    return n


def why_not_here(first, runs: list) -> str | None:
    """Why the pick cannot be measured again on this machine, or None: figures from another machine would
    not be the same measurement (store/identity.py keeps machines apart)."""
    from enginebench.analysis.recommend import machine_of
    from enginebench.measure.machine import machine_info

    run = next(r for r in runs if r.run_id == first.run_id)
    measured, here = machine_of(first.best, run), machine_info()
    if (measured.get("hostname"), measured.get("cpu")) != (here["hostname"], here["cpu"]):
        return f"measured on {measured.get('hostname')} ({measured.get('cpu')}), not on this machine"
    return None


@dataclasses.dataclass
class RoundPlan:
    plan: object  # the plan (plan.Plan) the round runs
    measured: list[str]
    left_out: list[str]


def round_plan(first, runs: list, processes: int) -> RoundPlan:
    """The round: the pick, runner-up and baselines of `first`, each with its reproduce command's exact
    configuration, in `processes` processes each. A UsageError where the pick cannot be measured again here
    (`why_not_here`; its engine is not installed, its model folder is gone): raised before anything is measured."""
    from enginebench.analysis.recommend import configuration_text, reproduce_command
    from enginebench.engines import engine_class
    from enginebench.planning import plan_from_config

    if first.best is None:
        raise UsageError(f"nothing to confirm: {first.why_none}")
    elsewhere = why_not_here(first, runs)
    if elsewhere:
        raise UsageError(elsewhere)
    by_id = {run.run_id: run for run in runs}
    entries = [(first.best, by_id[first.run_id])]
    if first.runner_up:
        entries.append((first.runner_up.other, by_id[first.runner_up.run_id]))
    entries += [(v.other, by_id[v.run_id]) for v in first.versus if v.speedup is not None]
    cells, options, measured, left_out, base = [], {}, [], [], None
    for result, run in entries:
        if not engine_class(result.engine).installed():
            if result is first.best:
                raise UsageError(f"the pick's engine, {result.engine}, is not installed here: pip install "
                                 f"'enginebench[{engine_class(result.engine).extra}]'")
            left_out.append(f"{configuration_text(result)}: {result.engine} is not installed here")
            continue
        argv = shlex.split(reproduce_command(result, run))[2:]  # the exact configuration, without `enginebench run`
        plan = plan_from_config(RunConfig.from_argv(argv))
        clash = {e: o for e, o in plan.engine_options.items() if options.get(e, o) != o}
        if clash:  # one run gives an engine one set of options
            left_out.append(f"{configuration_text(result)}: other {', '.join(clash)} options than a configuration "
                            "already in the round")
            continue
        new = [c for c in plan.cells if c not in cells]
        if not new:
            continue
        options.update(plan.engine_options)
        cells += new
        measured.append(configuration_text(result, options=False))
        base = base or plan
    plan = dataclasses.replace(base, cells=cells, engine_options=options, repeat=processes, skips=[])
    return RoundPlan(plan, measured, left_out)


def confirm(first, runs: list, constraints, db: str, processes: int, on_note=None,
            planned: RoundPlan | None = None) -> Confirmation:
    """Measure `first`'s pick, runner-up and baselines again in `processes` fresh interleaved processes each,
    as one stored run, and recommend over that run only."""
    # loaded when a round runs: cli/recommend imports this module to build the parser
    from enginebench.analysis.recommend import recommend
    from enginebench.api import execute

    planned = planned or round_plan(first, runs, processes)
    plan, measured, left_out = planned.plan, planned.measured, planned.left_out
    by_id = {run.run_id: run for run in runs}
    if on_note:
        on_note(f"confirmation round: {len(plan.cells)} cells × {processes} processes")
    run = execute(plan, db=db, argv=["recommend", "--confirm", str(processes)])
    confirmed = dataclasses.replace(recommend([run], constraints), confirmed=True)
    same = confirmed.best is not None and not differences(cell_identity(first.best, by_id[first.run_id]),
                                                          cell_identity(confirmed.best, run))
    return Confirmation(first, confirmed, run.run_id, processes, measured, left_out, same)


__all__ = ["Confirmation", "RoundPlan", "confirm", "round_plan", "check_processes", "MIN_PROCESSES", "DEFAULT_PROCESSES"]
