"""Turn a cell's raw Measurements (one per independent process: its repetitions) into a Result: statistics
with CIs over processes, throughput, verdict, and every repetition's samples kept apart.

The store keeps only what was measured (`stored_form`) and derives the figures again on read (`rebuilt`), so a
change to a statistic applies to every stored result (schema 5, store/model.py). Deriving costs a bootstrap
or two per sample set (~0.1 s for a 10 s cell), so the store caches what was derived under
`derivation_digest()`, the digest of the code that derives it: a cache made by other code is never used."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np

from enginebench.measure.rates import SPIKY_LOW_CONFIDENCE, closed_loop_throughput, spiky_low_end
from enginebench.measure.stats import SPIKE_FACTOR, summarize
from enginebench.measure.verdict import MAX_SPREAD, few_processes_note, process_spread, repetitions_disagree, verdict
from enginebench.plan import Cell, Serving
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.registry import scenario_class
from enginebench.store.model import Result
from enginebench.store.shapes import check as check_shape

_PER_PROCESS_DETAILS = ("ttft_ns", "tpot_ns", "generation_steps", "requests")  # kept in each repetition's record, not in details
_SERVING_DETAILS = ("serving", "find_max_qps")  # a serving process's figures: Result.serving, not details
_ARRAYS = ("ttft_ns", "tpot_ns", "generation_steps", "requests")  # per-process details the repetition record keeps as arrays
_PROCESS_ONLY = ("gemm_probe", "measured_between", "fidelity_reused")  # each process's, in its repetition only
_DERIVED_DETAILS = ("wall_s", "processes", "notes", "measured_between")  # what build_result adds to the launcher's
_IDENTITY = ("engine", "model", "precision", "scenario", "workload", "batch_size", "seq_len", "workers", "threads",
             "settings")


def repetition_record(index: int, m: Measurement) -> dict:
    """One process's raw facts: every worker's samples apart, per-generation figures, its own load and memory."""
    record = {"index": index, "worker_samples": [np.asarray(s, dtype=np.int64).tolist() for s in m.worker_samples],
              "load_s": round(m.load_s, 4), "peak_rss_mb": round(m.peak_rss_mb, 1), "wall_s": round(m.wall_s, 4)}
    for key in _PER_PROCESS_DETAILS:
        if m.details.get(key) is not None:
            record[key] = list(m.details[key])
    return record


def measurement_record(m: Measurement) -> dict:
    """What rebuilds a process's Measurement besides the arrays its repetition record keeps."""
    return {"items_per_call": m.items_per_call, "tokens_per_item": float(m.tokens_per_item),
            "executed_precision": m.executed_precision, "fidelity": m.fidelity,
            "details": {k: v for k, v in m.details.items() if k not in _ARRAYS}}


def measurement_from_record(rep: dict) -> Measurement:
    saved = rep["measurement"]
    details = dict(saved["details"])
    for key in _ARRAYS:
        if rep.get(key) is not None:
            details[key] = list(rep[key])
    return Measurement(worker_samples=[np.asarray(w, dtype=np.int64) for w in rep["worker_samples"]],
                       items_per_call=saved["items_per_call"], tokens_per_item=saved["tokens_per_item"],
                       load_s=rep["load_s"], peak_rss_mb=rep["peak_rss_mb"],
                       executed_precision=saved["executed_precision"], wall_s=rep["wall_s"], details=details,
                       fidelity=saved["fidelity"])


