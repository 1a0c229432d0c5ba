"""The kit the scenarios share against a running server (engines/endpoint.py): closed-loop request clients,
each request's record, and the figures derived from those records.

Clients are threads of the measuring process, each with its own keep-alive connection (endpoint/client.py);
a client sends its next request the moment its last one returns (latency: one client; concurrency: N). The
warm-up runs for rule.warmup_s; a request is *measured* when it was sent after the warm-up and answered before
the stop (the duration has passed and every client has rule.min_samples measured requests), so every measured
one ran under the full load. The others are counted (warm-up, tail) with their failures, never hidden.

Figures from the measured records (formulas in the README, "Benchmarking a running server"):
  e2e = done - sent; TTFT = first text chunk - sent; ITL = each gap between two text chunks;
  TPOT = (e2e - TTFT) / (output tokens - 1) for a request of at least 2 output tokens;
  request/s = measured ok requests / window; output tokens/s = their output tokens / window;
  goodput = ok requests meeting every SLO / window, and their share of all measured requests (failures count
  as missing every SLO); window = first measured send to the stop.
Output tokens are the generated text counted with the local tokenizer (--model), compared with the server's
`usage` where it reports one.

The client's own ceiling: before the clock, the cell's requests are sent by the same number of clients, parsed
the same way, to a minimal local server that answers at once (endpoint/minimal_server.py) for about a second;
its requests/s is what this client can drive on this machine. A figure at CLIENT_BOUND of it or more is flagged:
the client, not the server, may be what limits it.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from enginebench.display import significant
from enginebench.endpoint.client import FAILURES, Connection
from enginebench.endpoint.minimal_server import MODEL, minimal_server
from enginebench.measure.llm_fidelity import compare_served_generation
from enginebench.measure.memory import peak_rss_mb
from enginebench.measure.stats import over_processes, summarize
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.base import DECODER_REFERENCE, CellRun, Measurement
from enginebench.scenarios.server import percentiles

_clock = time.perf_counter_ns
CLIENT_BOUND = 0.5  # a figure at this share of the client's own ceiling or more is flagged
CEILING_RULE = StoppingRule(duration_s=1.0, min_samples=5, warmup_s=0.2)  # the ceiling's own short run
CHAT_FIDELITY = ("no fidelity through chat: the server wraps the prompt in its chat template, which the reference "
                 "does not; measure fidelity with --api completions")


def closed_loop_requests(session, items: list, clients: int, rule: StoppingRule, max_tokens: int | None) -> dict:
    """Drive `clients` closed-loop clients over `items` (cycled); every request's record, split into measured
    (sent after the warm-up, answered before the stop), warm-up and tail (in flight at the stop), and the
    measured window [end of the warm-up, stop] in ns."""
    lock = threading.Lock()
    picks = itertools.count()
    start_ns = _clock() + int(rule.warmup_s * 1e9)
    state = {"stop_ns": None}
    per_client = [0] * clients
    measured: list[dict] = []
    warmup: list[dict] = []
    tail: list[dict] = []
    errors: list[BaseException] = []

    def client(c: int) -> None:
        conn = Connection(session.target)
        try:
            while state["stop_ns"] is None:
                i = next(picks) % len(items)
                record = conn.send(items[i], max_tokens, client=c)
                record["item"] = i
                now = _clock()
                with lock:
                    if state["stop_ns"] is not None:
                        tail.append(record)
                    elif record["sent_ns"] < start_ns:
                        warmup.append(record)
                    else:
                        measured.append(record)
                        per_client[c] += 1
                        if now - start_ns >= rule.duration_s * 1e9 and min(per_client) >= rule.min_samples:
                            state["stop_ns"] = now
        except BaseException as e:  # a bug, not a failed request (those are records): end every client
            errors.append(e)
            state["stop_ns"] = state["stop_ns"] or _clock()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for phase, records in (("warmup", warmup), ("measured", measured), ("tail", tail)):
        for r in records:
            r["phase"] = phase
    return {"measured": measured, "warmup": warmup, "tail": tail, "window": [start_ns, state["stop_ns"]]}


def answered(got: dict) -> tuple[list[dict], float]:
    """The requests of a closed_loop_requests run answered without failure in its measured window, and that
    window in s."""
    start, stop = got["window"]
    return [r for r in got["measured"] if not r["failure"]], (stop - start) / 1e9


def client_ceiling(run: CellRun, session, items: list, max_tokens: int | None, clients: int) -> dict:
    """The client's own ceiling for the cell's requests: `clients` closed-loop clients sending them to the
    minimal local server (endpoint/minimal_server.py), which answers at once; measured once per job and shape
    of load. {"requests_per_s", "output_chunks_per_s" (generation), "clients", "window_s", "failed"}."""
    per_request = None if session.target.generates else len(items[0])
    known = run.cache.setdefault("client_ceiling", {})
    key = (session.target.api, clients, per_request, max_tokens)
    if key not in known:
        with minimal_server(session.embedding_dim) as url:
            target = replace(session.target, url=url, served_model=MODEL, api_key_env=None)
            got = closed_loop_requests(SimpleNamespace(target=target), items, clients, CEILING_RULE, max_tokens)
        ok, window = answered(got)
        known[key] = {"requests_per_s": len(ok) / window, "clients": clients, "window_s": window,
                      "failed": len(got["measured"]) - len(ok)}
        if session.target.generates:
            known[key]["output_chunks_per_s"] = sum(len(r.get("chunk_ns") or ()) for r in ok) / window
    return known[key]


def count_tokens(session, items_tokens: list[int], records: list[dict]) -> None:
    """Each record's input and output tokens with the local tokenizer (outside the clock); the text and the
    embeddings themselves are not kept."""
    for r in records:
        r["input_tokens"] = items_tokens[r["item"]]
        text = r.pop("text", None)
        r.pop("embeddings", None)
        if text is not None:
            r["output_tokens"] = session.count_tokens(text)


def failure_counts(records: list[dict]) -> dict:
    return {kind: sum(r["failure"] == kind for r in records) for kind in FAILURES}


def request_inputs(run: CellRun, session) -> tuple[list, list[int], int | None, int]:
    """The cell's requests as the API takes them: (inputs, each one's input tokens, max_tokens, items per
    request)."""
    if session.target.generates:
        items, tokens = session.prompts(run.workload.prompts)
        return items, tokens, run.workload.test.gen_len, 1
    items, tokens = session.texts(run.workload.pool, run.cell.batch_size)
    return items, tokens, None, run.cell.batch_size


def client_share(clients: int, part: int, parts: int) -> int:
    """How many of a cell's `clients` the client node `part` of `parts` runs (the first ones take the rest)."""
    return clients // parts + (part < clients % parts)


