"""Tables a person reads at a glance: one row per result, median ± CI, units in headers.

Only the parameters that vary across the results become columns; the constant ones go in the title.
"""

from __future__ import annotations

from enginebench.display import significant as _num
from enginebench.formats.tables.section import Section
from enginebench.measure.compute_roofline import drift_words
from enginebench.measure.host_load import busy_note
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.registry import in_table, scenario_class, settings_label
from enginebench.store.labels import plus_minus, precision_label, serving_label, threads_label
from enginebench.store.model import Result, Run

_PARAMS = [  # (header, getter)
    ("engine", lambda r: r.engine),
    ("precision", lambda r: precision_label(r)),
    ("scenario", lambda r: r.scenario),
    ("workload", lambda r: r.workload),
    ("seq", lambda r: str(r.seq_len)),
    ("batch", lambda r: str(r.batch_size)),
    ("workers×threads", lambda r: threads_label(r)),
    ("serving", lambda r: serving_label(r)),
    ("settings", lambda r: settings_label(r.scenario, r.settings)),  # a scenario's own (concurrency: clients)
]
ALWAYS_SHOWN = {"engine"}


def _percentile(figure: dict, bare: bool) -> str:
    """A percentile ± its CI; `bare` ones without a CI (LoadGen's of one process: it keeps no per-query
    latencies) show no `(n=1)`."""
    if figure["ci95"] is None and bare:
        return _num(figure["value"], 3)
    return plus_minus(figure["value"], figure["ci95"])


def _fidelity(r: Result) -> str:
    f = r.fidelity
    if not f:
        return "n/a"
    if f.get("reference"):  # the row every other is compared with: not a pass against itself
        return "reference"
    if f.get("value") is None:
        return "FAIL " + f.get("error", "")
    mark = "ok" if f["ok"] else "FAIL"
    return f"{f['value']:.6f} {mark}"


def _verdict(r: Result) -> str:
    if r.status != "ok":
        return r.status.upper()
    if r.serving and not scenario_class(r.scenario).judged_by_spread:  # LoadGen's words: VALID / INVALID
        return "VALID" if r.verdict["ok"] else f"INVALID ({len(r.verdict['reasons'])})"
    return "ok" if r.verdict["ok"] else f"warn ({len(r.verdict['reasons'])})"


MEASURE_HEADERS = ["median (ms)", "p99 (ms)", "items/s", "tokens/s", "load (s)", "peak RSS (MB)",
                   "fidelity (min cos)", "verdict"]
ROOFLINE_HEADER = "% roofline"


def shows_roofline(results: list[Result]) -> bool:
    """The % roofline column is shown where a result has the figure or says why it has none (encoders)."""
    return any(r.roofline for r in results)


def measure_headers(results: list[Result]) -> list[str]:
    if not shows_roofline(results):
        return MEASURE_HEADERS
    at = MEASURE_HEADERS.index("items/s") + 1
    return MEASURE_HEADERS[:at] + [ROOFLINE_HEADER] + MEASURE_HEADERS[at:]


def roofline_text(r: Result) -> str:
    """`54 ± 3` (% of the machine's compute roofline, its CI carried from items/s); — when unknown."""
    figure = r.roofline or {}
    pct, ci = figure.get("pct_of_roofline"), figure.get("ci95")
    if pct is None:
        return "—"
    drifted = "*" if (figure.get("beside") or {}).get("drifted") else ""  # the notes say at what speed
    if not ci:
        return f"{pct:.0f}{drifted}"
    half = max(pct - ci[0], ci[1] - pct)
    return (f"{pct:.0f} ± {half:.1f}" if half < 1 else f"{pct:.0f} ± {half:.0f}") + drifted


def _measures(r: Result, roofline: bool = False) -> list[str]:
    figures = _figures(r)
    if roofline:
        at = MEASURE_HEADERS.index("items/s") + 1
        figures = figures[:at] + [roofline_text(r) if r.status == "ok" else "—"] + figures[at:]
    return figures


