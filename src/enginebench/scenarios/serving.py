"""The LoadGen scenarios as registered scenarios: server (encoders and decoders) and offline. Their machinery
is in server.py, offline.py and decoder_server.py, over the kit in loadgen_sut.py."""

from __future__ import annotations

import numpy as np

from enginebench.display import significant as _num
from enginebench.measure.stats import over_processes
from enginebench.plan import Cell, Serving
from enginebench.scenarios.base import (
    DECODER_REFERENCE,
    CellRun,
    Grid,
    Measurement,
    Scenario,
    worker_args,
    workload_args,
)
from enginebench.scenarios.decoder_server import run_decoder_server
from enginebench.scenarios.endpoint_server import endpoint_served, measure_endpoint_offline, measure_endpoint_server
from enginebench.scenarios.offline import run_offline
from enginebench.scenarios.requests import endpoint_figures, endpoint_table
from enginebench.scenarios.server import over_searches, percentiles, run_server
from enginebench.scenarios.throughput import worker_cells


class Server(Scenario):
    """Queries arrive as a Poisson process (LoadGen's Server) into the workers' queue: VALID or INVALID
    against the p99 target from arrival. Decoders' requests are judged on their TTFT and TPOT
    (scenarios/decoder_server.py)."""

    name = "server"
    model_kinds = ("encoder", "decoder")
    needs = "mlperf_loadgen"
    install = "pip install 'enginebench[loadgen]'"
    workers_load_sessions = True
    shows_workers = True
    takes_serving = True
    serving_options = ("qps", "slo_p99", "slo_ttft", "slo_tpot", "max_batch", "max_wait", "find_max_qps",
                       "search_within")
    needs_arrival_rate = True
    judged_by_spread = False  # latencies from arrival vary by design: the SLO verdict judges a server
    unranked_because = "server scenario (judged VALID/INVALID against its SLO, not ranked)"  # items/s = offered
    drives_endpoint = True

    def cells(self, grid: Grid, settings=None) -> list[Cell]:
        return worker_cells(self.name, grid, [grid.serving.max_batch], serving=grid.serving)

    def measure(self, run: CellRun) -> Measurement:
        if run.remote:  # a server: LoadGen's arrivals sent as requests (scenarios/endpoint_server.py)
            return measure_endpoint_server(run, run.session())
        if run.model_kind == "decoder":  # its first worker checks the fidelity before serving
            run.loading()  # each worker loads its own session
            known = run.known_fidelity
            reference = (run.references or {}).get(DECODER_REFERENCE) if known is None else None
            m = run_decoder_server(run.factory, run.workload, run.cell, run.rule, reference, run.precision,
                                   on_loaded=run.loaded, repetition=run.repetition, on_trial=run.trial_started)
            if known is not None:
                m.fidelity = known
            return m
        return run.in_worker_processes(lambda want, loaded: run_server(
            run.factory, run.workload, run.cell, run.rule, want, on_loaded=loaded, repetition=run.repetition,
            on_trial=run.trial_started))

    def table(self, result) -> str:
        return endpoint_table(result) or (
            "decoder serving" if (result.serving or {}).get("kind") == "decoder" else "encoders")

    def figures(self, cell: Cell, measurements: list[Measurement], details: dict) -> dict:
        return endpoint_figures(measurements) or {}

    def served(self, cell: Cell, measurements: list[Measurement], indices: list[int]) -> dict:
        """Its items/s is the rate it achieved; with several processes the latencies (TTFT and TPOT for
        decoders) are pooled over them."""
        if measurements[0].details.get("endpoint"):
            return endpoint_served(measurements)
        serving, reasons = _serving_common(cell, measurements, indices)
        figures = [m.details["serving"] for m in measurements]
        if len(figures) > 1:
            for key in ("latency", "ttft", "tpot"):
                if f"{key}_ms" in serving:
                    _pool(serving, key, figures, measurements)
            rate, lo, hi = over_processes([f["achieved_qps"] for f in figures])
            serving["achieved_qps"], serving["achieved_qps_ci95"] = float(rate), [float(lo), float(hi)]
        rate = serving["achieved_qps"]
        throughput = {"items_per_s": rate, "tokens_per_s": rate * measurements[0].tokens_per_item,
                      "ci95": serving["achieved_qps_ci95"], "wall_items_per_s": rate}
        return {"serving": serving, "throughput": throughput, "reasons": reasons}

    frame_columns = {
        "target_qps": "float64", "achieved_qps": "float64", "achieved_qps_ci95_lo": "float64",
        "achieved_qps_ci95_hi": "float64", "slo_p99_ms": "float64", "slo_ttft_ms": "float64", "slo_tpot_ms": "float64",
        "loadgen_valid": "boolean", "max_qps": "float64", "max_qps_ci95_lo": "float64", "max_qps_ci95_hi": "float64",
        "max_batch": "Int64", "max_wait_ms": "float64",
    }

    def frame_values(self, result) -> dict:
        """The rate asked (or the endpoint's offered one) and achieved, the targets, LoadGen's verdict, the
        --find-max-qps answer with its interval over searches, and the batcher's settings."""
        s = result.serving or {}
        settings = s.get("settings") or {}
        achieved = s.get("achieved_qps_ci95") or (None, None)
        search = s.get("find_max_qps") or {}
        best = search.get("max_qps_ci95") or (None, None)
        return {"target_qps": s.get("target_qps", s.get("offered_qps")), "achieved_qps": s.get("achieved_qps"),
                "achieved_qps_ci95_lo": achieved[0], "achieved_qps_ci95_hi": achieved[1],
                "slo_p99_ms": s.get("slo_p99_ms", settings.get("slo_p99_ms")),
                "slo_ttft_ms": s.get("slo_ttft_ms", settings.get("slo_ttft_ms")),
                "slo_tpot_ms": s.get("slo_tpot_ms", settings.get("slo_tpot_ms")), "loadgen_valid": s.get("valid"),
                "max_qps": search.get("max_qps"), "max_qps_ci95_lo": best[0], "max_qps_ci95_hi": best[1],
                "max_batch": settings.get("max_batch"), "max_wait_ms": settings.get("max_wait_ms")}

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        s = (result.serving or {}).get("settings") or {}
        if (result.serving or {}).get("kind") == "decoder":  # its workload is the request shape, pp64+tg16
            prompt, _, gen = result.workload.partition("+")
            out = ["--prompt-len", prompt[2:], "--gen-len", gen[2:]]
        else:
            out = workload_args(result, corpus)
        out += worker_args(result) + ["--max-batch", str(s.get("max_batch", 1))]
        if s.get("max_wait_ms"):
            out += ["--max-wait", f"{s['max_wait_ms']:g}"]
        for key, flag in (("slo_p99_ms", "--slo-p99"), ("slo_ttft_ms", "--slo-ttft"), ("slo_tpot_ms", "--slo-tpot")):
            if s.get(key) is not None:
                out += [flag, f"{s[key]:g}"]
        if s.get("find_max_qps"):
            out.append("--find-max-qps")
        if s.get("qps"):
            out += ["--qps", f"{s['qps']:g}"]
        return out

    def note(self, result) -> str:
        s = result.serving or {}
        if s.get("kind") == "endpoint":  # its notes are the endpoint table's (formats/tables/endpoint.py)
            return ""
        queue = s.get("queue") or {}
        return (f"server: median/p99 from {s.get('percentiles_from') or 'arrival'}, queueing included"
                f"{_issue_stamp(s)}; items/s = achieved {_num(s['achieved_qps'])} q/s of "
                f"{_num(s['scheduled_qps'])} scheduled; at most {queue.get('max', '?')} queries in the system"
                f"{_batched(s)}; LoadGen {_said(s)}")


