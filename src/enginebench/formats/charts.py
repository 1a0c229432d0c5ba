"""The charts of stored runs, drawn with matplotlib: the HTML report inlines them as SVG, `enginebench plot`
writes them as PNG. Only the charts the data supports are drawn; the others get a one-line reason.

Every chart takes (run id, Result) pairs from one or more runs. A point's label names only what varies among
the chart's points (engine, precision, batch, ...), so a one-model run is not labelled with its model path.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from enginebench.scenarios.registry import REGISTRY, scenario_class, table_of
from enginebench.store.identity import CellIdentity, cell_identity
from enginebench.store.model import Result, Run

# the charts a scenario's results may feed (Scenario.charts)
LATENCY_BY_ENGINE, THROUGHPUT_BY_WORKERS = "latency by engine", "throughput by workers"


def feeds(pair, chart: str) -> bool:
    """Whether a (run id, result) pair belongs on `chart`, as its scenario says."""
    scenario = pair[1].scenario
    return scenario in REGISTRY and chart in scenario_class(scenario).charts

Pair = tuple[str, Result]  # (run id, result)

_STYLE = {
    "text.parse_math": False,  # a model named `$x$` is a name, not a formula
    "svg.fonttype": "none",  # SVG text stays text: crisp, searchable, escaped by matplotlib
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_MARKERS = "osD^vP*Xh"
_LABEL_CHARS = 48  # a long model path is cut in the middle rather than squeezing the plot


@dataclass
class Chart:
    name: str  # file stem, says what the chart shows: latency-by-engine, fidelity-vs-speed, ...
    title: str
    caption: str  # one sentence: how to read it
    figure: Figure

    def svg(self) -> str:
        """The chart as an inline <svg> element (no XML prologue), with ids unique to this chart."""
        buf = io.StringIO()
        with _style({"svg.hashsalt": self.name}):
            self.figure.savefig(buf, format="svg", bbox_inches="tight",
                                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        text = buf.getvalue()
        return text[text.index("<svg"):].replace("<svg ", f'<svg role="img" aria-label="{escape(self.title)}" ', 1)

    def save_png(self, folder: Path) -> Path:
        path = Path(folder) / f"{self.name}.png"
        with _style():
            self.figure.savefig(path, format="png", dpi=150, bbox_inches="tight")
        return path


@dataclass
class Charts:
    drawn: list[Chart] = field(default_factory=list)
    not_drawn: list[str] = field(default_factory=list)  # one line per chart the data does not support


def build_charts(runs: list[Run]) -> Charts:
    """Every chart the runs' results support, in reading order. Encoder charts are drawn once per work (the
    workload's part of the cells' identity, store/identity.py: its text, seed, sequence length and padding, and
    where the model was cut), and fidelity against speed once per work and scenario, so that an axis never holds
    a 16-token and a 128-token figure, two corpora under one name, or a single stream and a worker pool, side by
    side. Models are not split: each point's label names its model where the runs hold several."""
    pairs = [(run.run_id, r) for run in runs for r in run.results if r.status == "ok"]
    by_id = {run.run_id: run for run in runs}
    encoders = [p for p in pairs if table_of(p[1]) == "encoders"]
    decoders = [p for p in pairs if table_of(p[1]) == "decoders"]
    charts = Charts()
    with _style():
        work = {id(p): _work(cell_identity(p[1], by_id[p[0]])) for p in encoders}
        works = _facets(encoders, lambda p: work[id(p)], _work_title(set(work.values())))
        for tag, title, members in works:
            _add(charts, _faceted(latency_by_engine(members), tag, title),
                 f"latency by engine and batch{title}: no latency-scenario results")
            _add(charts, _faceted(latency_distribution(members), tag, title),
                 f"latency distributions{title}: no raw samples stored")
            scaling = any(feeds(p, THROUGHPUT_BY_WORKERS) for p in members)
            _add(charts, _faceted(throughput_by_workers(members), tag, title), f"throughput by workers{title}: " + (
                "one worker count per configuration (`--workers 1,2,4` draws it)" if scaling else
                "not measured in this run (`--scenario throughput --workers 1,2,4`)"))
            for stag, stitle, same in _facets(members, lambda p: p[1].scenario, lambda k: f"{k} scenario",
                                              always=len(works) > 1):
                _add(charts, _faceted(fidelity_vs_speed(same, decoder=False), tag + stag, title + stitle),
                     f"fidelity against speed{title + stitle}: fewer than two results with a fidelity figure")
        if decoders:
            _add(charts, decoder_tokens_per_s(decoders), "decoder tokens/s: no rate measured")
            _add(charts, fidelity_vs_speed(decoders, decoder=True),
                 "decoder fidelity against speed: fewer than two decode results with a fidelity figure")
    return charts