def measure_requests(run: CellRun, session, clients: int) -> Measurement:
    """One cell against the endpoint: `clients` closed-loop clients (1: one request at a time). On one client
    node of several (CellRun.client_part, --client-nodes), its share of the clients, started with the other
    nodes' (CellRun.start_together); the orchestrator merges the nodes' records (merge_client_parts)."""
    part, parts = run.client_part or (0, 1)
    clients = client_share(clients, part, parts)
    items, tokens, max_tokens, per_item = request_inputs(run, session)
    # before the clock: its requests never overlap the measured ones; of several client nodes, the first judges
    fidelity = served_fidelity(run, session) if part == 0 else None
    ceiling = client_ceiling(run, session, items, max_tokens, clients)
    if run.client_part is not None:
        start_at = run.start_together()  # epoch s at which every node's clients start, or None: not all came
        if start_at is None:
            raise RuntimeError("the other client nodes did not reach this cell's start in time (half its --timeout): "
                               "the cell is measured on all of them or on none")
        time.sleep(max(0.0, start_at - time.time()))
    epoch_offset_ns = time.time_ns() - _clock()  # this process's clock -> epoch ns, to merge nodes' records
    got = closed_loop_requests(session, items, clients, run.rule, max_tokens)
    for phase in ("measured", "warmup", "tail"):
        count_tokens(session, tokens, got[phase])
    measured = got["measured"]
    ok = [r for r in measured if not r["failure"]]
    if not ok:
        counts = {k: v for k, v in failure_counts(measured).items() if v}
        first = next((r["error"] for r in measured if r["error"]), "no request was measured")
        raise RuntimeError(f"every measured request failed ({counts}): {first}")
    per_client = [np.asarray([r["done_ns"] - r["sent_ns"] for r in ok if r["client"] == c], dtype=np.int64)
                  for c in range(clients)]
    start, stop = got["window"]
    records = sorted(got["warmup"] + measured + got["tail"], key=lambda r: r["sent_ns"])
    details = {**session.details, "requests": records, "notes": endpoint_notes(session), "clients": clients,
               "window_ns": int(stop - start), "window": [int(start), int(stop)], "client_ceiling": ceiling}
    if run.client_part is not None:
        details["client_part"] = {"part": part, "parts": parts, "epoch_offset_ns": epoch_offset_ns}
    return Measurement(worker_samples=[s for s in per_client if s.size], items_per_call=per_item,
                       tokens_per_item=_tokens_per_item(ok, per_item),
                       load_s=session.load_s, peak_rss_mb=peak_rss_mb(), executed_precision=run.precision,
                       wall_s=(stop - start) / 1e9, details=details, fidelity=fidelity)


