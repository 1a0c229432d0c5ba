"""The table of decoders served under LoadGen's server scenario: one row per cell, with what a serving target
is written in (requests/s achieved, output tokens/s, time to first token and per output token at p50 and p99
with the p99's CI) beside the verdict against those targets."""

from __future__ import annotations

from enginebench.display import max_rate
from enginebench.formats.tables.section import Section
from enginebench.scenarios.registry import table_of
from enginebench.store.model import Result, Run

HEADERS = ["engine", "precision", "request", "workers×threads", "batching", "req/s", "out tok/s", "TTFT p50 (ms)",
           "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p99 (ms)", "top-1", "verdict"]
KEYS = 5  # engine .. batching identify a row


def is_decoder_serving(r: Result) -> bool:
    return table_of(r) == "decoder serving"


def _num(x) -> str:
    return "—" if x is None else (f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}")


def _p99(figure: dict) -> str:
    p = figure["p99"]
    if not p.get("ci95"):
        return _num(p["value"])
    lo, hi = p["ci95"]
    return f"{_num(p['value'])} [{_num(lo)}–{_num(hi)}]"


def targets(r: Result) -> str:
    """What the row was asked: `20 req/s` or `max req/s: 31 (bracket 31–33)`, under `TTFT ≤ 2000, TPOT ≤
    100 ms`."""
    s = r.serving
    search = s.get("find_max_qps")
    if search:
        rate = f"max req/s: {max_rate(search)}"
    else:
        rate = f"{_num(s['target_qps'])} req/s"
    return f"{rate} under p99 TTFT ≤ {s['slo_ttft_ms']:g} ms, TPOT ≤ {s['slo_tpot_ms']:g} ms"


def row(r: Result) -> list[str]:
    key = [r.engine, r.precision, r.workload, f"{r.workers}×{r.threads}"]
    if r.status != "ok" or not r.serving:
        return key + ["—"] * (len(HEADERS) - len(key) - 1) + [r.status.upper()]
    s = r.serving
    batching = s.get("batching") or {}
    fidelity = r.fidelity or {}
    top1 = fidelity.get("value")
    verdict = "VALID" if r.verdict["ok"] else f"INVALID ({len(r.verdict['reasons'])})"
    return key + [
        f"{batching.get('mode', '?')} ≤{r.batch_size}",
        _num(s["achieved_qps"]),
        _num(s["output_tokens_per_s"]),
        _num(s["ttft_ms"]["p50"]["value"]), _p99(s["ttft_ms"]),
        _num(s["tpot_ms"]["p50"]["value"]), _p99(s["tpot_ms"]),
        "—" if top1 is None else f"{top1:.3f}" + ("" if fidelity.get("ok") else " FAIL"),
        verdict,
    ]


def notes(results: list[Result]) -> list[str]:
    lines = ["TTFT and TPOT are LoadGen's: TTFT from the scheduled arrival (queueing and prefill included); "
             "TPOT = (last token - first token) / (tokens - 1); p99 [95% CI over processes]; enginebench's own "
             "from its issue callback in serving.issue_ttft_ms; req/s achieved; out tok/s = req/s × generated tokens"]
    for i, r in enumerate(results, 1):
        if r.status != "ok":
            lines.append(f"[{i}] {r.engine}: {r.error or r.status}")
            continue
        s = r.serving
        said = (s.get("loadgen") or {}).get("validity", "no result")
        mean = (s.get("batching") or {}).get("mean_decoding")
        decoding = f"; {mean:.2g} sequences decoding at once on average" if mean is not None else ""
        lines.append(f"[{i}] {targets(r)}{decoding}; LoadGen {said}")
        lines += [f"[{i}] {reason}" for reason in r.verdict["reasons"]]
    return lines


def section(run: Run) -> Section | None:
    results = [r for r in run.results if is_decoder_serving(r)]
    if not results:
        return None
    models = sorted({r.model for r in results})
    return Section(f"decoders served (LoadGen server, token latencies): {', '.join(models)}", ["#"] + HEADERS,
                   [[str(i)] + row(r) for i, r in enumerate(results, 1)], keys=1 + KEYS,
                   left=frozenset({"engine", "precision", "request", "batching"}),
                   statuses=[r.status for r in results], notes=notes(results))


__all__ = ["is_decoder_serving", "section", "HEADERS"]
