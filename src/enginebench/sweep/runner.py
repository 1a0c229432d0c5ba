"""Running a sweep so that it survives anything: each part is a run whose id comes from the sweep's, each
cell is stored under its key (unique in the store) the moment a repetition finishes, and a restart with the
same file on the same machine reads back what is stored and runs only the repetitions still missing.

A repetition in flight when the sweep stops (Ctrl-C, kill -9, a reboot) is lost and measured again on resume;
a stored one is never measured twice. One process at a time runs a given sweep: the sweeps table records it,
and a second start is refused while that process lives. A process on another machine cannot be checked from
here, so the owner writes a heartbeat: one silent for STALE_S is taken to have died, and `--take-over` takes
its sweep (never one whose owner is seen alive).
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

from enginebench.api import run_record, start_run
from enginebench.errors import UsageError
from enginebench.execution.local import LocalLauncher
from enginebench.execution.records import history_of
from enginebench.measure.machine import machine_info
from enginebench.store.database import ResultStore
from enginebench.store.identity import cell_identity, differences
from enginebench.store.model import Run
from enginebench.sweep.spec import Part, Sweep


@dataclass
class PartState:
    """A part as the store has it: its run id, the history of its cells, and the launcher that resumes it."""

    part: Part
    run_id: str
    keys: list[str]  # by delivery index: the plan's cells, then its planned skips
    stored: dict  # key -> Result already stored
    launcher: LocalLauncher

    @property
    def to_measure(self) -> int:
        """(cell, repetition) pairs still to measure."""
        return sum(self.launcher.measurements_left(i) for i, c in enumerate(self.part.plan.cells)
                   if not self.launcher.why_not(c))

    @property
    def unsaved_skips(self) -> int:
        """Cells that are not measured (planned skips, precisions an engine lacks) and not stored yet."""
        cells = self.part.plan.cells
        skipped = [k for k, c in zip(self.keys, cells) if self.launcher.why_not(c)] + self.keys[len(cells):]
        return sum(1 for k in skipped if k not in self.stored)

    def cell_status(self, index: int) -> str:
        """ok, failed, skipped, partial (some repetitions stored) or pending."""
        result = self.stored.get(self.keys[index])
        if result is None:
            return "pending"
        if result.status == "ok" and index < len(self.part.plan.cells) and self.launcher.measurements_left(index):
            return "partial"
        return result.status


@dataclass
class SweepReport:
    sweep_id: str
    cells: int = 0  # every cell of the sweep (skipped ones included)
    counts: dict[str, int] = field(default_factory=dict)  # stored cells by status, when it ended
    measured_now: int = 0  # (cell, repetition) outcomes stored by this invocation, failures included
    interrupted: bool = False


def run_id_of(sweep: Sweep | str, part: Part) -> str:
    return f"{sweep if isinstance(sweep, str) else sweep.sweep_id}-{part.key}"


def earlier_sweep_note(sweep: Sweep, store: ResultStore) -> str | None:
    """A line when the same file was swept before as another sweep, because the model's or the corpus's content,
    an engine option's value (a default changed with an upgrade) or the machine changed since: which sweep, and
    the first difference, so that nobody takes the new sweep for a resume of the old one. None otherwise."""
    earlier = store.earlier_sweep(sweep.sweep_id, sweep.spec)
    if earlier is None:
        return None
    old, created = earlier
    why = None
    for part in sweep.parts:
        try:
            run = store.load_run(run_id_of(old, part))
        except UsageError:  # the earlier sweep stopped before this part
            continue
        if (run.machine or {}).get("hostname") not in (None, socket.gethostname()):
            why = f"on {run.machine['hostname']}"
            break
        stored, launcher = store.keyed_results(run.run_id), LocalLauncher(part.plan)
        for cell in part.plan.indexed_cells():
            result = stored.get(part.cell_key(old, cell))
            if result is not None:
                told = differences(cell_identity(result, run), launcher.identity(cell), names=("then", "now"))
                if told:
                    why = f"{cell.label()}: {'; '.join(told)}"
                    break
        if why:
            break
    if why is None:  # nothing stored differs: an id made before the cells' identities were part of it
        return (f"this file was swept before as sweep {old} ({created}), whose stored cells are this work too but "
                f"whose id an earlier enginebench made: this is sweep {sweep.sweep_id}, measured anew; {old}'s "
                "results stay in the store")
    return (f"this file was swept before as sweep {old} ({created}), of other work ({why}): this is sweep "
            f"{sweep.sweep_id}, measured anew; {old}'s results stay in the store")


def part_states(sweep: Sweep, store: ResultStore, retry_failed: bool = False, ray: str | None = None,
                client_nodes: int = 1) -> list[PartState]:
    """Each part with what the store already holds of it; its launcher runs on the Ray cluster `ray` if given
    (with `client_nodes`, a concurrency cell's clients against a server shared out over that many nodes)."""
    launcher = _ray_launcher(ray, client_nodes) if ray else LocalLauncher
    states = []
    for part in sweep.parts:
        run_id = run_id_of(sweep, part)
        plan = part.plan
        keys = [part.cell_key(sweep.sweep_id, c) for c in plan.indexed_cells()]
        stored = store.keyed_results(run_id)
        history = {i: history_of(stored[k]) for i, k in enumerate(keys[:len(plan.cells)]) if k in stored}
        states.append(PartState(part, run_id, keys, stored, launcher(plan, history=history,
                                                                     retry_failed=retry_failed)))
    return states


def _ray_launcher(address: str, client_nodes: int = 1):
    from enginebench.execution.ray import RayLauncher

    return lambda plan, **kwargs: RayLauncher(plan, address, client_nodes=client_nodes, **kwargs)


HEARTBEAT_S = 15.0  # how often a running sweep's owner says it is alive
STALE_S = 120.0  # an owner on another machine silent this long is taken to have died (clocks may differ a little)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _owner() -> dict:
    now = _now()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid()),
            "since": now, "beat": now}


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def silent_s(owner: dict) -> float:
    """Seconds since the owner's last heartbeat (since it started, for an owner from before heartbeats)."""
    last = datetime.fromisoformat(owner.get("beat") or owner["since"])
    return (datetime.now(timezone.utc) - last).total_seconds()


