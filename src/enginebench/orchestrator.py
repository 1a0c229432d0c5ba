"""The orchestrating process: runs each job in a child process, stores every result the moment it arrives.

A child that raises, crashes (segfault, out-of-memory kill) or hangs past the timeout costs the cell it was
running, which is recorded as failed with the reason; a fresh child then takes the job's remaining cells.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
from dataclasses import asdict, replace
from typing import Callable

from enginebench.child import child_main
from enginebench.engines import engine_class
from enginebench.plan import Cell, Job, Plan, group_into_jobs
from enginebench.results.build import build_result, failed_result
from enginebench.results.model import Result

_POLL_S = 0.2


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        sig = signal.Signals(-exitcode).name if -exitcode in signal.Signals._value2member_map_ else str(-exitcode)
        hint = " (usually the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        hint = " (segmentation fault in the engine)" if -exitcode == signal.SIGSEGV else hint
        return f"child process killed by {sig}{hint}"
    return f"child process exited with code {exitcode}"


class Orchestrator:
    def __init__(self, plan: Plan, on_start: Callable[[Cell], None] | None = None,
                 on_result: Callable[[Result], None] | None = None):
        self.plan = plan
        self.on_start = on_start or (lambda cell: None)
        self.on_result = on_result or (lambda result: None)
        self.ctx = mp.get_context("spawn")
        self.reference_error: str | None = None

    # -- planning helpers -------------------------------------------------------------------------
    def _job(self, engine: str, precision: str, threads: int) -> Job:
        return Job(engine, precision, threads, self.plan.engine_options.get(engine, {}), self.plan.model,
                   self.plan.workloads, self.plan.rule)

    def _result_context(self, cell: Cell) -> dict:
        cls = engine_class(cell.engine)
        workload = self.plan.workloads.get(cell.workload)  # absent for a planned cell that cannot run
        seq_len = workload.spec.seq_len if workload else int("".join(filter(str.isdigit, cell.workload)) or 1)
        return {
            "model": self.plan.model.name,
            "seq_len": seq_len,
            "engine_version": cls.version(),
            "engine_options": asdict(cls.make_options(cell.threads, self.plan.engine_options.get(cell.engine, {}))),
            "details": {"workload": workload.spec.to_dict() if workload else {"name": cell.workload},
                        "stopping_rule": self.plan.rule.to_dict(),
                        "reference_error": self.reference_error, **self._decoder_context(cell)},
        }

    def _decoder_context(self, cell: Cell) -> dict:
        if cell.scenario != "generate":
            return {}
        return {"model_params": self.plan.model.params, "model_size_bytes": self.plan.model.size_bytes,
                "machine_speed": self.plan.machine_speed}

    # -- running ----------------------------------------------------------------------------------
    def run(self, emit: Callable[[Result], None]) -> None:
        """Run every cell; `emit` receives (and should store) each Result as soon as it exists."""
        def deliver(result: Result) -> None:
            emit(result)
            self.on_result(result)

        for cell, reason in self.plan.skips:  # planned but not runnable (e.g. a test longer than the model)
            self.on_start(cell)
            deliver(failed_result(cell, status="skipped", error=reason, **self._result_context(cell)))
        references = self._references()
        for job in group_into_jobs(self.plan.cells, self._job):
            runnable = []
            for index, cell in job.cells:  # skips are delivered with their engine, in plan order
                reason = engine_class(cell.engine).unsupported_for(self.plan.model, cell.precision)
                if reason:
                    self.on_start(cell)
                    deliver(failed_result(cell, status="skipped", error=reason, **self._result_context(cell)))
                else:
                    runnable.append((index, cell))
            if runnable:
                job.cells, job.references = runnable, references
                self._run_job(job, deliver)

    def _references(self):
        engine = self.plan.reference_engine
        if not engine_class(engine).installed():
            self.reference_error = f"no fidelity reference: {engine} is not installed"
            return None
        reason = engine_class(engine).unsupported_for(self.plan.model, "fp32")
        if reason:  # e.g. a decoder whose fp32 weights do not fit in memory
            self.reference_error = f"no fidelity reference: {reason}"
            return None
        job = Job(engine, "fp32", os.cpu_count() or 1, {}, self.plan.model, self.plan.workloads, self.plan.rule,
                  reference_only=True)
        refs = None
        for msg in self._child_messages(job, lambda: None):
            if msg[0] == "reference":
                refs = msg[1]
            elif msg[0] == "error":
                self.reference_error = msg[2]
            elif msg[0] == "died":
                self.reference_error = f"reference engine: {msg[1]}"
        return refs

    def _child_messages(self, job: Job, timed_out: Callable[[], bool]):
        """Start a child for `job` and yield its messages; ends with ("died", reason) if it did not finish."""
        out = self.ctx.Queue()
        proc = self.ctx.Process(target=child_main, args=(job, out), daemon=False)
        proc.start()
        try:
            while True:
                try:
                    msg = out.get(timeout=_POLL_S)
                except queue_mod.Empty:
                    if timed_out():
                        self._kill(proc)
                        yield ("died", f"timed out after {self.plan.timeout_s:g} s (raise --timeout)")
                        return
                    if not proc.is_alive():
                        # drain what it sent before dying
                        try:
                            while True:
                                msg = out.get(timeout=0.5)
                                yield msg
                                if msg[0] == "done":
                                    return
                        except queue_mod.Empty:
                            pass
                        yield ("died", describe_exit(proc.exitcode))
                        return
                    continue
                yield msg
                if msg[0] == "done":
                    return
        finally:
            if proc.is_alive():
                proc.join(timeout=10)
            self._kill(proc)
            out.close()

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

    def _run_job(self, job: Job, deliver: Callable[[Result], None]) -> None:
        pending = dict(job.cells)
        while pending:
            current: dict = {"index": None, "since": time.monotonic()}

            def timed_out() -> bool:
                return current["index"] is not None and time.monotonic() - current["since"] > self.plan.timeout_s

            attempt = replace(job, cells=sorted(pending.items()))
            for msg in self._child_messages(attempt, timed_out):
                kind = msg[0]
                if kind == "start":
                    current.update(index=msg[1], since=time.monotonic())
                    self.on_start(pending[msg[1]])
                elif kind == "result":
                    cell = pending.pop(msg[1])
                    deliver(build_result(cell, msg[2], **self._result_context(cell)))
                    current["index"] = None
                elif kind == "error":
                    cell = pending.pop(msg[1])
                    deliver(failed_result(cell, error=msg[2], **self._result_context(cell)))
                    current["index"] = None
                elif kind == "died":
                    if not pending:  # it died after sending its last result: nothing was lost
                        break
                    index = current["index"] if current["index"] is not None else min(pending)
                    cell = pending.pop(index)
                    if current["index"] is None:
                        self.on_start(cell)
                    deliver(failed_result(cell, error=msg[1], **self._result_context(cell)))
                    break
