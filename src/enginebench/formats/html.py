"""One self-contained HTML file for one or more stored runs: read first as pictures, then as tables.

Nothing is fetched: styles are inline, charts are inline SVG, and a Content-Security-Policy forbids scripts
and every external request. Every text that came from a user or an engine (model paths, run ids, engine
options, errors) goes through html.escape; matplotlib escapes the text inside the SVG charts.
"""

from __future__ import annotations

import json
from html import escape
from typing import ClassVar

from enginebench.analysis.recommend import Constraints, recommend
from enginebench.errors import UsageError
from enginebench.formats.base import RUNS, Format, Subject
from enginebench.formats.tables import sections
from enginebench.scenarios.registry import scenario_class, table_of
from enginebench.store.labels import affinity_text
from enginebench.store.model import Run

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d1d1f; margin: 0 auto; max-width: 1180px; padding: 1.5em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
h3 { font-size: 1em; margin-top: 1.4em; }
.muted { color: #666; } .warn { color: #8a4b00; } .bad { color: #a40000; }
figure { margin: 1.2em 0 2em; } figcaption { margin-bottom: .4em; }
figure svg { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 12.5px; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; vertical-align: top; }
th { background: #f3f3f5; } tr:nth-child(even) td { background: #fafafa; }
td.text, th.text { text-align: left; white-space: normal; }
tr.failed td, tr.unfaithful td { color: #a40000; } tr.skipped td { color: #888; }
.scroll { overflow-x: auto; }
code, pre { font: 12px ui-monospace, monospace; } pre { background: #f6f6f8; padding: .8em; overflow-x: auto; }
ul.notes li { margin: .2em 0; }
"""


def html_report(runs: list[Run]) -> str:
    """The whole report as one HTML document."""
    from enginebench.formats.charts import build_charts  # matplotlib: only when a report is drawn

    if not runs:
        raise UsageError("no runs to report: pass run ids (see `enginebench runs`)")
    charts = build_charts(runs)
    title = "enginebench report — " + ", ".join(f"run {run.run_id}" for run in runs)
    body = [
        f"<h1>{escape(title)}</h1>",
        _summary(runs),
        _section("recommendation", "Recommendation", _recommendation(runs)),
        _section("charts", "Charts", _charts(charts)),
        _section("results", "Results", "".join(_run_tables(run) for run in runs)),
        _section("warnings", "Warnings and failures", _warnings(runs)),
        _section("machine", "Machine and versions", _machines(runs)),
        _section("config", "How the runs were started", _configs(runs)),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"  # or the browser asks for /favicon.ico
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_html_report(runs: list[Run], path: str) -> None:
    text = html_report(runs)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}; choose a writable path") from None


# ---- sections -----------------------------------------------------------------------------------------------

def _section(anchor: str, heading: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(heading)}</h2>\n{content}</section>'


def _summary(runs: list[Run]) -> str:
    results = [r for run in runs for r in run.results]
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    warned = sum(r.status == "ok" and not r.verdict["ok"] for r in results)
    models = sorted({r.model for r in results})
    parts = [f"{len(results)} results: {counts['ok']} ok"]
    if counts["failed"]:
        parts.append(f'<span class="bad">{counts["failed"]} failed</span>')
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped")
    if warned:
        parts.append(f'<a href="#warnings" class="warn">{warned} with warnings</a>')
    when = "; ".join(f"run {escape(run.run_id)} at {escape(run.created_at)}" for run in runs)
    model_text = ", ".join(f"<code>{escape(m)}</code>" for m in models) or "none"
    return (f"<p>{', '.join(parts)} · model{'s' if len(models) > 1 else ''} {model_text}</p>"
            f'<p class="muted">{when}</p>')


def report_questions(runs: list[Run]) -> list[tuple[str, str | None, str]]:
    """The questions the runs can answer, as (model, workload, objective): per model, each workload it was
    measured on (decoders: each tg test) and each objective its scenarios serve, so that no answer ranks
    unlike work together."""
    questions = []
    for model in dict.fromkeys(r.model for run in runs for r in run.results):
        ok = [r for run in runs for r in run.results if r.model == model and r.status == "ok"]
        if not ok:
            questions.append((model, None, "throughput"))  # the recommender says why there is nothing
            continue
        if any(table_of(r) == "decoders" for r in ok):
            tests = sorted({r.workload for r in ok if r.workload.startswith("tg")})
            questions += [(model, test, "throughput") for test in tests] or [(model, None, "throughput")]
            continue
        for workload in dict.fromkeys(r.workload for r in ok):
            scenarios = [scenario_class(r.scenario) for r in ok if r.workload == workload]
            if any(s.per_call_latency for s in scenarios):
                questions.append((model, workload, "latency"))
            if any(s.counts_as_throughput for s in scenarios):
                questions.append((model, workload, "throughput"))
    return questions


def _recommendation(runs: list[Run]) -> str:
    """The recommender's verdict for each question the runs answer, under its default constraints."""
    out = []
    for model, workload, objective in report_questions(runs):
        try:
            recommendation = recommend(runs, Constraints(model=model, workload=workload, objective=objective))
            out.append(_nested_list(recommendation.lines(), recommendation.command))
            if recommendation.best is None and "warn verdict" in recommendation.excluded:
                noisy = recommend(runs, Constraints(model=model, workload=workload, objective=objective,
                                                    accept_warn=True))  # what the noise hides
                if noisy.best is not None:
                    out.append("<p>Judging the results with warnings too (their figures are noisy):</p>"
                               + _nested_list(noisy.lines(), noisy.command))
        except UsageError as e:
            where = " · ".join(x for x in (model, workload, objective) if x)
            out.append(f'<p class="warn">No recommendation for {escape(where)}: {escape(str(e))}</p>')
    return "\n".join(out) or '<p class="muted">No recommendation: the runs hold no results.</p>'


def _nested_list(lines: list[str], command: str | None = None) -> str:
    """Lines indented by two spaces become a list under the line above them; the command is set as code."""
    out, open_sub = [], False
    for line in lines:
        sub = line.startswith("  ")
        if sub and not open_sub and out:
            out[-1] = out[-1].removesuffix("</li>") + "<ul>"
            open_sub = True
        elif not sub and open_sub:
            out.append("</ul></li>")
            open_sub = False
        text = escape(line.strip())
        if command and escape(command) in text:
            text = text.replace(escape(command), f"<code>{escape(command)}</code>")
        out.append(f"<li>{text}</li>")
    if open_sub:
        out.append("</ul></li>")
    if command and not any(command in line for line in lines):
        out.append(f"<li>reproduce: <code>{escape(command)}</code></li>")
    return f"<ul>{''.join(out)}</ul>" if out else ""


def _charts(charts) -> str:
    out = []
    for chart in charts.drawn:
        out.append(f'<figure id="{chart.name}"><figcaption><b>{escape(chart.title)}.</b> {escape(chart.caption)}'
                   f"</figcaption>\n{chart.svg()}</figure>")
    if charts.not_drawn:
        out.append('<p class="muted">Not drawn: ' + "; ".join(escape(line) for line in charts.not_drawn) + ".</p>")
    return "\n".join(out)


def _run_tables(run: Run) -> str:
    out = [f"<h3>run {escape(run.run_id)}</h3>"] if run.results else [f"<h3>run {escape(run.run_id)}: no results</h3>"]
    groups = by_node(run.results)
    if len(groups) > 1:  # a Ray run: one table per machine that measured, so no row is read against another's
        for label, results in groups:
            out.append(f"<h4>measured on {escape(label)}</h4>")
            out.append(_run_tables(_with_results(run, results)).split("\n", 1)[1])
        return "\n".join(out)
    for section in sections(run):
        out.append(_table(section.title, section.headers, section.rows, section.statuses, section.left))
        if section.legend:
            out.append(_list(section.legend, css="muted"))
    return "\n".join(out)


def node_label(node: dict) -> str:
    return (f"{node.get('hostname')} ({node.get('cpu')}, {node.get('logical_cores')} cores"
            + (f", Ray node {str(node['ray_node_id'])[:8]}" if node.get("ray_node_id") else "") + ")")


def by_node(results) -> list[tuple[str, list]]:
    """Results grouped by the machine that measured them (details.node, set by the Ray launcher); one group
    labelled "this machine" when no result names a node."""
    groups: dict[str, list] = {}
    for r in results:
        node = (r.details or {}).get("node")
        groups.setdefault(node_label(node) if node else "this machine", []).append(r)
    return list(groups.items())


def _warnings(runs: list[Run]) -> str:
    out = []
    mixed = _machine_differences(runs)
    if mixed:
        out.append(f'<p class="warn">{escape(mixed)}</p>')
    for run in runs:
        lines = [line for section in sections(run) for line in section.notes]
        if not lines:
            continue
        if len(runs) > 1:
            out.append(f"<h3>run {escape(run.run_id)}</h3>")
        out.append(_list(lines, css="notes warn"))
    return "\n".join(out) or "<p>None: every result passed its checks.</p>"


def _machines(runs: list[Run]) -> str:
    out = []
    for run in runs:
        m = run.machine or {}
        if len(runs) > 1:
            out.append(f"<h3>run {escape(run.run_id)}</h3>")
        facts = [
            ("CPU", m.get("cpu")),
            ("cores", f"{m.get('logical_cores')} logical, {m.get('physical_cores')} physical"),
            ("affinity", affinity_text(m.get("affinity"))),
            ("CPU flags", " ".join(m.get("cpu_flags") or []) or None),
            ("memory", f"{m.get('memory_gb')} GB" if m.get("memory_gb") else None),
            ("governor", m.get("governor")),
            ("OS", m.get("os")),
            ("Python", m.get("python")),
            ("host", m.get("hostname")),
            ("environment", " ".join(f"{k}={v}" for k, v in (m.get("env") or {}).items()) or None),
        ]
        engines = sorted({(r.engine, r.engine_version or "?") for r in run.results})
        facts.append(("engines", ", ".join(f"{e} {v}" for e, v in engines) or None))
        facts.append(("libraries", ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items()) or None))
        rows = "".join(f'<tr><th class="text">{escape(k)}</th><td class="text">{escape(str(v))}</td></tr>'
                       for k, v in facts if v is not None)
        out.append(f"<table>{rows}</table>")
        nodes = [(label, len(results)) for label, results in by_node(run.results) if label != "this machine"]
        if nodes:
            out.append("<p>Measured on Ray nodes (the run's machine above orchestrated):</p>")
            out.append(_list([f"{label}: {n} results" for label, n in nodes]))
    return "\n".join(out)


def _configs(runs: list[Run]) -> str:
    return "\n".join(
        f"<details><summary>run {escape(run.run_id)}: the options it was started with</summary>"
        f"<pre>{escape(json.dumps(run.config, indent=2, sort_keys=True, default=str))}</pre></details>"
        for run in runs)


# ---- pieces -------------------------------------------------------------------------------------------------

def _table(caption: str, headers: list[str], rows: list[list[str]], statuses: list[str],
           text_columns: set[str]) -> str:
    def cell(tag: str, header: str, value: str) -> str:
        css = ' class="text"' if header in text_columns else ""
        return f"<{tag}{css}>{escape(value)}</{tag}>"

    head = "".join(cell("th", h, h) for h in headers)
    body = "".join(
        f'<tr class="{escape(status)}">' + "".join(cell("td", h, v) for h, v in zip(headers, row)) + "</tr>"
        for row, status in zip(rows, statuses))
    return (f'<p>{escape(caption)}</p><div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _list(lines: list[str], css: str = "") -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<ul class="{css}">{items}</ul>' if css else f"<ul>{items}</ul>"


def _with_results(run: Run, results) -> Run:
    return Run(run.run_id, run.created_at, run.machine, run.config, list(results), run.schema_version)


def _machine_differences(runs: list[Run]) -> str | None:
    """A warning when the runs come from different CPUs or library versions: their figures may not compare."""
    if len(runs) < 2:
        return None
    cpus = {str((run.machine or {}).get("cpu")) for run in runs}
    libraries = {json.dumps((run.machine or {}).get("libraries") or {}, sort_keys=True) for run in runs}
    if len(cpus) > 1:
        return f"These runs come from different CPUs ({', '.join(sorted(cpus))}): compare their figures with care."
    if len(libraries) > 1:
        return "These runs used different library versions (see Machine and versions): compare with care."
    return None


class Html(Format):
    name = "html"
    help = "one self-contained page: charts, tables, warnings, machine (`report --html FILE`)"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS})
    suffix = ".html"
    several_runs = True

    def text(self, subject: Subject) -> str:
        return html_report(subject)


__all__ = ["Html", "html_report", "write_html_report"]
