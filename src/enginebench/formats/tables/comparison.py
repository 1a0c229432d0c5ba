"""A comparison of two runs as a person reads it (formats/console.py, md.py, json.py, junit.py): the cells
the gate counts listed first, the table of ratios with their intervals, notes, the multiple-comparison
correction and the gate's one line."""

from __future__ import annotations

import json

from enginebench.analysis.compare import GATE_KINDS, ONE_PROCESS_NOTE, CellComparison, RunComparison, percent
from enginebench.display import significant as _num
from enginebench.formats.terminal import is_screen, markdown_table, print_lines, print_table
from enginebench.measure.compare import Ratio
from enginebench.scenarios.registry import settings_label

_CELL_COLUMNS = [  # (header, getter of a cell dict)
    ("engine", lambda c: c["engine"]),
    ("model", lambda c: c["model"]),
    ("precision", lambda c: c["precision"]),
    ("scenario", lambda c: c["scenario"]),
    ("workload", lambda c: c["workload"]),
    ("seq", lambda c: str(c.get("seq_len", ""))),
    ("batch", lambda c: str(c["batch_size"])),
    ("workers×threads", lambda c: f"{c['workers']}×{c['threads']}"),
    ("settings", lambda c: settings_label(c["scenario"], c.get("settings"))),
]
MEASURE_HEADERS = ["base → new", "new/base (95% CI)", "change", "verdict"]
_SHORT_VERDICT = {"faster": "faster", "slower": "SLOWER", "no significant change": "no sig. change"}


def cell_label(cell: dict) -> str:
    return (f"{cell['engine']} {cell['precision']} {cell['scenario']} {cell['workload']} b{cell['batch_size']} "
            f"{cell['workers']}×{cell['threads']}" + (f" {settings_label(cell['scenario'], cell.get('settings'))}"
                                                       if cell.get("settings") else ""))


def _x(value: float) -> str:
    return f"{value:.2f}" if 0.095 <= value < 9.995 else _num(value, 3 if value >= 1 else 2)


def ratio_text(r: Ratio) -> str:
    """`0.95× [0.93, 0.97]`."""
    if r.ci95 is None:
        return f"{_x(r.value)}× (no CI)"
    return f"{_x(r.value)}× [{_x(r.ci95[0])}, {_x(r.ci95[1])}]"


def _base_to_new(c: CellComparison) -> str:
    return f"{_num(c.base)} → {_num(c.new)} {c.unit}"


def table_rows(cmp: RunComparison) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """(headers, rows, constants): a row number, the cell parameters that vary, then the comparison; the
    constant parameters for the title."""
    varying, constants = [], {}
    for header, get in _CELL_COLUMNS:
        values = {get(c.cell) for c in cmp.cells}
        if header == "engine" or len(values) > 1:
            varying.append((header, get))
        elif values and (value := values.pop()):  # a constant that says nothing (no settings) is left out
            constants[header] = value
    rows = [[str(i)] + [get(c.cell) for _, get in varying]
            + [_base_to_new(c), ratio_text(c.ratio), c.change(), _SHORT_VERDICT[c.verdict]]
            for i, c in enumerate(cmp.cells, 1)]
    return ["#"] + [h for h, _ in varying] + MEASURE_HEADERS, rows, constants


def _side_name(cmp: RunComparison, side: str) -> str:
    return f"{side} ({cmp.base_id if side == 'base' else cmp.new_id})"


def _cell_id(cell: dict) -> str:
    return json.dumps(cell, sort_keys=True)


_KIND_TEXT = {"missing": "missing from the new run", "failed": "failed in the new run",
              "skipped": "skipped in the new run", "fidelity": "that lost fidelity",
              "no-ci": "without a confidence interval"}


def issue_header(cmp: RunComparison) -> str:
    n, blocking = len(cmp.issues), len(cmp.blocking())
    fails = (f"{blocking} fail{'s' * (blocking == 1)} --fail-on regression" if blocking
             else "all allowed by --allow")
    return (f"{n} cell{'s' * (n != 1)} the base measured that the new run cannot vouch for ({fails}; "
            f"--allow {','.join(GATE_KINDS)} lets a kind pass):")


def issue_lines(cmp: RunComparison) -> list[str]:
    """One line a cell the gate counts besides slower ones, blocking first: its kind, [row] when it is in the
    table, the cell and the reason."""
    rows = {_cell_id(c.cell): i for i, c in enumerate(cmp.cells, 1)}
    lines = []
    for x in cmp.issues:
        row = rows.get(_cell_id(x.cell))
        lines.append(f"{x.kind.upper()} {f'[{row}] ' if row else ''}{cell_label(x.cell)}: {x.reason}"
                     + (f" (allowed: --allow {x.kind})" if x.allowed else ""))
    return lines


def notes(cmp: RunComparison) -> list[str]:
    """Lines under the table: the rows' further reasons, cells not compared (those the issues do not already
    name), one-process runs."""
    lines = []
    for i, c in enumerate(cmp.cells, 1):
        telling = (c.verdict != "no significant change" or "threshold:" in c.reasons[0] or "Holm" in c.reasons[0]
                   or c.ratio.ci95 is None)
        extra = [r for r in c.reasons[1:] if "one process" not in r]  # said once for the whole run below
        if telling or extra:
            lines.append(f"[{i}] {cell_label(c.cell)}: " + "; ".join(c.reasons[:1] * telling + extra))
    named = {(_cell_id(x.cell), x.kind) for x in cmp.issues}
    differs = {_cell_id(m[side]): "; ".join(m["differs"]) for m in cmp.near_misses for side in ("base", "new")}
    for side, cells in (("base", cmp.only_in_base), ("new", cmp.only_in_new)):
        lines += [f"only in {_side_name(cmp, side)}: {cell_label(c)}"
                  + (f" (not the same cell: {differs[_cell_id(c)]})" if _cell_id(c) in differs else "")
                  for c in cells if side == "new" or (_cell_id(c), "missing") not in named]
    lines += [f"not compared: {cell_label(x['cell'])}: {x['why']}" for x in cmp.not_compared
              if not {(_cell_id(x["cell"]), "failed"), (_cell_id(x["cell"]), "skipped")} & named]
    lines += [f"{_side_name(cmp, side)}: {ONE_PROCESS_NOTE}" for side in cmp.one_process]
    return lines