def _figures(r: Result) -> list[str]:
    if r.status != "ok":
        return ["—"] * (len(MEASURE_HEADERS) - 1) + [_verdict(r)]
    lat, thr = r.latency_ms, r.throughput
    # percentiles with their CIs where the scenario derived them: a server's from arrival, queueing included
    # (its items/s: the achieved q/s), a concurrency's per query as its clients saw them
    p = (r.figures or {}).get("latency_ms") or (r.serving or {}).get("latency_ms")
    if p:
        bare = bool((r.serving or {}).get("percentiles_from"))  # LoadGen's: no CI of one process
        median, p99 = _percentile(p["p50"], bare), _percentile(p["p99"], bare)
    else:
        median, p99 = plus_minus(lat["median"], lat["ci95"]), _num(lat["p99"])
    return [
        median,
        p99,
        plus_minus(thr["items_per_s"], thr["ci95"]),
        _num(thr["tokens_per_s"]),
        f"{r.load_s:.2f}" if r.load_s is not None else "—",
        f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "—",
        _fidelity(r),
        _verdict(r),
    ]


def table_rows(results: list[Result]) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """(headers, rows, constants): the varying parameters and the measures, plus the constant parameters."""
    varying, constants = [], {}
    for header, get in _PARAMS:
        values = {get(r) for r in results}
        if header in ALWAYS_SHOWN or len(values) > 1:
            varying.append((header, get))
        elif values and values != {""}:  # a parameter no result has (serving, for the other scenarios)
            constants[header] = values.pop()
    roofline = shows_roofline(results)
    rows = [[get(r) for _, get in varying] + _measures(r, roofline) for r in results]
    return [h for h, _ in varying] + measure_headers(results), rows, constants


def skipped_notes(results: list[Result]) -> list[str]:
    """One line per engine × precision skipped, however many cells (tests, batches, workloads) it covered."""
    seen: dict[tuple[str, str, str], int] = {}
    for r in results:
        if r.status == "skipped":
            key = (r.engine, r.precision, r.error or "")
            seen[key] = seen.get(key, 0) + 1
    return [f"{engine} {precision}: skipped ({n} cell{'' if n == 1 else 's'}): {error}"
            for (engine, precision, error), n in seen.items()]


def result_notes(results: list[Result], tag_of, fidelity_text) -> list[str]:
    """Footnotes: skips, failures with their error, warnings with their reasons, fidelity failures, and the
    notes an engine left in `details["notes"]` (e.g. a saturating int8 kernel).
    `tag_of(i, result)` names a row; `fidelity_text(fidelity)` says why its fidelity failed."""
    lines = skipped_notes(results)
    for i, r in enumerate(results, 1):
        if r.status == "skipped":
            continue
        tag = tag_of(i, r)
        if r.status != "ok":
            lines.append(f"{tag}: {r.status}: {r.error}")
            continue
        if r.verdict["reasons"]:
            lines.append(f"{tag}: " + "; ".join(r.verdict["reasons"]))
        if r.fidelity and not r.fidelity.get("ok"):
            lines.append(f"{tag}: {fidelity_text(r.fidelity)}")
        lines.extend(f"{tag}: {note}" for note in r.details.get("notes", ()))  # the engine's own explanations
    return lines


def notes(results: list[Result]) -> list[str]:
    tag = lambda i, r: f"[{i}] {r.engine} {r.precision} {r.scenario} {r.workload} b{r.batch_size}"  # noqa: E731
    lines = result_notes(results, tag,
                         lambda f: f"fidelity below threshold {f.get('threshold')}: outputs differ from the reference")
    return lines + [f"{tag(i, r)}: {serving_note(r)}" for i, r in enumerate(results, 1)
                    if r.status == "ok" and r.serving] + roofline_notes(results)


