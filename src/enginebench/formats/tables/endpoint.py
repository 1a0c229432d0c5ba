"""The table of results measured against a running server (--endpoint): one row per cell, with the figures a
serving benchmark is read by (request and output-token rates, TTFT, TPOT, ITL and end-to-end percentiles,
goodput under the SLOs, failures by kind) and the fidelity of what the server answered. Every figure comes from
the requests' records (Result.figures["requests"], scenarios/requests.py)."""

from __future__ import annotations

import math

from enginebench.display import max_rate, significant
from enginebench.formats.tables.section import Section
from enginebench.measure.compare import welch_half_width
from enginebench.measure.stats import t_quantile
from enginebench.scenarios.registry import settings_label, table_of
from enginebench.scenarios.requests import ceiling_words
from enginebench.store.model import Result, Run

HEADERS = ["scenario", "request", "load", "req/s", "out tok/s", "TTFT p50 (ms)", "TPOT p50 (ms)",
           "ITL p50 (ms)", "e2e p50 (ms)", "e2e p99 (ms)", "goodput (req/s)", "failed", "fidelity", "verdict"]
KEYS = 3  # scenario, request, load (clients, or the arrival rate) identify a row


def is_endpoint_result(r: Result) -> bool:
    return table_of(r) == "endpoints"


def _num(x) -> str:
    return "—" if x is None else significant(x)


def _with_ci(figure: dict | None, key: str = "value") -> str:
    """`1.81 [1.23–2.10]`: a figure with its 95% CI where it has one."""
    if not figure:
        return "—"
    ci = figure.get("ci95")
    value = _num(figure.get(key))
    return value if not ci else f"{value} [{_num(ci[0])}–{_num(ci[1])}]"


def _p(figure: dict | None, q: str) -> str:
    return _with_ci((figure or {}).get(q))


def request_label(r: Result) -> str:
    """`pp128+tg32` for generation, `titles ×4` for embeddings (texts per request)."""
    return _shape(r.workload, r.batch_size)


def _shape(workload: str, batch: int) -> str:
    return workload if batch == 1 else f"{workload} ×{batch}"


def row(r: Result) -> list[str]:
    offered, search = (r.serving or {}).get("offered_qps"), (r.serving or {}).get("find_max_qps")
    clients = (f"max {max_rate(search)} req/s Poisson" if search else f"{offered:.4g} req/s Poisson" if offered
               else f"all at once, {r.serving['clients']} clients" if (r.serving or {}).get("all_at_once")
               else settings_label(r.scenario, r.settings) or "1 client")
    key = [r.scenario, request_label(r), clients]
    f = (r.figures or {}).get("requests")
    if r.status != "ok" or not f:
        return key + ["—"] * (len(HEADERS) - len(key) - 1) + [r.status.upper()]
    fidelity = r.fidelity or {}
    value = fidelity.get("value")
    shown = "—" if value is None else f"{value:.3f}" + ("" if fidelity.get("ok") else " FAIL")
    failed = sum(f["failures"].values())
    goodput = "—" if "goodput_per_s" not in f else (
        f"{_with_ci(f['goodput_per_s'])} ({f['slo_share']:.0%})")
    return key + [
        _with_ci(f["requests_per_s"]), _with_ci(f.get("output_tokens_per_s")),
        _p(f.get("ttft_ms"), "p50"), _p(f.get("tpot_ms"), "p50"), _p(f.get("itl_ms"), "p50"),
        _p(f.get("e2e_ms"), "p50"), _p(f.get("e2e_ms"), "p99"), goodput,
        f"{failed}/{f['requests']}", shown, "ok" if r.verdict["ok"] else f"warn ({len(r.verdict['reasons'])})",
    ]


