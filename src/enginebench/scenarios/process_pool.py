"""Worker processes of the serving scenarios: each spawned with a pipe for its tasks and one for its reports,
loaded and warmed up once (it reports ("ready", index, facts)), then serving until told to stop (it answers
("bye", index, facts)); ("error", index, text, traceback) from a worker ends the run that hears it."""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import wait as wait_connections

LOAD_TIMEOUT_S = 1800
STOP = None
POLL_S = 0.2


class ProcessPool:
    """`target(index, tasks, reports, *args)` in one spawned process per entry of `worker_args`."""

    what = "worker"  # how messages name a worker

    def __init__(self, target, worker_args: list[tuple]):
        ctx = mp.get_context("spawn")
        self.tasks, self.dones, self.procs = [], [], []
        for i, args in enumerate(worker_args):
            task_r, task_w = ctx.Pipe(duplex=False)
            done_r, done_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=target, daemon=True, args=(i, task_r, done_w, *args))
            proc.start()
            task_r.close()
            done_w.close()
            self.tasks.append(task_w)
            self.dones.append(done_r)
            self.procs.append(proc)
        self.ready: list[dict] = []

    @property
    def size(self) -> int:
        return len(self.procs)

    def start(self) -> list[dict]:
        """Wait until every worker has loaded and warmed up; their reports, in worker order."""
        reports: dict[int, dict] = {}
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while len(reports) < self.size:
            for conn in wait_connections(self.dones, timeout=POLL_S):
                msg = self.recv(conn)
                if msg[0] != "ready":
                    raise RuntimeError(f"{self.what} {msg[1]} before serving: {msg[0]} {msg[2:]}")
                reports[msg[1]] = msg[2]
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what}s did not load within {LOAD_TIMEOUT_S} s")
        self.ready = [reports[i] for i in range(self.size)]
        return self.ready

    def recv(self, conn):
        try:
            msg = conn.recv()
        except EOFError:
            w = self.dones.index(conn)
            raise RuntimeError(f"{self.what} {w} ended without a word (exit code {self.procs[w].exitcode})") from None
        if msg[0] == "error":
            raise RuntimeError(f"{self.what} {msg[1]}: {msg[2]}")
        return msg

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if not p.is_alive() and p.exitcode not in (0, None):
                raise RuntimeError(f"{self.what} {i} died with exit code {p.exitcode}")

    def close(self) -> list[dict]:
        """Stop the workers; their last words (peak memory), where they could still say them."""
        byes: dict[int, dict] = {}
        for conn in self.tasks:
            try:
                conn.send(STOP)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while len(byes) < self.size and time.monotonic() < deadline:
            for conn in wait_connections([c for i, c in enumerate(self.dones) if i not in byes], timeout=POLL_S):
                try:
                    msg = conn.recv()
                except EOFError:
                    byes[self.dones.index(conn)] = {}
                    continue
                if msg[0] == "bye":
                    byes[msg[1]] = msg[2]
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        return [byes.get(i, {}) for i in range(self.size)]


__all__ = ["ProcessPool", "LOAD_TIMEOUT_S", "STOP", "POLL_S"]