def roofline_notes(results: list[Result]) -> list[str]:
    """How % roofline reads (the ceilings it divides by), and why a row has none: each reason once."""
    figures = [r.roofline for r in results if r.status == "ok" and r.roofline]
    known = [f for f in figures if f.get("pct_of_roofline") is not None]
    lines = []
    if known:
        ceilings = {p.get("ceiling_of", p["precision"]): p["ceiling_gflops"] for f in known for p in f["parts"]}
        emulated = sorted({p for f in known for p in f.get("emulated") or ()})
        widened = sorted({p["precision"] for f in known for p in f["parts"] if p.get("ceiling_of")})
        lines.append("% roofline: items/s ÷ the machine's compute roofline, 1 / Σ FLOPs ÷ GEMM ceiling over the "
                     "model's matrix products in the precision each ran (int8 where quantized); ceilings of "
                     f"`enginebench machine` {known[0].get('ceilings_from')}: "
                     + ", ".join(f"{p} {_num(c)} {'GOP' if p == 'int8' else 'GFLOP'}/s" for p, c in ceilings.items())
                     + (f" ({', '.join(emulated)} emulated on this CPU)" if emulated else "")
                     + (f"; {', '.join(widened)} bounded by the fp32 ceiling, faster than its emulated GEMM"
                        if widened else ""))
        busy = max((f.get("ceilings_busy_cores") or 0.0 for f in known), default=0.0)
        if busy:
            lines.append(f"% roofline may read high: {busy_note({'others_cores': busy})}")
    for why in dict.fromkeys(f["unknown"] for f in figures if f.get("unknown")):
        lines.append(f"% roofline unknown: {why}")
    return lines + drift_notes(results)


def drift_notes(results: list[Result]) -> list[str]:
    """One line per result measured while the machine ran far from its stored GEMM speed (compute_roofline.py)."""
    lines = []
    for i, r in enumerate(results, 1):
        beside = ((r.roofline or {}).get("beside") or {}) if r.status == "ok" else {}
        if not beside.get("drifted"):
            continue
        speed, share = drift_words(beside)
        low, high = (_num(f(beside["probe_gflops"])) for f in (min, max))
        lines.append(f"% roofline* [{i}] {r.engine} {r.precision} {r.scenario} b{r.batch_size}: {speed} beside this "
                     f"cell (numpy fp32 {beside['n']}²: {low if low == high else f'{low}-{high}'} against "
                     f"{_num(beside['reference_gflops'])} GFLOP/s); against the ceilings at that speed it reached "
                     f"{share} of its roofline")
    return lines


def serving_note(r: Result) -> str:
    """How to read a serving row, with what LoadGen itself said (the scenario's own words)."""
    return scenario_class(r.scenario).note(r)


def encoder_title(results: list[Result], constants: dict[str, str], config: dict) -> str:
    models = sorted({r.model for r in results})
    title = f"model {', '.join(models) or '?'}"
    if constants:
        title += " — " + ", ".join(f"{k} {v}" for k, v in constants.items())
    return title + measured_how(config)


def row_status(r: Result) -> str:
    """ok, failed, skipped, or unfaithful (measured, but its outputs differ from the reference's)."""
    if r.status == "ok" and r.fidelity and not r.fidelity.get("ok"):
        return "unfaithful"
    return r.status


def section(run: Run) -> Section | None:
    """The encoders' table: a numbered row per result (the notes name rows by number), the parameters that vary
    as columns and the constant ones in the title. Skipped cells (an engine that offers no such precision here,
    a scenario it cannot run) are one note per engine × precision and reason, not a row each, unless nothing
    else was measured."""
    everything = in_table(run.results, "encoders")
    if not everything:
        return None
    measured = [r for r in everything if r.status != "skipped"]
    results, folded = (measured, [r for r in everything if r.status == "skipped"]) if measured else (everything, [])
    headers, rows, constants = table_rows(results)
    return Section(encoder_title(results, constants, run.config), ["#"] + headers,
                   [[str(i)] + row for i, row in enumerate(rows, 1)],
                   keys=1 + len(headers) - len(measure_headers(results)), left=frozenset(dict(_PARAMS)),
                   statuses=[row_status(r) for r in results], notes=skipped_notes(folded) + notes(results))


def measured_how(config: dict) -> str:
    """For a title: the stopping rule, the processes per cell and what the CIs cover, e.g. ` · cells ≥1 s & ≥5
    calls after 0.3 s warm-up · 1 process per cell (CIs cover the noise within a process only)`."""
    if not config.get("stopping_rule"):
        return ""
    n = config.get("repeat", 1)
    how = " (CIs cover the noise within a process only)" if n == 1 else " (CIs: t over the processes' medians)"
    return f" · {StoppingRule(**config['stopping_rule']).describe()} · {n} process{'' if n == 1 else 'es'} per cell{how}"