def _verdict_reasons(cell: Cell, measurements: list[Measurement], indices: list[int],
                     errors: list[tuple[int, str]]) -> list[str]:
    """Every sample set (each worker of each process; TTFT per process) judged on its own; a kind of warning
    seen in several sets is said once, with the first set's figures and how many sets showed it."""
    found: dict[str, list[str]] = {}  # code -> messages, in order
    sets = {"": 0, "TTFT: ": 0}
    for r, m in zip(indices, measurements):
        workers = len(m.worker_samples)
        judged = [("", f" worker {w}" if workers > 1 else "", s) for w, s in enumerate(m.worker_samples)]
        if m.details.get("ttft_ns") is not None:  # a decoder's time to first token, judged apart
            judged.append(("TTFT: ", "", m.details["ttft_ns"]))
        for prefix, worker, samples in judged:
            sets[prefix] += 1
            v = verdict(samples)
            for code, reason in zip(v["codes"], v["reasons"]):
                where = f" (repetition {r + 1}{worker})" if len(indices) > 1 or worker else ""
                found.setdefault(prefix + code, []).append(f"{prefix}{reason}{where}")
    reasons = []
    for key, messages in found.items():
        total = sets["TTFT: " if key.startswith("TTFT: ") else ""]
        reasons.append(messages[0] if len(messages) == 1 else f"{messages[0]}; the same in {len(messages) - 1} "
                       f"more of {total} sample sets")
    reasons.extend(f"repetition {r + 1} failed ({error}): the figures come from {len(measurements)} processes"
                   for r, error in errors)
    return reasons


def _wide_interval_note(scenario, latency: dict, throughput: dict | None) -> str | None:
    """The note on the figure the cell is judged on when its interval is wide for want of processes: items/s
    where it is ranked on throughput, tokens/s for decoders (the inverse of the median call: the same relative
    width), the median latency otherwise."""
    if scenario.judged_on == "throughput" and (throughput or {}).get("ci95"):
        wide = few_processes_note(throughput["ci95"], throughput["items_per_s"], latency["processes"])
        return wide and f"items/s: {wide}"
    wide = few_processes_note(latency["ci95"], latency["median"], latency["processes"])
    return wide and f"{'tokens/s' if scenario.judged_on == 'tokens' else 'median latency'}: {wide}"


def first_fidelity(measurements: list[Measurement]) -> dict | None:
    """A cell's fidelity: the first of its processes (in repetition order) that measured one."""
    return next((m.fidelity for m in measurements if m.fidelity is not None), None)


