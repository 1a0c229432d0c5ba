"""recommend --confirm N: the pick of stored results, measured again before it is named.

A pick made over stored results is the best of many noisy figures, so its figure flatters it (the winner's
curse), and the results it is compared with may come from other runs, hours apart. The confirmation round
measures the pick, the runner-up and the baselines again, each in N fresh processes, their repetitions
interleaved and shuffled (the launcher's order), as one new run; the answer is recommend's over that run only,
so the pick's figure, its speed-ups and whether it beats the runner-up come from processes measured side by
side after the choice was made."""

from __future__ import annotations

import dataclasses
import shlex

from enginebench.config import RunConfig
from enginebench.errors import UsageError
from enginebench.store.identity import cell_identity, differences

MIN_PROCESSES = 2  # an interval over processes needs two


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


def confirm(first, runs: list, constraints, db: str, processes: int, on_note=None) -> Confirmation:
    """Measure `first`'s pick, runner-up and baselines again in `processes` fresh interleaved processes each,
    as one stored run, and recommend over that run only."""
    # loaded when a round runs: cli/recommend imports this module to build the parser
    from enginebench.analysis.recommend import configuration_text, recommend, reproduce_command
    from enginebench.api import execute
    from enginebench.planning import plan_from_config

    if first.best is None:
        raise UsageError(f"nothing to confirm: {first.why_none}")
    by_id = {run.run_id: run for run in runs}
    entries = [(first.best, by_id[first.run_id])]
    if first.runner_up:
        entries.append((first.runner_up.other, by_id[first.runner_up.run_id]))
    entries += [(v.other, by_id[v.run_id]) for v in first.versus if v.speedup is not None]
    cells, options, measured, left_out, base = [], {}, [], [], None
    for result, run in entries:
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
    if on_note:
        on_note(f"confirmation round: {len(cells)} cells × {processes} processes")
    run = execute(plan, db=db, argv=["recommend", "--confirm", str(processes)])
    confirmed = dataclasses.replace(recommend([run], constraints), confirmed=True)
    same = confirmed.best is not None and not differences(cell_identity(first.best, by_id[first.run_id]),
                                                          cell_identity(confirmed.best, run))
    return Confirmation(first, confirmed, run.run_id, processes, measured, left_out, same)


__all__ = ["Confirmation", "confirm", "check_processes", "MIN_PROCESSES"]
