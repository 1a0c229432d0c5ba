"""The local launcher: the orchestrating process runs each job in a child process on this machine and stores
every result the moment it arrives.

A child that raises, crashes (segfault, out-of-memory kill), hangs past the timeout or exceeds --max-memory
costs the cell it was running, which is recorded as failed with the reason (execution/faults.py); a fresh
child then takes the job's remaining cells. `Plan.retries` gives a failed cell further attempts, each in a
fresh child; every failed attempt is kept in the result's details.attempts.

Given the stored history of its cells (execution/records.py), it runs only the repetitions still missing:
that is how an interrupted sweep resumes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
from dataclasses import asdict, replace
from typing import Callable

import numpy as np

from enginebench.engines import engine_class
from enginebench.execution.child import child_main
from enginebench.execution.faults import Failure, describe_exit, over_memory
from enginebench.execution.messages import (
    CellFailed,
    Died,
    Done,
    Loaded,
    Loading,
    Measured,
    Ready,
    References,
    Started,
    TrialStarted,
)
from enginebench.execution.records import CellHistory, measurement_record
from enginebench.execution.references import cached_reference, reference_inputs, reference_key, store_reference
from enginebench.measure import cpu_features
from enginebench.measure.compute_roofline import model_structure
from enginebench.plan import Cell, Job, Plan, group_into_jobs
from enginebench.scenarios.registry import scenario_class
from enginebench.store.derive import build_result, failed_result, first_fidelity
from enginebench.store.identity import CellIdentity, cell_identity
from enginebench.store.model import Result

_POLL_S = 0.2
# a job whose model load hangs or dies this many times in a row, each in a fresh process, gives up its other cells
LOAD_FAILURES_IN_A_ROW = 2
_MEMORY_POLL_S = 0.1  # under --max-memory: what a child can allocate between two looks is what it may overshoot


class LocalLauncher:
    where = "local"  # recorded with the run: which launcher measured it
    reuses_fidelity = True  # a cell's later processes reuse the fidelity its first one measured (Job.fidelity)

    def __init__(self, plan: Plan, on_start: Callable[[Cell], None] | None = None,
                 on_result: Callable[[Result], None] | None = None,
                 history: dict[int, CellHistory] | None = None, retry_failed: bool = False):
        """`history`: what is already stored of some cells (by plan index); their finished repetitions are not
        run again (nor, unless `retry_failed`, the repetitions that failed for good)."""
        self.plan = plan
        self.on_start = on_start or (lambda cell: None)
        self.on_result = on_result or (lambda result: None)
        #: on_load(cell, seconds): a cell's child starts loading its session (seconds None), then has loaded it
        self.on_load: Callable[[Cell, float | None], None] = lambda cell, seconds: None
        self.ctx = mp.get_context("spawn")
        cpu_features.apply_kernel_caps()  # the measuring processes inherit them (Python API callers too)
        self.reference_error: str | None = None
        self.prior = {i: CellHistory(list(h.measured), {} if retry_failed else dict(h.failed), list(h.attempts))
                      for i, h in (history or {}).items()}  # what was stored before this launcher ran
        self.history: dict[int, CellHistory] = self.prior  # and what it has recorded since (recorder)

    # -- planning helpers -------------------------------------------------------------------------
    def _job(self, engine: str, precision: str, threads: int) -> Job:
        return Job(engine, precision, threads, self.plan.engine_options.get(engine, {}), self.plan.model,
                   self.plan.workloads, self.plan.rule, gemm_probe=self._gemm_probe(engine),
                   context=self.plan.context)

    def _gemm_probe(self, engine: str) -> dict | None:
        """The GEMM a child times beside each encoder cell: where ceilings are stored and the engine computes here."""
        reference = (self.plan.machine_speed or {}).get("gemm_probe")
        if not reference or self.plan.model.kind != "encoder" or engine_class(engine).remote:
            return None
        return {"n": reference["n"], "threads": reference["threads"]}

    def _result_context(self, cell: Cell) -> dict:
        own = scenario_class(cell.scenario).result_context(cell, self.plan.context)
        if own is not None:  # a kernel cell: its operator is its model, its engine's kernels are not its engine
            return own
        work = self._work(cell)
        return {**work, "engine_version": engine_class(cell.engine).version(),
                "details": {**work["details"], "stopping_rule": self.plan.rule.to_dict(),
                            "reference_error": self.reference_error, **self._roofline_context(cell)}}

    def _work(self, cell: Cell) -> dict:
        """What a result of `cell` records of the work it did (its identity's parts) besides the cell itself."""
        workload = self.plan.workloads.get(cell.workload)  # absent for a planned cell that cannot run
        seq_len = workload.spec.seq_len if workload else int("".join(filter(str.isdigit, cell.workload)) or 1)
        options = engine_class(cell.engine).make_options(cell.threads, self.plan.engine_options.get(cell.engine, {}))
        return {"model": self.plan.model.name, "seq_len": seq_len, "engine_options": asdict(options),
                "details": {"workload": workload.spec.to_dict() if workload else {"name": cell.workload},
                            # a failed serving cell has no Result.serving: its settings, for its identity
                            **({"serving_settings": cell.serving.to_dict()} if cell.serving else {})}}

    def identity(self, cell: Cell, run_record: dict | None = None) -> CellIdentity:
        """The identity a result of `cell` will have once stored (store/identity.py reads it from the result and
        its run's record): what resuming a run or a sweep matches the stored cells on. `run_record`: the record
        of the run it would be stored in [this plan's]."""
        own = scenario_class(cell.scenario).result_context(cell, self.plan.context)
        result = failed_result(cell, error="not measured yet", **(own if own is not None else self._work(cell)))
        return cell_identity(result, config=self.plan.work_record() if run_record is None else run_record)

    def _roofline_context(self, cell: Cell) -> dict:
        """What a roofline figure is derived from besides the measurements: the model's size (decoders: bytes
        read per token) or structure (encoders: FLOPs per item) and the machine's stored speed."""
        if not scenario_class(cell.scenario).shows_roofline(cell.engine):
            return {}
        model = self.plan.model
        if model.kind == "decoder":
            return {"model_params": model.params, "model_size_bytes": model.size_bytes,
                    "machine_speed": self.plan.machine_speed}
        return {"model_structure": self._encoder_structure(), "machine_speed": self.plan.machine_speed}

    def _encoder_structure(self) -> dict | None:
        if not hasattr(self, "_structure"):
            self._structure = model_structure(self.plan.model.path)
        return self._structure

    # -- running ----------------------------------------------------------------------------------
    def _missing(self, index: int, repetition: int) -> bool:
        h = self.prior.get(index)
        return h is None or repetition not in h.finished()

    def schedule(self) -> list[list[Job]]:
        """Per repetition, the jobs in the order they run. With several repetitions each one shuffles the jobs
        and the cells within them (seeded by Plan.order_seed), so no engine always runs first or right after
        a heavy one; each job is a fresh child process, so every repetition is an independent process. The
        first repetition runs the engines with nothing to prepare (Engine.prepares) before the others.
        Repetitions already in the history are left out."""
        runnable = [(i, c) for i, c in enumerate(self.plan.cells) if not self.why_not(c)]
        order = []
        for repetition in range(self.plan.repeat):
            jobs = group_into_jobs([c for _, c in runnable], self._job)
            for job in jobs:  # group_into_jobs numbers the runnable cells; give them back their plan indices
                job.cells = [(runnable[k][0], cell) for k, cell in job.cells]
            if self.plan.repeat > 1:
                rng = np.random.default_rng([self.plan.order_seed, repetition])
                jobs = [jobs[k] for k in rng.permutation(len(jobs))]
                for job in jobs:
                    job.cells = [job.cells[k] for k in rng.permutation(len(job.cells))]
            if repetition == 0:  # engines that run the model as it comes first, so the first figure comes early
                jobs.sort(key=self._prepares)
            for job in jobs:
                job.cells = [(i, c) for i, c in job.cells if self._missing(i, repetition)]
                job.repetition = repetition
            order.append([job for job in jobs if job.cells])
        return order

    def cell_order(self) -> list[list[int]]:
        """Per repetition, the plan indices of the cells in the order they are measured (recorded with the run)."""
        return [[index for job in jobs for index, _ in job.cells] for jobs in self.schedule()]

    def deliveries(self) -> int:
        """How many times run() will call emit: once per skipped cell, once per repetition still to measure."""
        return len(self.plan.skips) + sum(1 if self.why_not(c) else self.measurements_left(i)
                                          for i, c in enumerate(self.plan.cells))

    def measurements_left(self, index: int) -> int:
        return sum(self._missing(index, r) for r in range(self.plan.repeat))

    def why_not(self, cell: Cell) -> str | None:
        """Why the cell's engine cannot run its precision on this model (stored as skipped), or None. A kernel
        cell is not asked: its kernels say so when it is measured (NotRunnable)."""
        if scenario_class(cell.scenario).times_kernels:
            return None
        return engine_class(cell.engine).why_not(self.plan.model, cell.precision,
                                                 self.plan.engine_options.get(cell.engine))

    @staticmethod
    def _prepares(job: Job) -> bool:
        """Whether the job's engine prepares the model before its first call (none to prepare for kernel cells)."""
        loads_model = any(not scenario_class(cell.scenario).times_kernels for _, cell in job.cells)
        return loads_model and bool(engine_class(job.engine).prepares)

    def run(self, emit: Callable[[int, Result], None]) -> None:
        """Run every cell `plan.repeat` times; `emit(index, result)` receives (and should store) a cell's Result
        as soon as it exists and again after each further repetition (index: the cell's place in the plan,
        planned skips after the cells)."""
        deliver = self.deliverer(emit)
        self.deliver_skips(deliver)
        schedule = self.schedule()
        if not any(schedule):
            return
        references = self._references()
        record = self.recorder(deliver)
        for repetition, jobs in enumerate(schedule):
            for job in jobs:
                job.references = references
                job.fidelity = self.known_fidelity(job)
                self._run_with_retries(job, lambda index, outcome, failures: record(repetition, index, outcome, failures))

    # -- shared with the other launchers (execution/ray.py) ---------------------------------------
    def deliverer(self, emit: Callable[[int, Result], None]) -> Callable[[int, Result], None]:
        def deliver(index: int, result: Result) -> None:
            emit(index, result)
            self.on_result(result)
        return deliver

    def deliver_skips(self, deliver: Callable[[int, Result], None]) -> None:
        """Planned skips (a test too long) and precisions an engine cannot run: stored once, not per repetition."""
        cells = self.plan.cells
        for k, (cell, reason) in enumerate(self.plan.skips):
            self.on_start(cell)
            deliver(len(cells) + k, failed_result(cell, status="skipped", error=reason, **self._result_context(cell)))
        for index, cell in enumerate(cells):
            if reason := self.why_not(cell):
                self.on_start(cell)
                deliver(index, failed_result(cell, status="skipped", error=reason, **self._result_context(cell)))

    def recorder(self, deliver: Callable[[int, Result], None]):
        """`record(repetition, index, Measurement or Failure, earlier failed attempts)`: adds a cell's outcome
        to its history (which starts from what was stored) and delivers the cell's Result."""
        history = {i: CellHistory(list(h.measured), dict(h.failed), list(h.attempts)) for i, h in self.prior.items()}
        self.history = history

        def record(repetition: int, index: int, outcome, failures: list[Failure]) -> None:
            h = history.setdefault(index, CellHistory())
            first = h.tries(repetition) + 1
            # a cell that cannot run there is not an attempt that failed
            failed = failures + ([outcome] if isinstance(outcome, Failure) and outcome.kind != "skipped" else [])
            h.attempts += [{"repetition": repetition, "attempt": first + k, **f.to_dict()} for k, f in enumerate(failed)]
            if isinstance(outcome, Failure):
                h.failed[repetition] = outcome
            else:
                h.measured.append((repetition, outcome))
            deliver(index, self._result(index, h))
        return record

    def known_fidelity(self, job: Job) -> dict[int, dict]:
        """The fidelity each of the job's cells has from an earlier process (this run's or a resumed one's)."""
        known = {}
        for index, _ in job.cells:
            measured = sorted(self.history.get(index, CellHistory()).measured, key=lambda rm: rm[0])
            found = first_fidelity([m for _, m in measured])
            if found is not None:
                known[index] = found
        return known

    def _result(self, index: int, history: CellHistory) -> Result:
        """A cell's Result from every repetition so far: failed only when no repetition measured it."""
        cell = self.plan.cells[index]
        context = self._result_context(cell)
        measured = sorted(history.measured, key=lambda rm: rm[0])
        errors = sorted((r, f.reason) for r, f in history.failed.items())
        if history.attempts:
            context["details"]["attempts"] = history.attempts
        last = history.failed[max(history.failed)] if history.failed else None
        if not measured and last.kind == "skipped":
            context["details"].update(last.details or {})  # as a measurement's details are merged
            return failed_result(cell, status="skipped", error=last.reason, **context)
        if not measured:
            error = errors[-1][1] if len(errors) == 1 else "; ".join(f"repetition {r + 1}: {e}" for r, e in errors)
            context["details"]["failure"] = last.kind
            return failed_result(cell, error=error, **context)
        result = build_result(cell, measured, errors=errors, **context)
        for rep, (_, m) in zip(result.repetitions, measured):  # what resumes it (execution/records.py)
            rep["measurement"] = measurement_record(m)
        if cell.engine == self.plan.reference_engine and cell.precision == "fp32" and result.fidelity:
            # the engine and precision the others are compared with: its row is the reference, not a pass
            result.fidelity = {**result.fidelity, "reference": True}
        return result

    def _references(self):
        engine = self.plan.reference_engine
        if engine is None:  # a plan whose cells have no fidelity reference (kernel cells check their own outputs)
            return None
        if not engine_class(engine).installed():
            self.reference_error = f"no fidelity reference: {engine} is not installed"
            return None
        options, reason = engine_class(engine).reference_options(self.plan.model)
        if reason:  # e.g. a decoder whose fp32 weights do not fit in memory
            self.reference_error = f"no fidelity reference: {reason}"
            return None
        job = Job(engine, "fp32", os.cpu_count() or 1, options, self.plan.model, self.plan.workloads,
                  self.plan.rule, reference_only=True)
        key = reference_key(job, reference_inputs(job))
        refs = cached_reference(key)
        if refs is not None:  # the same reference, inputs and model as a run before: the same numbers
            return refs
        started = time.monotonic()
        limit = self.plan.load_timeout_s + self.plan.timeout_s

        def timed_out() -> Failure | None:
            if time.monotonic() - started > limit:
                return Failure(f"reference engine {engine} timed out after {limit:g} s (raise --load-timeout or "
                               "--timeout)", "timeout")
            return None

        for msg in self._child_messages(job, timed_out):
            match msg:
                case References(outputs):
                    refs = outputs
                case CellFailed(_, error):
                    self.reference_error = error
                case Died():
                    self.reference_error = f"reference engine: {msg.as_failure().reason}"
        if refs is not None:
            store_reference(key, refs)
        return refs

    def _child_messages(self, job: Job, timed_out: Callable[[], Failure | None]):
        """Start a child for `job` and yield its messages (messages.py); ends with Died if it did not finish.
        `timed_out()` returns why the child is abandoned (or None while it may go on); the child is also
        abandoned when it and its workers hold more than plan.max_memory_mb."""
        out, go = self.ctx.Queue(), self.ctx.Queue()
        proc = self.ctx.Process(target=child_main, args=(job, out, go), daemon=False)
        proc.start()
        checked = time.monotonic()
        finished = False  # it sent Done: let it exit on its own; abandoned any other way, it is killed at once
        poll = _MEMORY_POLL_S if self.plan.max_memory_mb else _POLL_S
        try:
            while True:
                try:
                    msg = out.get(timeout=poll)
                except queue_mod.Empty:
                    msg = None
                if msg is not None:
                    yield msg  # resumed once the caller has recorded it: only then may the child measure on
                    if isinstance(msg, (Measured, CellFailed)):
                        go.put(True)
                    if isinstance(msg, Ready):
                        go.put(self.start_line(job, msg.index))
                    if isinstance(msg, Done):
                        finished = True
                        return
                    if time.monotonic() - checked < poll:
                        continue
                checked = time.monotonic()
                if why := timed_out() or over_memory(proc.pid, self.plan.max_memory_mb):
                    self._kill(proc)
                    yield Died(why)
                    return
                if msg is None and not proc.is_alive():
                    try:  # drain what it sent before dying
                        while True:
                            msg = out.get(timeout=0.5)
                            yield msg
                            if isinstance(msg, Done):
                                return
                    except queue_mod.Empty:
                        pass
                    yield Died(describe_exit(proc.exitcode))
                    return
        except KeyboardInterrupt:  # Ctrl-C: the child is in its own process group, so end it now, not later
            self._kill(proc)
            raise
        finally:
            if finished and proc.is_alive():
                proc.join(timeout=10)
            self._kill(proc)
            out.close()
            go.close()

    @staticmethod
    def _kill(proc) -> None:
        if proc.is_alive() or proc.exitcode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child and any worker processes it started
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.join(timeout=5)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # workers orphaned by a crashed child
            except (ProcessLookupError, PermissionError):
                pass

    def start_line(self, job: Job, index: int) -> float | None:
        """When the child at cell `index`'s start line starts (epoch s): at once here; on Ray, when every client
        node measuring the cell with it is there too (execution/ray.py)."""
        return time.time()

    def _run_with_retries(self, job: Job, record: Callable[[int, object, list[Failure]], None]) -> None:
        """Run a job; a cell that fails gets up to plan.retries more attempts, each in a fresh child, after
        the job's other cells. `record(index, Measurement or Failure, earlier failed attempts)` once per cell."""
        failures: dict[int, list[Failure]] = {}
        again: list[int] = []

        def attempt_done(index: int, outcome) -> None:
            again_allowed = isinstance(outcome, Failure) and outcome.kind != "skipped"  # a skip is the same again
            if again_allowed and len(failures.get(index, [])) < self.plan.retries:
                failures.setdefault(index, []).append(outcome)
                again.append(index)
                return
            record(index, outcome, failures.pop(index, []))

        cells = dict(job.cells)
        self._run_job(job, attempt_done)
        while again:
            retry = replace(job, cells=[(index, cells[index]) for index in again])
            again.clear()
            self._run_job(retry, attempt_done)

    def _run_job(self, job: Job, record: Callable[[int, object], None]) -> None:
        """Run a job's cells in child processes; `record(index, Measurement or Failure)` for each cell."""
        pending = dict(job.cells)
        order = [index for index, _ in job.cells]
        failed_loads: list[Failure] = []  # the job's loads that hung or died, in a row (a load that ends resets it)
        while pending:
            # `expected`: what the LoadGen run under way said it will take (a search's trial): --timeout is
            # counted beyond it, afresh for each run, so a search is not cut short by its number of trials
            current: dict = {"index": None, "since": time.monotonic(), "loading": False, "expected": 0.0}

            def timed_out() -> Failure | None:
                if current["index"] is None:
                    return None
                elapsed = time.monotonic() - current["since"]
                if current["loading"] and elapsed > self.plan.load_timeout_s:
                    return Failure(f"model load timed out after {self.plan.load_timeout_s:g} s (raise "
                                   f"{self.plan.load_timeout_flag})", "timeout")
                if not current["loading"] and elapsed > self.plan.timeout_s + current["expected"]:
                    if current["expected"]:
                        return Failure(f"a LoadGen run expected to take {current['expected']:.0f} s timed out after "
                                       f"{elapsed:.0f} s (raise --timeout)", "timeout")
                    return Failure(f"timed out after {self.plan.timeout_s:g} s (raise --timeout)", "timeout")
                return None

            attempt = replace(job, cells=[(index, pending[index]) for index in order if index in pending])
            for msg in self._child_messages(attempt, timed_out):
                match msg:
                    case Started(index):
                        current.update(index=index, since=time.monotonic(), loading=False, expected=0.0)
                        self.on_start(pending[index])
                    case Loading(index) | Loaded(index):
                        took = time.monotonic() - current["since"] if isinstance(msg, Loaded) else None
                        if isinstance(msg, Loaded):
                            failed_loads.clear()
                        current.update(since=time.monotonic(), loading=isinstance(msg, Loading))
                        if index in pending:
                            self.on_load(pending[index], took)
                    case TrialStarted(_, expected_s):
                        current.update(since=time.monotonic(), loading=False, expected=expected_s)
                    case Ready():  # past the start line (the wait for the other client nodes): timed afresh
                        current.update(since=time.monotonic())
                    case Measured(index, measurement):
                        pending.pop(index)
                        record(index, measurement)
                        current["index"] = None
                    case CellFailed(index, error):
                        pending.pop(index)
                        record(index, Failure(error, msg.kind, msg.details))
                        current["index"] = None
                    case Died():
                        if not pending:  # it died after sending its last result: nothing was lost
                            break
                        index = current["index"] if current["index"] is not None else next(
                            i for i in order if i in pending)
                        cell = pending.pop(index)
                        if current["index"] is None:
                            self.on_start(cell)
                        failure = msg.as_failure()
                        record(index, failure)
                        if current["loading"]:
                            failed_loads.append(failure)
                        if len(failed_loads) >= LOAD_FAILURES_IN_A_ROW:
                            self._give_up_job(pending, order, failure, record)
                        break

    def _give_up_job(self, pending: dict, order: list[int], failure: Failure, record) -> None:
        """The job's model failed to load (hung or died) in LOAD_FAILURES_IN_A_ROW fresh processes in a row: a
        next process would load the same model the same way, so the job's remaining cells fail with that reason
        rather than cost a load (up to --load-timeout) each; --retries still gives each a fresh attempt."""
        why = (f"{failure.reason}; the model's load failed in {LOAD_FAILURES_IN_A_ROW} fresh processes in a row, "
               "so this cell was not tried")
        for index in [i for i in order if i in pending]:
            self.on_start(pending.pop(index))
            record(index, Failure(why, failure.kind))


__all__ = ["LocalLauncher", "describe_exit"]