def _tokens_per_item(ok: list[dict], per_item: int) -> float:
    """Mean input tokens per item of the answered requests (`per_item` items each)."""
    return float(np.mean([r["input_tokens"] for r in ok])) / per_item


_TIMES = ("scheduled_ns", "sent_ns", "first_ns", "done_ns")


def merge_client_parts(parts: list[Measurement], nodes: list[dict]) -> Measurement:
    """One cell measured by several client nodes at once (--client-nodes): their records on one clock (epoch
    ns), the clients numbered apart, over the window all of them were measuring ([latest start, earliest
    stop]: requests/s counts what completed in it from every node); the client's ceiling is the nodes' summed.
    `nodes[k]`: the machine of part k ({"hostname", "ray_node_id"}). Raises when the windows did not overlap."""
    records, samples, offset = [], [], 0
    starts, stops = [], []
    for m in parts:
        shift = m.details["client_part"]["epoch_offset_ns"]
        for r in m.details["requests"]:
            moved = {**r, "client": r["client"] + offset,
                     **{k: r[k] + shift for k in _TIMES if r.get(k) is not None}}
            if r.get("chunk_ns") is not None:
                moved["chunk_ns"] = [t + shift for t in r["chunk_ns"]]
            records.append(moved)
        samples += m.worker_samples
        start, stop = m.details["window"]
        starts.append(start + shift)
        stops.append(stop + shift)
        offset += m.details["clients"]
    start, stop = max(starts), min(stops)
    if stop <= start:
        raise RuntimeError("the client nodes' measured windows did not overlap: their loads never ran together")
    first = parts[0]
    ceilings = [m.details["client_ceiling"] for m in parts]
    spread = [{**node, "clients": m.details["clients"], "window_s": (m.details["window_ns"]) / 1e9,
               "requests": sum(r.get("phase", "measured") == "measured" for r in m.details["requests"])}
              for m, node in zip(parts, nodes)]
    overlap = (stop - start) / max(m.details["window_ns"] for m in parts)
    note = (f"client load spread over {len(parts)} nodes ("
            + ", ".join(f"{n.get('hostname') or '?'}: {n['clients']} client{'s' * (n['clients'] > 1)}" for n in spread)
            + f"), started together; figures over the {100 * overlap:.0f}% of their windows all measured in")
    details = {**first.details, "requests": sorted(records, key=lambda r: r["sent_ns"]), "clients": offset,
               "window_ns": int(stop - start), "window": [int(start), int(stop)],
               "client_ceiling": {"requests_per_s": sum(c["requests_per_s"] for c in ceilings), "clients": offset,
                                  "window_s": min(c["window_s"] for c in ceilings),
                                  "failed": sum(c["failed"] for c in ceilings)},
               "client_nodes": spread, "notes": list(first.details.get("notes") or []) + [note]}
    details.pop("client_part", None)
    ok = [r for r in details["requests"] if not r["failure"] and r.get("phase", "measured") == "measured"]
    return replace(first, worker_samples=samples, details=details, wall_s=(stop - start) / 1e9,
                   load_s=max(m.load_s for m in parts), peak_rss_mb=max(m.peak_rss_mb for m in parts),
                   tokens_per_item=_tokens_per_item(ok, first.items_per_call) if ok else first.tokens_per_item)


def endpoint_notes(session) -> list[str]:
    return [CHAT_FIDELITY] if session.target.api == "chat" else []


def served_fidelity(run: CellRun, session) -> dict | None:
    """What the server answers against the reference, once per workload and job: embeddings' min cosine on the
    workload's fidelity inputs, or generation's greedy agreement."""
    if session.target.generates:
        return generation_fidelity(run, session)
    if not run.fidelity_known():
        run.set_fidelity(session.run(session.prepare(run.workload.fidelity_inputs())))
    return run.fidelity()


def generation_fidelity(run: CellRun, session) -> dict | None:
    """The server's greedy generations against the reference's, once per job."""
    known = run.cache.setdefault("fidelity", {})
    if DECODER_REFERENCE not in known:
        reference = (run.references or {}).get(DECODER_REFERENCE)
        if session.target.api == "chat":  # the chat template wraps the prompt: not the reference's context
            known[DECODER_REFERENCE] = None  # said in the row's note (CHAT_FIDELITY)
        else:
            known[DECODER_REFERENCE] = compare_served_generation(session, reference) if reference else None
    return known[DECODER_REFERENCE]