def _work(i: CellIdentity) -> tuple:
    """What a result's figures are figures of, the engine's configuration aside: (workload, seq_len, padding,
    cut, corpus digest, seed)."""
    return i.workload, i.seq_len, i.padding, i.until or "", i.corpus_digest, i.seed


def _work_title(works: set[tuple]):
    """`titles (seq 16)`, `corpus (seq 128 · dynamic padding)`; the corpus digest or the seed only where works
    that would read alike differ by them (two corpora under one name)."""
    def title(k: tuple) -> str:
        workload, seq_len, padding, cut, corpus, seed = k
        alike = [w for w in works if w[:4] == k[:4]]
        parts = [f"seq {seq_len}"] + (["dynamic padding"] if padding == "dynamic" else [])
        parts += [f"cut at {cut}"] if cut else []
        parts += [f"corpus {corpus[:8]}"] if len({w[4] for w in alike}) > 1 and corpus else []
        parts += [f"seed {seed}"] if len({w[5] for w in alike}) > 1 and seed is not None else []
        return f"{workload} ({' · '.join(parts)})"
    return title


def _facets(pairs: list[Pair], key, describe, always: bool = False) -> list[tuple[str, str, list[Pair]]]:
    """The pairs split by `key`: (file-name tag, title part, members) per value; one facet with no tag or title
    when all share one value (unless `always`)."""
    groups: dict = {}
    for p in pairs:
        groups.setdefault(key(p), []).append(p)
    if len(groups) == 1 and not always:
        return [("", "", pairs)]
    return [("-" + _slug(describe(k)), " · " + describe(k), members) for k, members in groups.items()]


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _faceted(chart: Chart | None, tag: str, title: str) -> Chart | None:
    if chart is not None and tag:
        chart.name += tag
        chart.title += title
    return chart


