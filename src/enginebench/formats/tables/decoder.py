"""The decoder table, laid out like llama-bench: model, size, params, engine, precision, threads, test, t/s.

t/s is tokens per second at the median call (pp: prompt tokens / prefill call; tg: tokens / decode step) with
the half-width of its 95% CI; peak memory, load time, TTFT, inter-token latency p99, fidelity against the
torch fp32 reference and, for tg, the share of the memory-bandwidth bound follow.
"""

from __future__ import annotations

from enginebench.formats.tables.encoder import measured_how, result_notes
from enginebench.formats.tables.section import Section
from enginebench.measure.host_load import busy_note
from enginebench.scenarios.registry import table_of
from enginebench.store.labels import precision_label
from enginebench.store.model import Result, Run

HEADERS = ["model", "size", "params", "engine", "precision", "threads", "batch", "test", "t/s",
           "TTFT (ms)", "ITL p99 (ms)", "% BW bound", "peak RSS (MB)", "load (s)", "top-1 / greedy / cache", "verdict"]


def is_decoder_result(r: Result) -> bool:
    return table_of(r) == "decoders"


def _size(nbytes) -> str:
    if not nbytes:
        return "?"
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _params(n) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _rate(r: Result) -> dict | None:
    return r.prefill_tokens_per_s or r.decode_tokens_per_s


def _tps(rate: dict | None) -> str:
    if not rate:
        return "—"
    value = rate["median"]
    if not rate.get("ci95"):  # one sample: no interval
        return f"{value:,.2f} (n=1)"
    lo, hi = rate["ci95"]
    return f"{value:,.2f} ± {max(value - lo, hi - value):.2f}"


def _fidelity(r: Result) -> str:
    f = r.fidelity
    if not f:
        return "n/a"
    if f.get("reference"):
        return "reference"
    if f.get("value") is None:
        return "FAIL " + str(f.get("error", ""))
    parts = [f["value"], f.get("greedy_agreement"), f.get("cache_agreement")]
    text = " / ".join("—" if p is None else f"{p:.3f}" for p in parts)
    return text + ("" if f["ok"] else " FAIL")


_CONSTANT_WHEN_SAME = ("model", "size", "params", "precision", "threads", "batch")  # in the title when constant


def decoder_table(run: Run) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """(headers, rows, constants): model, size, params, precision, threads and batch move to the title when constant."""
    rows = decoder_rows(run)
    constants = {}
    keep = list(range(len(HEADERS)))
    for name in _CONSTANT_WHEN_SAME:
        i = HEADERS.index(name)
        values = {row[i] for row in rows}
        if len(values) == 1:
            constants[name] = values.pop()
            keep.remove(i)
    return [HEADERS[i] for i in keep], [[row[i] for i in keep] for row in rows], constants


def shown_results(run: Run) -> list[Result]:
    """The decoder results the table has a row for: skipped cells are notes (decoder_notes), unless nothing else
    was measured."""
    decoders = list(filter(is_decoder_result, run.results))
    return [r for r in decoders if r.status != "skipped"] or decoders


def decoder_rows(run: Run) -> list[list[str]]:
    model = run.config.get("model", {})
    rows = []
    for r in shown_results(run):
        precision = precision_label(r)  # with what was quantized, for int8
        head = [r.model, _size(model.get("size_bytes") or r.details.get("model_size_bytes")),
                _params(model.get("params") or r.details.get("model_params")), r.engine, precision,
                str(r.threads), str(r.batch_size), r.workload]
        if r.status != "ok":
            rows.append(head + ["—"] * (len(HEADERS) - len(head) - 1) + [r.status.upper()])
            continue
        roofline = (r.decode_tokens_per_s or {}).get("roofline")
        rows.append(head + [
            _tps(_rate(r)),
            f"{r.ttft_ms['median']:.2f}" if r.ttft_ms else "—",
            f"{r.itl_ms['p99']:.2f}" if r.itl_ms else "—",
            f"{roofline['pct_of_bound']:.0f}%" if roofline else "—",
            f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "—",
            f"{r.load_s:.2f}" if r.load_s is not None else "—",
            _fidelity(r),
            "ok" if r.verdict["ok"] else f"warn ({len(r.verdict['reasons'])})",
        ])
    return rows


def decoder_notes(run: Run) -> list[str]:
    lines = result_notes(
        list(filter(is_decoder_result, run.results)),
        lambda i, r: f"{r.engine} {r.precision} {r.workload} b{r.batch_size}",
        lambda f: ("fidelity: " + "; ".join(f["failures"]) if f.get("failures") else
                   f"fidelity below threshold (top-1 {f.get('value')}, perplexity "
                   f"{f.get('perplexity_increase', float('nan')):+.2%} vs the reference)"),
    )
    speed = next((r.details.get("machine_speed") for r in run.results if r.details.get("machine_speed")), None)
    if any(r.decode_tokens_per_s for r in run.results):
        lines.append(f"% BW bound: decode t/s ÷ (batch × {speed['bandwidth_gbs']:.1f} GB/s ÷ weight bytes)" if speed
                     else "% BW bound: run `enginebench machine` once to measure the memory bandwidth")
        if busy := busy_note(speed):
            lines.append(f"% BW bound may read high: {busy}")
    return lines


def section(run: Run) -> Section | None:
    """The decoder table: llama-bench's columns, those constant across the rows in the title."""
    headers, rows, constants = decoder_table(run)
    if not rows:
        return None
    title = "generate (pp = prefill, tg = decode)" + "".join(f" — {k} {v}" for k, v in constants.items())
    return Section(title + measured_how(run.config), headers, rows, keys=headers.index("test") + 1,
                   left=frozenset({"model", "engine", "precision", "test"}),
                   statuses=[r.status for r in shown_results(run)], notes=decoder_notes(run),
                   repeat=None)


__all__ = ["HEADERS", "decoder_table", "decoder_rows", "shown_results", "decoder_notes", "section", "is_decoder_result"]
