"""Tables a person reads at a glance: one row per result, median ± CI, units in headers.

Only the parameters that vary across the results become columns; the constant ones go in the title.
"""

from __future__ import annotations

from enginebench.display import max_rate
from enginebench.display import significant as _num
from enginebench.results.model import Result, Run
from enginebench.scenarios.registry import scenario_class, settings_label

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


def precision_label(r: Result) -> str:
    """The precision asked for; `→ executed` when the engine ran another; for quantized results what was
    quantized, from details["quantization"]: `int8 (w8a8, 67% of MatMul FLOPs)`; `int8 (w8a32, 100% of MatMul
    FLOPs)` for int8 weights with fp32 activations (weights-only)."""
    from enginebench.measure.quantization import short_label

    executed = r.executed_precision
    as_asked = executed in (None, r.precision) or executed.startswith(f"{r.precision}-")  # int8-weights/fp32
    text = r.precision if as_asked else f"{r.precision}→{executed}"
    quantization = (r.details or {}).get("quantization")
    if quantization and as_asked:
        text += f" ({short_label(quantization)})"
    return text


def threads_label(r: Result) -> str:
    """`workers×threads`, with `→used` where the engine reports using another number of threads, and
    `(ignored)` where the engine's thread option has no effect (details["threads_used"] is None)."""
    text = f"{r.workers}×{r.threads}"
    details = r.details or {}
    if "threads_used" not in details:
        return text
    used = details["threads_used"]
    if used is None:
        return f"{text} (ignored)"
    return text if used == r.threads else f"{text}→{used}"


def serving_label(r: Result) -> str:
    """What a server or offline row was asked: `100 q/s · p99 ≤ 50 ms`, `max q/s under p99 ≤ 50 ms: 392
    (bracket 392–402)`, with `· batch ≤8, wait ≤5 ms` for the dynamic batcher; empty for the other scenarios."""
    s = r.serving or {}
    settings = s.get("settings") or {}
    if not s:
        return ""
    parts = []
    search = s.get("find_max_qps")
    if search:
        parts.append(f"max q/s under p99 ≤ {settings.get('slo_p99_ms'):g} ms: {max_rate(search)}")
    elif not scenario_class(r.scenario).judged_by_spread:  # a server judged against its target at one rate
        parts.append(f"{_num(s['target_qps'])} q/s · p99 ≤ {s['slo_p99_ms']:g} ms")
    if settings.get("max_batch", 1) > 1:
        wait = settings.get("max_wait_ms") or 0
        parts.append(f"batch ≤{settings['max_batch']}" + (f", wait ≤{wait:g} ms" if wait else ""))
    return " · ".join(parts)


def _pm(value: float, ci: list[float] | None, digits: int = 3) -> str:
    if ci is None:  # one sample: no interval to show
        return f"{_num(value, digits)} (n=1)"
    half = max(value - ci[0], ci[1] - value)
    return f"{_num(value, digits)} ± {_num(half, 2)}"


def _percentile(figure: dict, bare: bool) -> str:
    """A percentile ± its CI; `bare` ones without a CI (LoadGen's of one process: it keeps no per-query
    latencies) show no `(n=1)`."""
    if figure["ci95"] is None and bare:
        return _num(figure["value"], 3)
    return _pm(figure["value"], figure["ci95"])


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
    if not ci:
        return f"{pct:.0f}"
    half = max(pct - ci[0], ci[1] - pct)
    return f"{pct:.0f} ± {half:.1f}" if half < 1 else f"{pct:.0f} ± {half:.0f}"


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
        median, p99 = _pm(lat["median"], lat["ci95"]), _num(lat["p99"])
    return [
        median,
        p99,
        _pm(thr["items_per_s"], thr["ci95"]),
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
    return [f"{engine} {precision}: skipped ({n} cells): {error}" for (engine, precision, error), n in seen.items()]


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
        ceilings = {p["precision"]: p["ceiling_gflops"] for f in known for p in f["parts"]}
        emulated = sorted({p for f in known for p in f.get("emulated") or ()})
        lines.append("% roofline: items/s ÷ the machine's compute roofline, 1 / Σ FLOPs ÷ GEMM ceiling over the "
                     "model's matrix products in the precision each ran (int8 where quantized); ceilings of "
                     f"`enginebench machine` {known[0].get('ceilings_from')}: "
                     + ", ".join(f"{p} {_num(c)} {'GOP' if p == 'int8' else 'GFLOP'}/s" for p, c in ceilings.items())
                     + (f" ({', '.join(emulated)} emulated on this CPU)" if emulated else ""))
    for why in dict.fromkeys(f["unknown"] for f in figures if f.get("unknown")):
        lines.append(f"% roofline unknown: {why}")
    return lines


def serving_note(r: Result) -> str:
    """How to read a serving row, with what LoadGen itself said (the scenario's own words)."""
    return scenario_class(r.scenario).note(r)


def encoder_title(run: Run, constants: dict[str, str]) -> str:
    models = sorted({r.model for r in run.results})
    title = f"run {run.run_id} — model {', '.join(models) or '?'}"
    if constants:
        title += " — " + ", ".join(f"{k} {v}" for k, v in constants.items())
    return title + measured_how(run.config)


# the CPU features inference kernels dispatch on (int8 dot products, bf16/fp16 arithmetic, matrix tiles)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                "amx_int8", "amx_fp16")


def machine_line(run: Run) -> str:
    """`machine: <cpu> · 16 cores (affinity 0-15) · 62.8 GB · Python 3.12.3 · avx2 avx512f … · governor
    performance · OMP_NUM_THREADS=4 · engines torch 2.5.1, onnxruntime 1.20.1`; what is unknown is left out."""
    m = run.machine or {}
    flags = set(m.get("cpu_flags") or ())
    parts = [str(m.get("cpu") or "unknown CPU")]
    if m.get("logical_cores"):
        parts.append(f"{m['logical_cores']} cores (affinity {affinity_text(m.get('affinity'))})")
    if m.get("memory_gb"):
        parts.append(f"{m['memory_gb']} GB")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if flags:
        parts.append(" ".join(f for f in KERNEL_FLAGS if f in flags) or "no AVX2")
    if m.get("governor"):
        parts.append(f"governor {m['governor']}")
    parts += [f"{k}={v}" for k, v in (m.get("env") or {}).items()]
    versions = {}
    for r in run.results:  # skipped and failed cells may not know their engine's version
        if r.engine_version:
            versions.setdefault(r.engine, r.engine_version)
    if versions:
        parts.append("engines " + ", ".join(f"{e} {v}" for e, v in versions.items()))
    return "machine: " + " · ".join(parts)


def measured_how(config: dict) -> str:
    """For a title: the stopping rule, the processes per cell and what the CIs cover, e.g. ` · cells ≥1 s & ≥5
    calls after 0.3 s warm-up · 1 process per cell (CIs cover the noise within a process only)`."""
    from enginebench.measure.timing import StoppingRule

    if not config.get("stopping_rule"):
        return ""
    n = config.get("repeat", 1)
    how = " (CIs cover the noise within a process only)" if n == 1 else " (CIs: t over the processes' medians)"
    return f" · {StoppingRule(**config['stopping_rule']).describe()} · {n} process{'' if n == 1 else 'es'} per cell{how}"


def affinity_text(affinity) -> str:
    """[0, 1, 2, 3, 6] -> `0-3,6` (taskset's syntax); `?` when unknown."""
    if not affinity:
        return "?"
    spans: list[list[int]] = []
    for cpu in sorted(affinity):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