# -- figures ----------------------------------------------------------------------------------------------

def endpoint_figures(measurements: list[Measurement]) -> dict | None:
    """Result fields of a cell measured against an endpoint ({"figures": {"requests": ...}}), with "warnings"
    for its verdict (build_result takes them out); None for others."""
    if measurements[0].details.get("requests") is None:
        return None
    figures = request_figures(measurements)
    return {"figures": {"requests": figures}, "warnings": client_bound(figures)}


def client_bound(figures: dict) -> list[str]:
    """The warning of a figure at CLIENT_BOUND of the client's own ceiling or more."""
    ceiling = figures.get("client_ceiling")
    if not ceiling or ceiling["share"] is None or ceiling["share"] < CLIENT_BOUND:
        return []
    return [f"{significant(100 * ceiling['share'], 2)}% of the client's own ceiling ({ceiling_words(ceiling)}): "
            "the client may be what limits this figure; measure from a machine with more cores, or with fewer "
            "clients"]


def ceiling_words(ceiling: dict) -> str:
    """`1,520 req/s with 1 client against a minimal local server`."""
    clients = ceiling["clients"]
    return (f"{significant(ceiling['requests_per_s'])} req/s with {clients} client{'s' if clients > 1 else ''} "
            "against a minimal local server")


def endpoint_table(result) -> str | None:
    """"endpoints" for a result measured against a server, None for the others."""
    return "endpoints" if (result.details or {}).get("endpoint") else None


def _ms(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) / 1e6


def per_request(r: dict) -> dict:
    """A measured record's own figures (ms; None where they do not apply): e2e, ttft, tpot, itl (a list)."""
    e2e = (r["done_ns"] - r["sent_ns"]) / 1e6
    out = {"e2e_ms": e2e, "ttft_ms": None, "tpot_ms": None, "itl_ms": []}
    chunks = r.get("chunk_ns")
    if r["failure"] or chunks is None:
        return out
    if r.get("first_ns") is not None:
        out["ttft_ms"] = (r["first_ns"] - r["sent_ns"]) / 1e6
        out["itl_ms"] = list(np.diff(_ms(chunks)))
        tokens = r.get("output_tokens") or 0
        if tokens >= 2:
            out["tpot_ms"] = (e2e - out["ttft_ms"]) / (tokens - 1)
    return out


def meets_slo(r: dict, figures: dict, slo: dict) -> bool:
    """An ok request within every SLO given (p99 targets judged per request: e2e, TTFT, TPOT)."""
    if r["failure"]:
        return False
    limits = {"slo_p99_ms": "e2e_ms", "slo_ttft_ms": "ttft_ms", "slo_tpot_ms": "tpot_ms"}
    for key, figure in limits.items():
        limit = slo.get(key)
        if limit and (figures[figure] is None and figure != "tpot_ms" or (figures[figure] or 0.0) > limit):
            return False
    return True


def measured_records(records: list[dict]) -> list[dict]:
    """The records a cell's latencies and failures are judged on: those sent after the warm-up and answered
    before the stop (a LoadGen run's: all of them)."""
    return [r for r in records if r.get("phase", "measured") == "measured"]


def completed_in_window(records: list[dict], m: Measurement) -> list[dict]:
    """The successful requests that completed inside the measured window, whichever phase sent them: what
    the window's rates count (in a closed loop, requests in flight at either edge used the window too)."""
    window = m.details.get("window")
    if window is None:  # a LoadGen run: its window spans every request
        return [r for r in records if not r["failure"]]
    return [r for r in records if not r["failure"] and window[0] <= r["done_ns"] <= window[1]]