def _alive(owner: dict) -> bool:
    """Whether the owner is seen alive: on this machine its process (pid and start time), elsewhere a recent
    heartbeat."""
    if owner.get("host") != socket.gethostname():
        return silent_s(owner) < STALE_S
    if owner.get("pid") == os.getpid():
        return False
    started = _process_start(owner.get("pid", -1))
    return started is not None and started == owner.get("started")


def _keeps(take_over: bool):
    """Whether a holder keeps the sweep: one seen alive always does; a dead one on this machine never does; a
    silent one on another machine does until the user says it has died (--take-over)."""
    def keeps(holder: dict) -> bool:
        if _alive(holder):
            return True
        return holder.get("host") != socket.gethostname() and not take_over
    return keeps


def _refusal(sweep_id: str, holder: dict) -> str:
    where = f"process {holder['pid']} on {holder['host']}, since {holder['since']}"
    if _alive(holder):
        return f"sweep {sweep_id} is already running ({where}): wait for it, or end it and run this again"
    return (f"sweep {sweep_id} is held by {where}, silent for {silent_s(holder) / 60:.0f} min: if that machine "
            "stopped, run this again with --take-over")


class Heartbeat:
    """A thread that writes the owner's heartbeat every `every` seconds until stopped (its own connection:
    SQLite connections stay in their thread)."""

    def __init__(self, db: str, sweep_id: str, owner: dict, every: float = HEARTBEAT_S):
        self.db, self.sweep_id, self.owner, self.every = db, sweep_id, owner, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="sweep-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def _beat(self) -> None:
        with ResultStore(self.db) as store:
            while not self.stopped.wait(self.every):
                try:
                    store.beat_sweep(self.sweep_id, self.owner, _now())
                except Exception:  # noqa: BLE001 - a missed beat (a locked database) is retried at the next one
                    pass