def build_result(cell: Cell, measured: list[tuple[int, Measurement]], *, model: str, seq_len: int,
                 engine_version: str | None, engine_options: dict, details: dict,
                 errors: list[tuple[int, str]] = ()) -> Result:
    """`measured`: (repetition index, Measurement) for every process that measured the cell; `errors`:
    (repetition index, why) for those that failed. `details`: the launcher's context of the cell; the result's
    details are it with the first process's (less _PER_PROCESS_DETAILS, _SERVING_DETAILS and _PROCESS_ONLY), wall_s,
    processes, notes and the span all processes measured in (every key declared in store/records.py ResultDetails)."""
    indices = [r for r, _ in measured]
    measurements = [m for _, m in measured]
    m0 = measurements[0]
    groups = [np.concatenate([np.asarray(s, dtype=np.int64) for s in m.worker_samples]) for m in measurements]
    all_ns = np.concatenate(groups)
    spike_note = None
    latency = summarize(None, [g / 1e6 for g in groups]).to_dict()
    wall = sum(m.wall_s for m in measurements)
    scenario = scenario_class(cell.scenario)
    served = scenario.served(cell, measurements, indices)
    if served is not None:
        throughput = served["throughput"]
        # latencies from arrival vary by design (queueing): the server is judged by its SLO verdict alone
        reasons = served["reasons"] + ([] if not scenario.judges_spread(measurements) else
                                       _verdict_reasons(cell, measurements, indices, []))
        reasons += [f"repetition {r + 1} failed ({error})" for r, error in errors]
        extra = {"serving": served["serving"]}
    else:
        items_per_s, ci = closed_loop_throughput([m.worker_samples for m in measurements], m0.items_per_call)
        total_items = sum(s.size for s in groups) * m0.items_per_call
        throughput = {
            "items_per_s": items_per_s,
            "tokens_per_s": items_per_s * m0.tokens_per_item,
            "ci95": list(ci) if ci else None,
            "wall_items_per_s": total_items / wall if wall > 0 else None,
        }
        reasons = _verdict_reasons(cell, measurements, indices, list(errors))
        extra = {}
        spikes = spiky_low_end([m.worker_samples for m in measurements])
        if ci and spikes is not None:
            spike_note = (f"items/s: {spikes:.1%} of calls took over {SPIKE_FACTOR:g}× their worker's median: such "
                          f"spikes skew a rate over the mean call low, so its 95% CI reaches down to t's "
                          f"{SPIKY_LOW_CONFIDENCE:.0%} quantile")
    figures = dict(scenario.figures(cell, measurements, details))
    warnings = figures.pop("warnings", None) or []  # a served row's verdict is LoadGen's: there they are notes
    extra.update(figures)
    merged = {k: v for k, v in m0.details.items() if k not in _PER_PROCESS_DETAILS + _SERVING_DETAILS + _PROCESS_ONLY}
    spans = [m.details["measured_between"] for m in measurements if m.details.get("measured_between")]
    if spans:  # from the first process's start to the last one's end
        merged["measured_between"] = [min(s[0] for s in spans), max(s[1] for s in spans)]
    notes = list(dict.fromkeys(n for m in measurements for n in m.details.get("notes", ())))
    if served is None and spike_note:
        notes.append(spike_note)
    (reasons if served is None else notes).extend(warnings)
    if scenario.judges_spread(measurements):  # a server's latencies vary by design: its SLO verdict judges it
        disagree = repetitions_disagree(groups)
        if disagree and process_spread(groups) > MAX_SPREAD:
            reasons.append(f"{disagree}; beyond {MAX_SPREAD:.0%}: measure again on a quieter machine")
        elif disagree:
            notes.append(disagree)
        wide = _wide_interval_note(scenario, latency, throughput)
        if wide:
            notes.append(wide)
    executed = sorted({m.executed_precision for m in measurements})
    if len(executed) > 1:
        notes.append(f"repetitions ran different precisions: {', '.join(executed)}")
    if notes:
        merged["notes"] = notes
    loads = [m.load_s for m in measurements]
    return check_shape(Result(
        **extra,
        engine=cell.engine, model=model, precision=cell.precision, scenario=cell.scenario, workload=cell.workload,
        batch_size=cell.batch_size, seq_len=seq_len, workers=cell.workers, threads=cell.threads,
        settings=cell.settings.stored() if cell.settings else None, status="ok", engine_version=engine_version, executed_precision=m0.executed_precision,
        samples=all_ns.tolist(), latency_ms=latency, throughput=throughput, load_s=round(float(np.median(loads)), 4),
        peak_rss_mb=round(max(m.peak_rss_mb for m in measurements), 1),
        fidelity=first_fidelity(measurements),
        verdict={"ok": not reasons, "reasons": reasons}, engine_options=engine_options,
        details={**details, **merged, "wall_s": round(wall, 3), "processes": len(measurements)},
        repetitions=[repetition_record(r, m) for r, m in measured],
    ))


def failed_result(cell: Cell, *, model: str, seq_len: int, error: str, status: str = "failed",
                  engine_version: str | None = None, engine_options: dict | None = None,
                  details: dict | None = None) -> Result:
    return Result(
        engine=cell.engine, model=model, precision=cell.precision, scenario=cell.scenario, workload=cell.workload,
        batch_size=cell.batch_size, seq_len=seq_len, workers=cell.workers, threads=cell.threads,
        settings=cell.settings.stored() if cell.settings else None, status=status, error=error, engine_version=engine_version, engine_options=engine_options or {},
        details=details or {},
    )