def write_pngs(charts: Charts, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [chart.save_png(folder) for chart in charts.drawn]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (both larger is better), fastest first."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# ---- the charts ---------------------------------------------------------------------------------------------

def latency_by_engine(pairs: list[Pair]) -> Chart | None:
    """Median latency per call with its 95% CI: a group per engine (× precision, ...), a bar per batch size."""
    pairs = [p for p in pairs if feeds(p, LATENCY_BY_ENGINE)]
    if not pairs:
        return None
    group_of = _labeller(pairs, exclude={"batch", "scenario", "workers"})
    groups = list(dict.fromkeys(group_of(p) for p in pairs))
    batches = sorted({p[1].batch_size for p in pairs})
    fig, ax = _figure(width=max(6.0, 1.1 * len(groups) * max(1, len(batches)) ** 0.5 + 2), height=3.6)
    width = 0.8 / len(batches)
    for j, batch in enumerate(batches):
        xs, medians, errors = [], [], [[], []]
        for p in pairs:
            if p[1].batch_size != batch:
                continue
            lat = p[1].latency_ms
            xs.append(groups.index(group_of(p)) + (j - (len(batches) - 1) / 2) * width)
            medians.append(lat["median"])
            lo, hi = _error(lat["median"], lat.get("ci95"))
            errors[0].append(lo)
            errors[1].append(hi)
        ax.bar(xs, medians, width * 0.9, yerr=errors, capsize=3, label=f"batch {batch}", color=_color(j))
    crowded = len(groups) > 3
    ax.set_xticks(range(len(groups)), groups, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("median latency per call (ms)")
    _log_if_wide(ax, "y", [p[1].latency_ms["median"] for p in pairs])
    if len(batches) > 1:
        ax.legend(title="batch size", fontsize=8)
    return Chart("latency-by-engine", "Latency by engine and batch size",
                 "Median time per call; error bars are the 95% confidence interval of the median (lower is better).",
                 fig)


def latency_distribution(pairs: list[Pair]) -> Chart | None:
    """A violin of every measured call per result, with each process's median as a dot."""
    pairs = [p for p in pairs if p[1].process_samples()]
    if not pairs:
        return None
    label_of = _labeller(pairs)
    fig, ax = _figure(width=7.5, height=1.0 + 0.38 * len(pairs))
    all_ms = []
    for row, p in enumerate(reversed(pairs)):  # first result at the top
        processes = [np.asarray(s, dtype=np.float64) / 1e6 for s in p[1].process_samples() if s]
        pooled = np.concatenate(processes)
        all_ms.extend([pooled.min(), pooled.max()])
        if np.ptp(pooled) > 0 and pooled.size > 1:
            parts = ax.violinplot([pooled], positions=[row], orientation="horizontal", widths=0.8,
                                  showextrema=False, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(_color(0))
                body.set_alpha(0.45)
            parts["cmedians"].set_color(_color(0))
        ax.scatter([np.median(s) for s in processes], [row] * len(processes), s=12, color="black", zorder=3)
    ax.set_yticks(range(len(pairs)), [label_of(p) for p in reversed(pairs)])
    ax.set_xlabel("latency per call (ms)")
    _log_if_wide(ax, "x", all_ms)
    return Chart("latency-distribution", "Latency distributions",
                 "Every measured call; the line in each violin is the median, the dots each process's own median "
                 "(dots far apart mean the processes disagreed).", fig)


def throughput_by_workers(pairs: list[Pair]) -> Chart | None:
    """Items/s against the number of workers with 95% CIs: a panel per batch size, a line per engine
    (colour) × precision (line style)."""
    pairs = [p for p in pairs if feeds(p, THROUGHPUT_BY_WORKERS)]
    # threads often shrink as workers grow (the same cores shared out): one line across them
    series_of = _labeller(pairs, exclude={"workers", "threads", "scenario", "batch"})
    series: dict[tuple[int, str], list[Pair]] = {}
    for p in pairs:
        series.setdefault((p[1].batch_size, series_of(p)), []).append(p)
    if not any(len({p[1].workers for p in members}) > 1 for members in series.values()):
        return None
    batches = sorted({batch for batch, _ in series})
    fig = Figure(figsize=(3.6 * len(batches) + 2.2, 3.8), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False, sharey=True)[0]
    style = _Style({name: members[0] for (_, name), members in series.items()})
    for (batch, name), members in series.items():
        members.sort(key=lambda p: p[1].workers)
        ax = axes[batches.index(batch)]
        ys = [p[1].throughput["items_per_s"] for p in members]
        errors = np.array([_error(p[1].throughput["items_per_s"], p[1].throughput.get("ci95")) for p in members]).T
        ax.errorbar([p[1].workers for p in members], ys, yerr=errors, capsize=3, label=name or None,
                    **style.line(name))
    for ax, batch in zip(axes, batches):
        _worker_ticks(ax, [p for p in pairs if p[1].batch_size == batch])
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("throughput (items/s)")
    _legend_outside(fig, axes[0])
    return Chart("throughput-by-workers", "Throughput scaling with workers",
                 "Items per second of all workers together; error bars are 95% confidence intervals "
                 "(a line that flattens has stopped scaling).", fig)


def _worker_ticks(ax, pairs: list[Pair]) -> None:
    """Ticks at the worker counts, `workers×threads` where each worker count ran with one thread count."""
    threads_at: dict[int, set[int]] = {}
    for p in pairs:
        threads_at.setdefault(p[1].workers, set()).add(p[1].threads)
    workers = sorted(threads_at)
    if all(len(t) == 1 for t in threads_at.values()):
        ax.set_xticks(workers, [f"{w}×{min(threads_at[w])}" for w in workers])
        ax.set_xlabel("workers × threads each")
    else:
        ax.set_xticks(workers)
        ax.set_xlabel("workers (concurrent sessions)")


def decoder_tokens_per_s(pairs: list[Pair]) -> Chart | None:
    """Tokens/s by precision, a panel per test (pp = prefill, tg = decode), a bar per engine."""
    pairs = [p for p in pairs if _decoder_rate(p[1])]
    if not pairs:
        return None
    tests = sorted({p[1].workload for p in pairs}, key=lambda t: (not t.startswith("pp"), t))
    engine_of = _labeller(pairs, exclude={"precision", "workload", "scenario"})
    engines = list(dict.fromkeys(engine_of(p) for p in pairs))
    precision_of = _FIELDS["precision"]  # with the precision executed where it differs: native→q4_1
    precisions = list(dict.fromkeys(precision_of(p) for p in pairs))
    fig = Figure(figsize=(max(4.5, 1.2 * len(precisions) * max(1, len(engines)) ** 0.5 + 1.5) * len(tests), 3.6),
                 layout="constrained")
    axes = fig.subplots(1, len(tests), squeeze=False)[0]
    width = 0.8 / len(engines)
    for ax, test in zip(axes, tests):
        for j, engine in enumerate(engines):
            members = [p for p in pairs if p[1].workload == test and engine_of(p) == engine]
            if not members:
                continue
            rates = [_decoder_rate(p[1]) for p in members]
            xs = [precisions.index(precision_of(p)) + (j - (len(engines) - 1) / 2) * width for p in members]
            errors = np.array([_error(r["median"], r.get("ci95")) for r in rates]).T
            ax.bar(xs, [r["median"] for r in rates], width * 0.9, yerr=errors, capsize=3, color=_color(j),
                   label=engine or None)
        ax.set_xticks(range(len(precisions)), precisions)
        ax.set_xlim(-0.9, len(precisions) - 0.1)  # a lone bar stays a bar, not a wall
        ax.set_xlabel("precision")
        ax.set_ylabel("tokens/s")
        ax.set_title(f"{test} ({'prefill' if test.startswith('pp') else 'decode'})", fontsize=9)
    _legend_outside(fig, axes[-1])
    return Chart("decoder-tokens-per-s", "Decoder tokens/s by precision",
                 "Tokens per second at the median call (pp: prompt tokens per prefill; tg: tokens per decode step); "
                 "error bars are 95% confidence intervals (higher is better).", fig)


def fidelity_vs_speed(pairs: list[Pair], decoder: bool) -> Chart | None:
    """Fidelity against speed, one point per result, the Pareto front (nothing both faster and closer) marked."""
    points = []
    for p in pairs:
        fidelity, speed = _fidelity_value(p[1]), _speed(p[1], decoder)
        if fidelity is not None and speed is not None:
            points.append((p, speed, fidelity))
    if len(points) < 2:
        return None
    series_of = _labeller([p for p, _, _ in points], include={"run", "model", "engine", "precision"})
    detail_of = _labeller([p for p, _, _ in points], exclude={"run", "model", "engine", "precision"})
    fig, ax = _figure(width=7.5, height=4.2)
    names = list(dict.fromkeys(series_of(p) for p, _, _ in points))
    first: dict[str, Pair] = {}
    for p, _, _ in points:
        first.setdefault(series_of(p), p)
    style = _Style(first)
    for name in names:
        members = [(p, s, f) for p, s, f in points if series_of(p) == name]
        xerr = np.array([_error(s[0], s[1]) for _, s, _ in members]).T
        ax.errorbar([s[0] for _, s, _ in members], [f for _, _, f in members], xerr=xerr, capsize=2,
                    label=name or "results", **{**style.line(name), "linestyle": "none"})
    for k, (precision, threshold) in enumerate(sorted(_thresholds([p for p, _, _ in points]).items())):
        ax.axhline(threshold, color="C3", linestyle=(":", "-.", "--")[k % 3], linewidth=1,
                   label=f"pass threshold ({precision})" if precision else "pass threshold")
    if not decoder:
        _roofline_lines(ax, [p[1] for p, _, _ in points])
    # fidelity to the table's 6 decimals: 1 - 3e-13 ties with the reference rather than trailing it
    front = pareto_front([(s[0], round(f, 6)) for _, s, f in points])
    fx, fy = [points[i][1][0] for i in front], [points[i][2] for i in front]
    ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, label="Pareto front")
    ax.scatter(fx, fy, s=130, facecolors="none", edgecolors="black", linewidths=1.2, zorder=3)
    for i in front:
        detail = detail_of(points[i][0])
        if detail:
            ax.annotate(detail, (points[i][1][0], points[i][2]), textcoords="offset points", xytext=(6, 6),
                        fontsize=7)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("decode tokens/s (tg tests)" if decoder else "throughput (items/s)")
    ax.set_ylabel("top-1 agreement with the reference" if decoder else "min cosine similarity to the reference")
    _legend_outside(fig, ax)
    name = "decoder-fidelity-vs-speed" if decoder else "fidelity-vs-speed"
    return Chart(name, "Decoder fidelity against speed" if decoder else "Fidelity against speed",
                 "Up and to the right is better; circled points are the Pareto front (no other result is both "
                 "faster and closer to the reference); the reference itself sits at 1. Horizontal bars: 95% CI."
                 + ("" if decoder else " Vertical lines: the machine's compute roofline (items/s if every matrix "
                    "product ran at its precision's measured GEMM ceiling), where known."), fig)


def _roofline_lines(ax, results: list[Result]) -> None:
    """The machine's compute roofline in items/s as vertical lines: one per precision mix (an int8 result whose
    FFN down-projections stayed fp32 has a lower roofline than one with every Linear in int8)."""
    rooflines = {}
    for r in results:
        figure = r.roofline or {}
        if figure.get("roofline_items_per_s"):
            int8 = sum(p["flops"] for p in figure["parts"] if p["precision"] == "int8") / figure["flops_per_item"]
            label = figure["precision"] + (f", {int8:.0%} of FLOPs int8" if 0 < int8 < 1 else "")
            rooflines.setdefault(label, figure["roofline_items_per_s"])
    for k, (label, items_per_s) in enumerate(rooflines.items()):
        ax.axvline(items_per_s, color="C7", linestyle=("-", "--", ":", "-.")[k % 4], linewidth=1,
                   label=f"roofline ({label})")


# ---- helpers ------------------------------------------------------------------------------------------------

_FIELDS = {  # label part of a (run id, result) pair, in the order a label reads
    "run": lambda p: f"run {p[0]}",
    "model": lambda p: _shorten(p[1].model),
    "engine": lambda p: p[1].engine,
    "precision": lambda p: p[1].precision if p[1].executed_precision in (None, p[1].precision) or
    p[1].executed_precision.startswith(p[1].precision + "-") else f"{p[1].precision}→{p[1].executed_precision}",
    "scenario": lambda p: p[1].scenario,
    "workload": lambda p: p[1].workload,
    "seq": lambda p: f"seq {p[1].seq_len}",
    "batch": lambda p: f"b{p[1].batch_size}",
    "workers": lambda p: _count(p[1].workers, "worker"),
    "threads": lambda p: _count(p[1].threads, "thread"),
}


def _labeller(pairs: list[Pair], exclude: set[str] = frozenset(), include: set[str] | None = None):
    """A function naming a pair by the fields that vary among `pairs` (the engine always)."""
    names = [n for n in _FIELDS if n not in exclude and (include is None or n in include)]
    varying = [n for n in names if n == "engine" or len({_FIELDS[n](p) for p in pairs}) > 1]
    return lambda p: " ".join(_FIELDS[n](p) for n in varying)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shorten(text: str) -> str:
    if len(text) <= _LABEL_CHARS:
        return text
    half = (_LABEL_CHARS - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


def _error(value: float, ci) -> tuple[float, float]:
    """Error-bar lengths below and above a value from its 95% CI; none when there is no CI (one sample)."""
    if not ci:
        return 0.0, 0.0
    return max(value - ci[0], 0.0), max(ci[1] - value, 0.0)


def _decoder_rate(r: Result) -> dict | None:
    return r.prefill_tokens_per_s or r.decode_tokens_per_s


def _fidelity_value(r: Result) -> float | None:
    f = r.fidelity or {}
    if f.get("reference"):
        return 1.0
    return f.get("value")


def _thresholds(pairs: list[Pair]) -> dict[str, float]:
    """{precision: fidelity pass threshold}, the precision left out when all share one threshold."""
    found = {p[1].precision: p[1].fidelity["threshold"] for p in pairs if (p[1].fidelity or {}).get("threshold")}
    if len(set(found.values())) == 1:
        return {"": next(iter(found.values()))}
    return found


def _speed(r: Result, decoder: bool) -> tuple[float, list | None] | None:
    """(value, CI) on the chart's speed axis: decode tokens/s for decoders, items/s for encoders."""
    if decoder:
        rate = r.decode_tokens_per_s
        return (rate["median"], rate.get("ci95")) if rate else None
    return r.throughput["items_per_s"], r.throughput.get("ci95")


def _log_if_wide(ax, axis: str, values: list[float]) -> None:
    """A log axis when the values span more than 30×, its ticks written 0.1, 1, 10 (mathtext is off)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    values = [v for v in values if v > 0]
    if values and max(values) / min(values) > 30:
        target = ax.yaxis if axis == "y" else ax.xaxis
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(NullFormatter())


class _Style:
    """Colour by engine and marker and line style by precision, the same in every chart; where several series
    share an engine and precision (several runs or models), a colour and marker per series instead."""

    _LINES = ("-", "--", ":", "-.")

    def __init__(self, series: dict[str, Pair]):  # series name -> one of its pairs
        pairs = list(series.values())
        self.engines = list(dict.fromkeys(p[1].engine for p in pairs))
        self.precisions = list(dict.fromkeys(p[1].precision for p in pairs))
        self.by_engine = len(series) == len({(p[1].engine, p[1].precision) for p in pairs})
        self.series = series

    def line(self, name: str) -> dict:
        p = self.series[name]
        if not self.by_engine:
            k = list(self.series).index(name)
            return {"color": _color(k), "marker": _MARKERS[k % len(_MARKERS)], "linestyle": "-"}
        k = self.precisions.index(p[1].precision)
        return {"color": _color(self.engines.index(p[1].engine)), "marker": _MARKERS[k % len(_MARKERS)],
                "linestyle": self._LINES[k % len(self._LINES)]}


def _legend_outside(fig: Figure, ax) -> None:
    """The legend right of the plot, so that it never hides a point; none when there is only one line."""
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 1:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + 0.6 + 0.06 * max(map(len, labels)), height)  # the plot keeps its width


def _color(i: int) -> str:
    return f"C{i % 10}"


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _add(charts: Charts, chart: Chart | None, reason: str) -> None:
    if chart is None:
        charts.not_drawn.append(reason)
    else:
        charts.drawn.append(chart)


@contextlib.contextmanager
def _style(extra: dict | None = None):
    import matplotlib

    with matplotlib.rc_context({**_STYLE, **(extra or {})}):
        yield


__all__ = ["Chart", "Charts", "build_charts", "write_pngs", "pareto_front", "latency_by_engine",
           "latency_distribution", "throughput_by_workers", "decoder_tokens_per_s", "fidelity_vs_speed"]