def run_sweep(sweep: Sweep, db: str, *, retry_failed: bool = False, on_start=None, on_result=None,
              on_total=None, ray: str | None = None, take_over: bool = False, client_nodes=None) -> SweepReport:
    """Measure what is missing of the sweep, storing each result as it arrives. `on_total(n)` is told how many
    results will arrive; `on_start(cell)` and `on_result(index, result)` see progress. Ctrl-C propagates
    (KeyboardInterrupt) after the launcher has ended its child; what was stored stays. `ray`: the address of a
    Ray cluster (or "local") whose nodes run the jobs, every part's at once (execution/ray.py). `take_over`: take
    the sweep from an owner on another machine whose heartbeat stopped. `client_nodes`: --client-nodes
    (execution/ray.py)."""
    if ray or client_nodes is not None:
        from enginebench.execution.ray import check_client_nodes, connect

        client_nodes = check_client_nodes([part.plan for part in sweep.parts], ray, client_nodes)
        connect(ray, client_nodes)  # a missing Ray, a wrong address or too few nodes fails here, before the claim
    store = ResultStore(db)
    owner = _owner()
    holder = store.claim_sweep(sweep.sweep_id, sweep.file, sweep.spec, owner, _keeps(take_over))
    if holder:
        store.close()
        raise UsageError(_refusal(sweep.sweep_id, holder))
    report = SweepReport(sweep.sweep_id)
    heartbeat = Heartbeat(db, sweep.sweep_id, owner).start()
    try:
        states = part_states(sweep, store, retry_failed, ray, client_nodes or 1)
        report.cells = sum(len(s.keys) for s in states)
        if on_total:
            on_total(sum(s.launcher.deliveries() for s in states if s.to_measure or s.unsaved_skips))
        machine = machine_info()
        todo = [s for s in states if s.to_measure or s.unsaved_skips]
        if ray and todo:  # every part's jobs at once, over the cluster's nodes
            from enginebench.execution.ray import run_together

            run_together([(state.launcher, _start_part(sweep, state, store, machine, on_start, on_result, report))
                          for state in todo])
        else:
            for state in todo:
                state.launcher.run(_start_part(sweep, state, store, machine, on_start, on_result, report))
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        heartbeat.stop()
        report.counts = store.sweep_cell_counts(sweep.sweep_id)
        store.release_sweep(sweep.sweep_id, owner)
        store.close()
    return report


def _start_part(sweep: Sweep, state: PartState, store: ResultStore, machine: dict, on_start, on_result,
                report: SweepReport):
    """Store the part's run (once) and give the emit that stores its results under their cell keys."""
    part, plan, launcher = state.part, state.part.plan, state.launcher
    now = datetime.now(timezone.utc)
    store.add_run_once(Run(
        run_id=state.run_id, created_at=now.isoformat(timespec="seconds"), machine=machine,
        config={**run_record(plan, launcher, config=part.config), "retries": plan.retries,
                "max_memory_mb": plan.max_memory_mb,
                "sweep": {"id": sweep.sweep_id, "file": sweep.file, "part": part.key, "label": part.label}}))
    cells = len(plan.cells)

    def arrived(index, result):
        if index < cells and result.status != "skipped":
            report.measured_now += 1
        if on_result:
            on_result(index, result)

    return start_run(store, plan, launcher, state.run_id, keys=state.keys, on_start=on_start, on_result=arrived)


def resume_command(file: str, db: str, extra: list[str] = ()) -> str:
    """The exact command that carries on a stopped sweep."""
    import shlex

    argv = ["enginebench", "sweep", file, *(["--db", db] if db != "enginebench.db" else []), *extra]
    return " ".join(shlex.quote(a) for a in argv)


__all__ = ["run_sweep", "part_states", "PartState", "SweepReport", "run_id_of", "resume_command", "earlier_sweep_note"]
