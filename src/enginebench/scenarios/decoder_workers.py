"""The worker processes of the decoder server scenario: each loads its own decoder session, warms it up, and
serves the requests the parent sends it, reporting each request's first token and completion.

A worker schedules its requests in one of two ways, recorded with the result:
- continuous (sessions offering SlotDecoding, e.g. llama.cpp's parallel sequences): a request joins the
  running batch between two decode steps (its prompt prefilled into a free slot first) and leaves when done;
  up to `max_batch` sequences decode together, iteration by iteration, as vLLM and llama.cpp's server do.
- static (every other decoder): a free worker takes up to `max_batch` queued requests (waiting at most
  `max_wait` for the batch to fill), prefills them together and decodes them together to the end; requests
  arriving meanwhile wait for the next batch, as TorchServe's batching does.
"""

from __future__ import annotations

import queue as queue_mod
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

import numpy as np

from enginebench.engines.base import DecoderSession, SlotDecoding
from enginebench.measure.llm_fidelity import compare_decoder
from enginebench.measure.memory import peak_rss_mb, start_peak_window
from enginebench.scenarios.process_pool import STOP as _STOP
from enginebench.scenarios.process_pool import ProcessPool


@dataclass
class Request:
    query_id: int
    prompt: int  # row of the prompt set
    arrival_ns: int


def _inbox(conn) -> queue_mod.Queue:
    """The parent's requests, read from the pipe on a thread of their own: the parent never blocks on a full
    pipe while this worker is busy generating."""
    box: queue_mod.Queue = queue_mod.Queue()

    def read():
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                item = _STOP
            box.put(item)
            if item is _STOP:
                return

    threading.Thread(target=read, daemon=True).start()
    return box


def _static_loop(session, prompts: np.ndarray, gen_len: int, max_batch: int, max_wait_ns: int, box, send) -> None:
    """Request-level batching: up to max_batch queued requests prefilled and decoded together to the end."""
    waiting: deque[Request] = deque()
    while True:
        if not waiting:
            item = box.get()
            if item is _STOP:
                return
            waiting.append(item)
        while len(waiting) < max_batch:  # fill the batch, holding the oldest request at most max_wait
            left = (waiting[0].arrival_ns + max_wait_ns - time.perf_counter_ns()) / 1e9
            try:
                item = box.get(timeout=left) if left > 0 else box.get_nowait()
            except queue_mod.Empty:
                break
            if item is _STOP:
                return
            waiting.append(item)
        batch = [waiting.popleft() for _ in range(min(max_batch, len(waiting)))]
        ids = [r.query_id for r in batch]
        admitted = time.perf_counter_ns()
        session.reset()
        token = session.prefill(prompts[[r.prompt for r in batch]]).argmax(-1)
        send(("first", ids, admitted, len(batch)))
        for _ in range(gen_len - 1):
            token = session.decode(token[:, None]).argmax(-1)
        send(("done", ids))


def _continuous_loop(session, prompts: np.ndarray, gen_len: int, max_batch: int, box, send) -> None:
    """Iteration-level batching: between two decode steps, queued requests are prefilled into free slots and
    finished ones leave; every active sequence advances one token per step."""
    session.open_slots(max_batch)
    free = list(range(max_batch - 1, -1, -1))
    active: dict[int, list] = {}  # slot -> [query id, last token, tokens produced]
    waiting: deque[Request] = deque()
    while True:
        block = not active and not waiting
        while True:
            try:
                item = box.get() if block else box.get_nowait()
            except queue_mod.Empty:
                break
            if item is _STOP:
                return
            waiting.append(item)
            block = False
        while waiting and free:
            request = waiting.popleft()
            slot = free.pop()
            admitted = time.perf_counter_ns()
            token = int(session.prefill_slot(slot, prompts[request.prompt]).argmax(-1))
            send(("first", [request.query_id], admitted, len(active) + 1))
            active[slot] = [request.query_id, token, 1]
        if not active:
            continue
        slots = np.fromiter(active, dtype=np.int64)
        logits = session.decode_slots(slots, np.array([active[s][1] for s in slots.tolist()], dtype=np.int64))
        finished = []
        for k, slot in enumerate(slots.tolist()):
            entry = active[slot]
            entry[1], entry[2] = int(logits[k].argmax()), entry[2] + 1
            if entry[2] >= gen_len:
                finished.append(entry[0])
                del active[slot]
                session.free_slot(slot)
                free.append(slot)
        if finished:
            send(("done", finished))