def request_figures(measurements: list[Measurement]) -> dict:
    """The endpoint figures of a cell over its repetitions (each repetition's records apart for the CIs)."""
    every = [m.details["requests"] for m in measurements]
    reps = [measured_records(records) for records in every]
    slo = measurements[0].details.get("endpoint", {}).get("slo") or {}
    figures = [[per_request(r) for r in records] for records in reps]
    windows = [m.details["window_ns"] / 1e9 for m in measurements]
    out: dict = {"requests": sum(len(r) for r in reps)}
    out["failures"] = {k: sum(failure_counts(records)[k] for records in reps) for k in FAILURES}
    out["ok"] = out["requests"] - sum(out["failures"].values())
    statuses: dict[str, int] = {}
    for records in reps:
        for r in records:
            if r["failure"] == "http":
                statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    out["http_statuses"] = statuses
    for name in ("e2e_ms", "ttft_ms", "tpot_ms"):
        groups = [np.asarray([f[name] for f, r in zip(fs, rs) if not r["failure"] and f[name] is not None])
                  for fs, rs in zip(figures, reps)]
        if sum(g.size for g in groups):
            pooled = np.concatenate(groups)
            out[name] = {**percentiles(pooled), "median": summarize(None, [g for g in groups if g.size]).to_dict()}
    itl = [np.asarray([x for f in fs for x in f["itl_ms"]]) for fs in figures]
    if sum(g.size for g in itl):
        out["itl_ms"] = {**percentiles(np.concatenate(itl)), "median": summarize(None, [g for g in itl if g.size]).to_dict()}
    ok = [completed_in_window(records, m) for records, m in zip(every, measurements)]
    rates = [len(o) / w for o, w in zip(ok, windows) if w > 0]
    out["requests_per_s"] = _mean_ci(rates)
    out_tokens = [sum(r.get("output_tokens") or 0 for r in o) / w for o, w in zip(ok, windows) if w > 0]
    if any(r.get("output_tokens") is not None for o in ok for r in o):
        out["output_tokens_per_s"] = _mean_ci(out_tokens)
    out["input_tokens_per_s"] = _mean_ci([sum(r["input_tokens"] for r in o) / w for o, w in zip(ok, windows) if w > 0])
    out["unmeasured"] = {"requests": sum(len(e) - len(r) for e, r in zip(every, reps)),
                         **{k: sum(failure_counts([x for x in e if x.get("phase") in ("warmup", "tail")])[k]
                                   for e in every) for k in FAILURES}}
    out["tokens_vs_usage"] = _usage_check([r for o in ok for r in o])
    ceilings = [m.details.get("client_ceiling") for m in measurements]
    if all(ceilings) and out["requests_per_s"]["value"] is not None:
        rate = float(np.mean([c["requests_per_s"] for c in ceilings]))
        out["client_ceiling"] = {"requests_per_s": rate, "clients": ceilings[0]["clients"],
                                 "share": out["requests_per_s"]["value"] / rate if rate > 0 else None,
                                 "against": "a minimal local server (endpoint/minimal_server.py)"}
    reasons: dict[str, int] = {}
    for r in (r for o in ok for r in o if "finish_reason" in r):
        reasons[str(r["finish_reason"])] = reasons.get(str(r["finish_reason"]), 0) + 1
    if reasons:
        out["finish_reasons"] = reasons
    if slo:
        # goodput counts as request/s does (completed in the window); the share is of the measured requests
        good = [sum(meets_slo(r, per_request(r), slo) for r in o) for o in ok]
        met = sum(meets_slo(r, f, slo) for records, fs in zip(reps, figures) for r, f in zip(records, fs))
        out["slo"] = slo
        out["goodput_per_s"] = _mean_ci([g / w for g, w in zip(good, windows) if w > 0])
        out["slo_share"] = met / out["requests"] if out["requests"] else None
    return out


def _mean_ci(values: list[float]) -> dict:
    """A rate over repetitions as the project gives any figure over processes (measure/stats.py): their
    geometric mean with the t interval over them; one repetition (or a zero rate): the value, no interval."""
    if len(values) >= 2 and min(values) > 0:
        point, lo, hi = over_processes(values)
        return {"value": float(point), "ci95": [float(lo), float(hi)], "repetitions": len(values)}
    return {"value": float(np.mean(values)) if values else None, "ci95": None, "repetitions": len(values)}


def _usage_check(records: list[dict]) -> dict:
    """Local token counts against the server's `usage`, where it reported one."""
    out = {}
    for local, usage, name in (("input_tokens", "usage_prompt_tokens", "input"),
                               ("output_tokens", "usage_completion_tokens", "output")):
        pairs = [(r[local], r[usage]) for r in records if r.get(usage) is not None and r.get(local) is not None]
        if pairs:
            diff = np.asarray([a - b for a, b in pairs], dtype=np.float64)
            out[name] = {"compared": len(pairs), "equal": int((diff == 0).sum()),
                         "mean_local_minus_server": float(diff.mean())}
    return out


__all__ = ["answered", "merge_client_parts", "client_share", "client_ceiling", "client_bound", "ceiling_words", "CLIENT_BOUND", "measured_records", "completed_in_window", "closed_loop_requests", "measure_requests", "request_inputs", "served_fidelity", "endpoint_notes", "request_figures", "per_request", "meets_slo",
           "count_tokens", "failure_counts"]