def stored_form(result: Result) -> dict | None:
    """What the store keeps of an ok result whose every repetition carries its `measurement`: the cell's
    identity and context (the details the launcher gave build_result, attempts included) and the repetitions,
    nothing derived; `load_s` stays as an index that SQL readers use (sweep estimates, tune's costs). None for
    any other result (failed, skipped, built by hand, stored before schema 4): it is kept as it is."""
    reps = result.repetitions
    if result.status != "ok" or not reps or not all("measurement" in rep for rep in reps):
        return None
    first = reps[0]["measurement"]["details"]  # merged into details by build_result: kept there only
    details = {k: v for k, v in result.details.items() if k not in _DERIVED_DETAILS and not (
        k in first and k not in _PER_PROCESS_DETAILS + _SERVING_DETAILS and first[k] == v)}
    return {"kept": "measurements", **{k: getattr(result, k) for k in _IDENTITY},
            "status": "ok", "engine_version": result.engine_version, "engine_options": result.engine_options,
            "details": details,
            "reference": bool((result.fidelity or {}).get("reference")), "load_s": result.load_s,
            "repetitions": reps}


def pooled(results: list[Result]) -> Result | None:
    """One Result from the processes of several results of the same work (each measured in its own processes:
    runs minutes or days apart), its figures derived from them all as if one run had measured them; None when
    one of them keeps no measurement records (a result stored before schema 4)."""
    forms = [stored_form(r) for r in results]
    if any(f is None for f in forms):
        return None
    newest = forms[-1]
    reps = [{**rep, "index": i} for i, rep in enumerate(rep for f in forms for rep in f["repetitions"])]
    details = {k: v for k, v in newest["details"].items() if k != "attempts"}  # attempts name old indices
    return rebuilt({**newest, "details": details, "repetitions": reps})


def is_stored_form(d: dict) -> bool:
    return d.get("kept") == "measurements"


def rebuilt(d: dict) -> Result:
    """A result from its stored form (with its repetitions' arrays): its figures derived by today's code."""
    measured = [(rep["index"], measurement_from_record(rep)) for rep in d["repetitions"]]
    details = dict(d["details"])
    result = build_result(stored_cell(d), measured, model=d["model"], seq_len=d["seq_len"],
                          engine_version=d["engine_version"], engine_options=d["engine_options"], details=details,
                          errors=failed_repetitions(details.get("attempts") or [], {r for r, _ in measured}))
    result.repetitions = d["repetitions"]  # with their measurement records: what a resume reads
    # what a launcher set after build_result (Ray: the node of the last repetition) wins over the first's
    result.details.update(d["details"])
    if d.get("reference") and result.fidelity:
        result.fidelity = {**result.fidelity, "reference": True}
    return result


def stored_cell(d: dict) -> Cell:
    """The Cell a stored result measured (its serving settings are in details, as the launcher gave them)."""
    serving = (d.get("details") or {}).get("serving_settings")
    settings = d.get("settings")
    return Cell(d["engine"], d["precision"], d["scenario"], d["workload"], d["batch_size"], d["workers"],
                d["threads"], Serving(**serving) if serving else None,
                scenario_class(d["scenario"]).settings_from_dict(settings) if settings else None)


def failed_repetitions(attempts: list[dict], measured: set[int]) -> list[tuple[int, str]]:
    """(repetition, its last attempt's error) for each repetition that failed for good."""
    last = {a["repetition"]: a["error"] for a in attempts if a["repetition"] not in measured}
    return sorted(last.items())


_DERIVING = ("store/derive.py", "store/model.py", "plan.py", "measure", "scenarios")  # under enginebench/


@cache
def derivation_digest() -> str:
    """A digest of the source of the code that derives a result's figures from its measurements (statistics,
    verdict, rates, every scenario's figures): it changes whenever that code does."""
    return digest_of(Path(__file__).resolve().parent.parent)


def digest_of(root: Path) -> str:
    """The digest of _DERIVING's source files under `root`, the package's folder."""
    digest = hashlib.sha256()
    for part in _DERIVING:
        path = root / part
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