def notes(results: list[Result]) -> list[str]:
    lines = ["Per request, from the client's send: TTFT to the first text chunk, ITL each gap between chunks, "
             "TPOT = (e2e - TTFT) / (output tokens - 1), e2e to the last byte; p50 [95% CI]. req/s and out tok/s "
             "over the measured window [95% CI over processes]; output tokens counted with --model's tokenizer. "
             "goodput: requests/s meeting every SLO (share of all requests); failed: failed/all requests"]
    lines += saturation(results)
    for i, r in enumerate(results, 1):
        if r.status != "ok":
            lines.append(f"[{i}] {r.scenario}: {r.error or r.status}")
            continue
        f = (r.figures or {}).get("requests") or {}
        endpoint = (r.details or {}).get("endpoint") or {}
        lines.append(f"[{i}] {endpoint.get('url', '?')}{endpoint.get('path', '')} model "
                     f"{endpoint.get('served_model', '?')}" + _slo_words(f.get("slo")))
        kinds = {k: v for k, v in (f.get("failures") or {}).items() if v}
        if kinds:
            statuses = f.get("http_statuses") or {}
            lines.append(f"[{i}] failed requests: " + ", ".join(f"{v} {k}" for k, v in kinds.items())
                         + (f" (HTTP {', '.join(f'{s}: {n}' for s, n in statuses.items())})" if statuses else ""))
        ended = {k: v for k, v in (f.get("finish_reasons") or {}).items() if k != "length"}
        if ended:
            lines.append(f"[{i}] generations that ended before their length: " + ", ".join(
                f"{v} by {k}" for k, v in ended.items()) + " (the server's finish_reason; None: it gave none)")
        for side, check in (f.get("tokens_vs_usage") or {}).items():
            if check["equal"] != check["compared"]:
                lines.append(f"[{i}] {side} tokens: the local count differs from the server's usage in "
                             f"{check['compared'] - check['equal']} of {check['compared']} requests (mean "
                             f"{'+' if check['mean_local_minus_server'] > 0 else ''}{significant(check['mean_local_minus_server'])} tokens)")
        ceiling = f.get("client_ceiling")
        if ceiling and ceiling.get("share") is not None:
            lines.append(f"[{i}] client ceiling: {ceiling_words(ceiling)}; this row reached "
                         f"{significant(100 * ceiling['share'], 2)}% of it")
        lines += [f"[{i}] {reason}" for reason in r.verdict["reasons"]]
        lines += [f"[{i}] {note}" for note in (r.details or {}).get("notes", [])]
        for failure in (r.fidelity or {}).get("failures") or []:
            lines.append(f"[{i}] fidelity: {failure}")
    return lines


RISING = 0.10  # a step in clients that adds less than this share of req/s: throughput has stopped rising


def saturation(results: list[Result]) -> list[str]:
    """Per closed-loop sweep (the concurrency rows of one request shape), where throughput stops rising: the
    fewest clients whose req/s no larger client count swept beats by RISING or more."""
    sweeps: dict[tuple, list[tuple[int, float]]] = {}
    for r in results:
        f = (r.figures or {}).get("requests") if r.status == "ok" else None
        clients = (r.settings or {}).get("clients")
        if f and clients and f["requests_per_s"]["value"]:
            sweeps.setdefault((r.workload, r.batch_size), []).append((clients, f["requests_per_s"]["value"]))
    lines = []
    for (workload, batch), points in sweeps.items():
        points.sort()
        if len(points) < 2:
            continue
        steps = [f"{a}→{b}: {rb / ra - 1:+.0%}" for (a, ra), (b, rb) in zip(points, points[1:])]
        # the fewest clients no larger count beats by RISING or more (noisy points do not end the rise early)
        stop = next((a for k, (a, ra) in enumerate(points[:-1]) if all(rb < ra * (1 + RISING)
                                                                        for _, rb in points[k + 1:])), None)
        where = (f"stops rising at {stop} client{'s' if stop > 1 else ''} (no larger count adds {RISING:.0%})"
                 if stop else f"still rising at {points[-1][0]} clients: sweep further")
        lines.append(f"{_shape(workload, batch)}: req/s by clients {', '.join(steps)}; "
                     f"throughput {where}")
    return lines


def _slo_words(slo: dict | None) -> str:
    if not slo:
        return ""
    names = {"slo_p99_ms": "e2e", "slo_ttft_ms": "TTFT", "slo_tpot_ms": "TPOT"}
    return "; SLO per request: " + ", ".join(f"{names[k]} ≤ {v:g} ms" for k, v in slo.items())