def gate_line(cmp: RunComparison) -> str:
    """What `--fail-on regression` makes of this comparison, in one line."""
    slower, blocking = cmp.regressions(), cmp.blocking()
    parts = []
    if slower:
        parts.append(f"{len(slower)} cell{'s' if len(slower) > 1 else ''} slower by more than "
                     f"{percent(cmp.threshold)} with 95% confidence: "
                     + ", ".join(f"{cell_label(c.cell)} ({c.change()})" for c in slower))
    for kind in GATE_KINDS:
        cells = [x.cell for x in blocking if x.kind == kind]
        if cells:
            parts.append(f"{len(cells)} cell{'s' if len(cells) > 1 else ''} {_KIND_TEXT[kind]}: "
                         + ", ".join(map(cell_label, cells)))
    called = [c for c in cmp.machine_moved() if c.verdict != "no significant change"]
    if called:
        parts.append(f"the machine itself ran at another speed beside {len(called)} of the cells called changed "
                     "(their notes say how much): measure again before believing "
                     + ("it" if len(called) == 1 else "them"))
    if slower or blocking:
        return "; ".join(parts)
    line = f"no cell is slower by more than {percent(cmp.threshold)} with 95% confidence"
    allowed = [x.kind for x in cmp.issues if x.allowed]
    if allowed:
        counts = ", ".join(f"{allowed.count(k)} {k}" for k in GATE_KINDS if k in allowed)
        line += f", and the new run vouches for every cell but those allowed ({counts})"
    else:
        line += ", and the new run vouches for every cell the base measured"
    return "; ".join([line] + parts)


def _title(cmp: RunComparison, constants: dict) -> str:
    title = f"{cmp.new_id} (new) vs {cmp.base_id} (base)"
    if constants:
        title += " — " + ", ".join(f"{k} {v}" for k, v in constants.items())
    return title + f" · a change counts beyond {percent(cmp.threshold)} (the noise floor)"


def _difference_lines(cmp: RunComparison) -> list[str]:
    if not cmp.differences():
        return []
    return (["THE RUNS DIFFER in more than the code measured: a change below may come from these"]
            + [f"  • {line}" for line in cmp.differences()])


def render(cmp: RunComparison, console=None) -> None:
    """On a screen: the differences in red, the cells the gate counts besides slower ones, the table folded to
    the width, notes, the correction and the gate's line. Anywhere else (a pipe, a CI log): the Markdown of
    `--format md`."""
    from rich.console import Console

    console = console or Console()
    if not is_screen(console):
        console.out(to_markdown(cmp), highlight=False, end="")
        return
    print_lines(console, _difference_lines(cmp), style="bold red")
    if cmp.issues:
        style = "bold red" if cmp.blocking() else "yellow"
        print_lines(console, [issue_header(cmp)] + [f"  • {line}" for line in issue_lines(cmp)], style=style)
    headers, rows, constants = table_rows(cmp)
    if rows:
        blocked = {_cell_id(x.cell) for x in cmp.blocking()}
        styles = [{"slower": "red", "faster": "green"}.get(c.verdict) or ("red" if _cell_id(c.cell) in blocked
                                                                         else None) for c in cmp.cells]
        print_table(console, _title(cmp, constants), headers, rows, keys=len(headers) - len(MEASURE_HEADERS),
                    left={"#"} | set(dict(_CELL_COLUMNS)), styles=styles, repeat=2)
    else:
        print_lines(console, ["no cell was measured in both runs"], style="bold")
    print_lines(console, notes(cmp), style="yellow")
    print_lines(console, [cmp.correction_text()])
    print_lines(console, [gate_line(cmp)], style="bold red" if cmp.fails_gate() else "green")


def to_markdown(cmp: RunComparison) -> str:
    headers, rows, constants = table_rows(cmp)
    lines = []
    if cmp.differences():
        lines += ["**The runs differ in more than the code measured: a change below may come from these:**", ""]
        lines += [f"- {d}" for d in cmp.differences()] + [""]
    if cmp.issues:
        lines += [f"**{issue_header(cmp)}**", ""] + [f"- {line}" for line in issue_lines(cmp)] + [""]
    lines += [f"**{_title(cmp, constants)}**", ""]
    lines.append(markdown_table(headers, rows) if rows else "no cell was measured in both runs\n")
    lines += [f"- {line}" for line in notes(cmp)]
    lines.append(f"- {cmp.correction_text()}")
    lines.append(f"- **{gate_line(cmp)}**")
    return "\n".join(lines) + "\n"


def to_json(cmp: RunComparison) -> str:
    return json.dumps(cmp.to_dict(), indent=2)


__all__ = ["render", "to_markdown", "to_json", "table_rows", "notes", "gate_line", "issue_header",
           "issue_lines", "cell_label", "ratio_text"]