class Offline(Server):
    """Every query available at once (LoadGen's Offline); the engine batches up to --max-batch per call."""

    name = "offline"
    model_kinds = ("encoder",)
    serving_options = ("max_batch",)  # every query is there at once: a batch never waits to fill
    needs_arrival_rate = False
    judged_by_spread = True
    drives_endpoint = True

    def cells(self, grid: Grid, settings=None) -> list[Cell]:
        """Its cells keep only the serving settings that shape its work (the batch, LoadGen's seed), so an offline
        cell planned beside a server's rate and targets is the same cell as one planned alone."""
        serving = Serving(max_batch=grid.serving.max_batch, seed=grid.serving.seed)
        return worker_cells(self.name, grid, [serving.max_batch], serving=serving)

    def measure(self, run: CellRun) -> Measurement:
        if run.remote:  # a server: every request issued at once, sent on the client threads
            return measure_endpoint_offline(run, run.session())
        return run.in_worker_processes(lambda want, loaded: run_offline(
            run.factory, run.workload, run.cell, run.rule, want, on_loaded=loaded, repetition=run.repetition))

    unranked_because = None  # its items/s is what it achieved with every query available

    def judges_spread(self, measurements: list[Measurement]) -> bool:
        """Against a server every request is issued at once: each one's latency is mostly its wait in the queue,
        by design, so LoadGen's verdict judges the cell, as for the server scenario."""
        return not measurements[0].details.get("endpoint")

    def table(self, result) -> str:
        return endpoint_table(result) or "encoders"

    def served(self, cell: Cell, measurements: list[Measurement], indices: list[int]) -> dict:
        """Its items/s is the samples LoadGen completed over its own clock, transfers and partial batches as
        they were; over processes their geometric mean with a t interval."""
        if measurements[0].details.get("endpoint"):
            return endpoint_served(measurements)
        serving, reasons = _serving_common(cell, measurements, indices)
        rates = [m.details["serving"]["samples_per_s"] for m in measurements]
        items_per_s, ci = rates[0], None
        if len(rates) > 1:
            point, lo, hi = over_processes(rates)
            items_per_s, ci = float(point), [float(lo), float(hi)]
        serving["samples_per_s"] = items_per_s
        throughput = {"items_per_s": items_per_s, "tokens_per_s": items_per_s * measurements[0].tokens_per_item,
                      "ci95": ci, "wall_items_per_s": items_per_s}
        return {"serving": serving, "throughput": throughput, "reasons": reasons}

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        s = (result.serving or {}).get("settings") or {}
        return workload_args(result, corpus) + worker_args(result) + ["--max-batch", str(s.get("max_batch", 1))]

    def note(self, result) -> str:
        s = result.serving or {}
        if s.get("kind") == "endpoint":  # its notes are the endpoint table's (formats/tables/endpoint.py)
            return ""
        return f"offline: {_num(s['samples_per_s'])} samples/s over the run{_batched(s)}; LoadGen {_said(s)}"