def _warm_up(session, prompts: np.ndarray, gen_len: int, max_batch: int, continuous: bool, warmup_s: float) -> dict:
    """Whole generations at batch 1 and at max_batch (engines compiling per shape do it now), then the figures
    --find-max-qps starts from: a prefill's and a decode step's median time at both sizes (ms)."""
    sizes = sorted({1, max_batch})
    times = {s: {"prefill": [], "decode": []} for s in sizes}
    deadline = time.perf_counter() + warmup_s
    if continuous:
        session.open_slots(max_batch)
    while True:
        for s in sizes:
            rows = np.arange(s) % len(prompts)
            t0 = time.perf_counter_ns()
            if continuous:
                token = np.array([session.prefill_slot(k, prompts[r]).argmax(-1) for k, r in enumerate(rows)])
            else:
                session.reset()
                token = session.prefill(prompts[rows]).argmax(-1)
            times[s]["prefill"].append((time.perf_counter_ns() - t0) / s)
            for _ in range(min(gen_len - 1, 8)):
                t0 = time.perf_counter_ns()
                if continuous:
                    token = session.decode_slots(np.arange(s), token).argmax(-1)
                else:
                    token = session.decode(token[:, None]).argmax(-1)
                times[s]["decode"].append(time.perf_counter_ns() - t0)
            if continuous:
                for k in range(s):
                    session.free_slot(k)
        if time.perf_counter() >= deadline and len(times[sizes[0]]["prefill"]) >= 2:
            break
    return {s: {k: float(np.median(v[-20:])) / 1e6 for k, v in t.items()} for s, t in times.items()}


def _worker_main(index: int, tasks, events, load_session, prompts: np.ndarray, gen_len: int, max_batch: int,
                 max_wait_ns: int, warmup_s: float, reference, precision: str) -> None:
    try:
        t0 = time.perf_counter()
        session = load_session()
        load_s = time.perf_counter() - t0
        if not isinstance(session, DecoderSession):
            raise TypeError(f"the decoder server needs a decoder session, not a {type(session).__name__}")
        fidelity = None
        if reference is not None:  # worker 0 checks the engine against the reference, before serving
            try:
                fidelity = compare_decoder(session, reference, precision)
            except NotImplementedError as e:
                fidelity = {"metric": "top1_agreement", "value": None, "ok": False, "threshold": None,
                            "error": str(e)}
        continuous = isinstance(session, SlotDecoding)
        details = dict(session.details)
        start_peak_window(details)
        service = _warm_up(session, prompts, gen_len, max_batch, continuous, warmup_s)
        events.send(("ready", index, {"load_s": load_s, "service_ms": service, "details": details,
                                      "executed_precision": session.executed_precision, "fidelity": fidelity,
                                      "batching": "continuous" if continuous else "static"}))
        box = _inbox(tasks)
        if continuous:
            _continuous_loop(session, prompts, gen_len, max_batch, box, events.send)
        else:
            _static_loop(session, prompts, gen_len, max_batch, max_wait_ns, box, events.send)
        events.send(("bye", index, {"peak_rss_mb": peak_rss_mb()}))
    except BaseException as e:  # noqa: BLE001 - report anything; the parent decides
        try:
            events.send(("error", index, f"{type(e).__name__}: {e}", traceback.format_exc()))
        except OSError:
            pass


class DecoderWorkers(ProcessPool):
    """`workers` processes, each loading its own session, warmed up once, then serving any number of runs."""

    what = "decoder worker"

    def __init__(self, load_session, prompts: np.ndarray, gen_len: int, workers: int, max_batch: int,
                 max_wait_ms: float, warmup_s: float, reference=None, precision: str = "fp32"):
        super().__init__(_worker_main, [(load_session, prompts, gen_len, max_batch, int(max_wait_ms * 1e6), warmup_s,
                                         reference if i == 0 else None, precision) for i in range(workers)])


__all__ = ["DecoderWorkers", "Request"]
