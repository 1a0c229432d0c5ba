"""The measuring process. It loads one engine, runs its cells, and sends raw measurements to the parent.

Kept light at import time: engine libraries are imported only after thread limits are set.
"""

from __future__ import annotations

import multiprocessing.util
import os
import time
import traceback
from dataclasses import dataclass

from enginebench.engines import engine_class
from enginebench.engines.base import micro_batched
from enginebench.execution.messages import (
    CellFailed,
    Done,
    Loaded,
    Loading,
    Measured,
    Ready,
    References,
    Started,
    TrialStarted,
)
from enginebench.execution.references import reference_inputs, reference_outputs
from enginebench.measure.memory import peak_rss_mb
from enginebench.measure.roofline import gemm_probe
from enginebench.measuring_process import die_with_parent, limit_threads, quiet_library_logs
from enginebench.plan import Job
from enginebench.scenarios.base import CellRun, LoadFailed, NotRunnable
from enginebench.scenarios.registry import scenario_class


@dataclass(frozen=True)
class SessionFactory:
    """Picklable recipe for a session, so parallel workers each load their own."""

    engine: str
    model: object  # ModelSpec
    precision: str
    threads: int
    options: dict
    measured: tuple | None = None  # the job's WorkloadData: int8-static calibrates on inputs apart from these

    def __call__(self):
        die_with_parent()  # a throughput worker: its parent is the child
        quiet_library_logs()
        limit_threads(self.threads)
        cls = engine_class(self.engine)
        options = cls.make_options(self.threads, self.options)
        measured = {"measured": self.measured} if self.precision == "int8-static" else {}
        return micro_batched(cls().load(self.model, self.precision, options, **measured), options)


def child_main(job: Job, out, go=None) -> None:
    """Entry point of the child process; what it sends `out` is in messages.py.
    With `go`, after each result or error the child waits for the parent's word before measuring on: the parent
    builds and stores results while no cell is measured, so its work never shares the cores with a measurement."""
    try:
        os.setpgrp()  # the parent can kill this process and its workers as one group
    except OSError:
        pass
    die_with_parent()
    quiet_library_logs()
    _measure(job, out, go)
    # Flush every message, then leave without interpreter teardown: some engines' destructors abort at exit
    # (seen: "terminate called ... Resource deadlock avoided"), which must not cost results already sent.
    out.close()
    out.join_thread()
    # os._exit skips multiprocessing's own exit hooks, so semaphores a library made here (sentence-transformers'
    # imports make one) would stay registered and the tracker would warn of a leak when the run ends
    multiprocessing.util._run_finalizers(0)
    os._exit(0)


def _measure(job: Job, out, go=None) -> None:
    limit_threads(job.threads)
    factory = SessionFactory(job.engine, job.model, job.precision, job.threads, job.options,
                             tuple(job.workloads.values()))
    if job.reference_only:
        _send_references(factory, job, out)
        out.put(Done())
        return
    cache: dict = {}  # the job's: its shared session, its load facts, fidelity by workload

    def session():
        """The job's one session, loaded on first use (the parent applies --load-timeout until "loaded")."""
        if "session" not in cache and "load_error" not in cache:
            out.put(Loading(cache["index"]))
            try:
                t0 = time.perf_counter()
                cache["session"] = factory()
                cache["load_s"] = time.perf_counter() - t0
                cache["load_peak_rss_mb"] = peak_rss_mb()
            except Exception as e:
                cache["load_error"] = f"load failed: {type(e).__name__}: {e}"
            out.put(Loaded(cache["index"]))
        if "load_error" in cache:
            raise LoadFailed(cache["load_error"])
        return cache["session"]

    for index, cell in job.cells:
        out.put(Started(index))
        cache["index"] = index
        run = CellRun(cell=cell, workload=job.workloads.get(cell.workload), rule=job.rule, factory=factory,
                      model_kind=job.model.kind, precision=job.precision, references=job.references,
                      session=session, loading=lambda i=index: out.put(Loading(i)),
                      loaded=lambda i=index: out.put(Loaded(i)), cache=cache, repetition=job.repetition,
                      trial_started=lambda expected_s, i=index: out.put(TrialStarted(i, expected_s)),
                      context=job.context, client_part=job.client_part,
                      start_together=lambda i=index: _start_line(out, go, i), known_fidelity=job.fidelity.get(index))
        try:
            scenario = scenario_class(cell.scenario)
            probe = job.gemm_probe if scenario.uses_roofline else None
            # the machine's speed just before and just after the cell: the last cell's "after" is this one's
            # "before" (nothing ran between them but the parent's storing), so a cell costs one probe
            last = cache.pop("last_probe", None)  # (GFLOP/s, epoch s) just after the previous cell, if probed
            before = (last or (gemm_probe(**probe), time.time())) if probe else None
            started = time.time()
            m = scenario.measure(run)
            if run.known_fidelity is not None:
                m.details["fidelity_reused"] = True
            m.details["measured_between"] = [started, time.time()]  # epoch s: loading included, if it loaded
            if probe:
                cache["last_probe"] = after = (gemm_probe(**probe), time.time())
                # when each probe was taken tells them apart: two probes of a quiet machine can time the same
                # best call to the nanosecond
                m.details["gemm_probe"] = {"before": before[0], "after": after[0], "taken_at": [before[1], after[1]],
                                           **probe}
            out.put(Measured(index, m))
        except LoadFailed as e:
            out.put(CellFailed(index, str(e)))
        except NotRunnable as e:  # stored as skipped, with the reason
            out.put(CellFailed(index, str(e), kind="skipped", details=e.details))
        except Exception as e:  # one cell's failure is recorded; the next cell still runs
            out.put(CellFailed(index, f"{type(e).__name__}: {e}", traceback.format_exc()))
        if go is not None:
            go.get()
    out.put(Done())


def _start_line(out, go, index: int) -> float | None:
    """Wait at the cell's start line for the parent's word: the epoch second to start at (None: the other
    client nodes did not come)."""
    if go is None:
        return None
    out.put(Ready(index))
    return go.get()


def _send_references(factory: SessionFactory, job: Job, out) -> None:
    try:
        session = factory()
        out.put(References(reference_outputs(session, job, reference_inputs(job))))
    except Exception as e:
        out.put(CellFailed(-1, f"reference failed: {type(e).__name__}: {e}", traceback.format_exc()))


__all__ = ["child_main", "SessionFactory"]