def _serving_common(cell: Cell, measurements: list[Measurement], indices: list[int]) -> tuple[dict, list[str]]:
    """Result.serving from the processes' own figures (the first's, each repetition's beside when several), and
    the verdict's reasons LoadGen and the targets gave, naming the repetition."""
    figures = [m.details["serving"] for m in measurements]
    serving = {**figures[0], "settings": cell.serving.to_dict() if cell.serving else None}
    searches = [m.details["find_max_qps"] for m in measurements if m.details.get("find_max_qps")]
    if searches:
        serving["find_max_qps"] = over_searches(searches)
    reasons = [reason + (f" (repetition {r + 1})" if len(figures) > 1 else "")
               for r, f in zip(indices, figures) for reason in f["reasons"]]
    if len(figures) > 1:
        serving["repetitions"] = [{k: v for k, v in f.items() if k != "queue"} for f in figures]
        serving["valid"] = all(f["valid"] for f in figures)
    return serving, reasons


def _pool(serving: dict, key: str, figures: list[dict], measurements: list[Measurement]) -> None:
    """One figure (`latency`, `ttft`, `tpot`) over the processes: enginebench's stamps pooled; LoadGen's
    percentiles, which keep no per-query values, as an interval over the processes (older figures: pooled)."""
    ns = [np.concatenate(m.worker_samples) if key == "latency" else np.asarray(m.details[f"{key}_ns"])
          for m in measurements]
    pooled = percentiles(np.concatenate(ns) / 1e6)
    if f"issue_{key}_ms" in serving:
        serving[f"{key}_ms"] = _over_processes([f[f"{key}_ms"] for f in figures])
        serving[f"issue_{key}_ms"] = pooled
    else:
        serving[f"{key}_ms"] = pooled


def _over_processes(each: list[dict]) -> dict:
    """Percentile figures given per process (LoadGen's, which keep no per-query latencies) as one: the
    processes' geometric mean with a t interval over them (measure.stats.over_processes)."""
    out = {}
    for q in ("p50", "p90", "p99"):
        values = [f[q]["value"] for f in each]
        if min(values) <= 0:  # no logarithm (a TPOT of one-token requests): the median, no interval
            out[q] = {"value": float(np.median(values)), "ci95": None, "processes": values}
            continue
        point, lo, hi = over_processes(values)
        out[q] = {"value": float(point), "ci95": [float(lo), float(hi)], "processes": values}
    return out


def _issue_stamp(serving: dict) -> str:
    """enginebench's own breakdown beside LoadGen's figures: from its issue callback, the wait for a worker
    and the call alone (older results have none)."""
    own = serving.get("issue_latency_ms")
    if not own:
        return ""
    p99 = own["p99"]
    ci = f" [{_num(p99['ci95'][0])}–{_num(p99['ci95'][1])}]" if p99.get("ci95") else ""
    call = (serving.get("batching") or {}).get("call_ms_median")
    return (f" (from enginebench's issue callback: p50 {_num(own['p50']['value'])}, p99 {_num(p99['value'])}{ci} ms;"
            f" wait p99 {_num(serving['wait_ms']['p99'])} ms" + (f"; call {_num(call)} ms" if call else "") + ")")


def _said(serving: dict) -> str:
    """LoadGen's verdict, each repetition's when there are several."""
    each = serving.get("repetitions") or [serving]
    return ", ".join((f.get("loadgen") or {}).get("validity", "no result") for f in each)


def _batched(serving: dict) -> str:
    batches = serving.get("batching") or {}
    return f"; {batches['mean_size']:.2g} queries per call" if batches.get("mean_size", 1) > 1 else ""



__all__ = ["Server", "Offline"]