def server_tax(run: Run) -> list[dict]:
    """What the server adds to the same work done in-process in the run (--engine beside --endpoint), each side
    a median over processes with its t interval, the tax their difference with Welch's interval over the two
    (difference_ci): HTTP, JSON, the server's own tokenizer and its scheduling.
    Embeddings (latency, one request at a time): the server's end to end against the engine's call on the same
    texts. Generation: the server's TTFT against the engine's prefill of the prompt (pp<P>), its TPOT against
    the engine's decode step (tg<G>, after a prompt of P)."""
    served = [r for r in run.results if is_endpoint_result(r) and r.status == "ok" and r.scenario == "latency"]
    alone = {(r.model, r.scenario, r.workload, r.batch_size, r.engine, r.precision): r for r in run.results
             if not is_endpoint_result(r) and r.status == "ok"}
    engines = sorted({(k[4], k[5]) for k in alone})
    out = []
    for s in served:
        f = (s.figures or {}).get("requests") or {}
        if "+" in s.workload:  # a generation request, pp<P>+tg<G>
            pp, tg = s.workload.split("+")
            pairs = [("time to first token", "generate", pp, "prefill", f.get("ttft_ms"),
                      lambda r: r.ttft_ms or r.latency_ms),
                     ("per output token", "generate", tg, "decode step", f.get("tpot_ms"), lambda r: r.itl_ms)]
        else:
            pairs = [("per request", "latency", s.workload, "call", f.get("e2e_ms"), lambda r: r.latency_ms)]
        for engine, precision in engines:
            for figure, scenario, workload, what, server, inside in pairs:
                r = alone.get((s.model, scenario, workload, s.batch_size, engine, precision))
                mine, theirs = (inside(r) if r else None), (server or {}).get("median")
                if not mine or not theirs:
                    continue
                ci = difference_ci(theirs, mine)
                out.append({"engine": engine, "precision": precision, "request": s.workload, "workload": workload,
                            "batch_size": s.batch_size, "figure": figure, "in_process": what,
                            "in_process_ms": {"value": mine["median"], "ci95": mine.get("ci95")},
                            "server_ms": {"value": theirs["median"], "ci95": theirs.get("ci95")},
                            "tax_ms": {"value": theirs["median"] - mine["median"], "ci95": ci},
                            "ratio": theirs["median"] / mine["median"]})
    return out


def difference_ci(a: dict | None, b: dict | None) -> list[float] | None:
    """A 95% interval for a − b, two independent medians over processes ({"median", "ci95", "processes"}, as
    measure/stats.py gives them: the geometric mean of the processes' medians with the t interval of their logs).
    Each side's variance is read back from its interval (the log half-width over t(k−1), times the median: the
    delta method), and the two are joined as Welch's interval joins two means: t at the Welch–Satterthwaite
    degrees of freedom times the root of the summed variances. A side from one process (a bootstrap interval)
    counts as a normal one. tests/endpoint/test_client_ceiling.py simulates its coverage: 94-98% with as many
    processes a side as a run's --repeat gives both (or one fewer on a side); 92-93% where one side has far fewer
    than the other (2 against 10), as Welch's interval does when its smaller sample has the larger variance."""
    sides = []
    for side in (a, b):
        if not side or not side.get("ci95") or min(side["ci95"]) <= 0:
            return None
        k = int(side.get("processes") or 1)
        df = k - 1 if k >= 2 else 1e9
        se_log = math.log(side["ci95"][1] / side["ci95"][0]) / (2 * t_quantile(df))
        sides.append(((side["median"] * se_log) ** 2, df))
    (va, da), (vb, db) = sides
    centre = a["median"] - b["median"]
    half = float(welch_half_width(va, da, vb, db))
    return [centre - half, centre + half]


def tax_lines(run: Run) -> list[str]:
    lines = []
    for t in server_tax(run):
        sign = "+" if t["tax_ms"]["value"] >= 0 else ""
        lines.append(f"server tax, {_shape(t['request'], t['batch_size'])}, {t['figure']}: {t['engine']} {t['precision']} in-process "
                     f"{_with_ci(t['in_process_ms'])} ms a {t['in_process']} ({t['workload']}) → the server "
                     f"{_with_ci(t['server_ms'])} ms: {sign}{_with_ci(t['tax_ms'])} ms ({t['ratio']:.2f}×; medians "
                     "over processes [95% CI])")
    return lines


def section(run: Run) -> Section | None:
    results = [r for r in run.results if is_endpoint_result(r)]
    if not results:
        return None
    models = sorted({r.model for r in results})
    apis = sorted({((r.details or {}).get("endpoint") or {}).get("api", "?") for r in results})
    return Section(f"a server's {', '.join(apis)} API (reference: {', '.join(models)})", ["#"] + HEADERS,
                   [[str(i)] + row(r) for i, r in enumerate(results, 1)], keys=1 + KEYS,
                   left=frozenset({"scenario", "request", "load"}), statuses=[r.status for r in results],
                   notes=notes(results) + tax_lines(run))


__all__ = ["is_endpoint_result", "section", "server_tax", "difference_ci", "HEADERS"]
