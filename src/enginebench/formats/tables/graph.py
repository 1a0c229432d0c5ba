"""Text for the graph commands: `enginebench nodes` (where to cut) and `enginebench blocks` (time per block)."""

from __future__ import annotations

import json

from enginebench.formats.tables.section import Section
from enginebench.models.onnx_graph import NodeInfo
from enginebench.scenarios.blocks import WHOLE, Breakdown, breakdown_of
from enginebench.scenarios.registry import in_table
from enginebench.store.model import Run


def format_nodes(nodes: list[tuple[int, NodeInfo]]) -> str:
    """One line per (graph index, node): op type, node name, then each output tensor with its inferred shape."""
    width = max((len(n.op_type) for _, n in nodes), default=0)
    lines = []
    for i, n in nodes:
        outs = ", ".join(f"{o} {s}" for o, s in zip(n.outputs, n.shapes))
        lines.append(f"{i:>5}  {n.op_type:<{width}}  {n.name or '(unnamed)'}  -> {outs}")
    return "\n".join(lines)


def nodes_json(nodes: list[tuple[int, NodeInfo]]) -> str:
    return json.dumps([{"index": i, "name": n.name, "op_type": n.op_type, "outputs": list(n.outputs),
                        "shapes": list(n.shapes)} for i, n in nodes], indent=2)


def breakdown_dict(bd: Breakdown) -> dict:
    return {
        "batch_size": bd.batch_size, "seq_len": bd.seq_len,
        "blocks": [{"name": b.name, "nodes": b.nodes, "inputs": list(b.inputs), "outputs": list(b.outputs)}
                   for b in bd.blocks],
        "engines": [{"engine": e.engine, "error": e.error,
                     "summaries_ns": [s.to_dict() if s else None for s in e.summaries],
                     "whole_ns": e.whole.to_dict() if e.whole else None,
                     **({"failed": e.failed} if e.failed else {})} for e in bd.engines],
    }


def _ms(s) -> str:
    if s.ci95 is None:
        return f"{s.median / 1e6:.3f} (n=1)"
    return f"{s.median / 1e6:.3f} ± {(s.ci95[1] - s.ci95[0]) / 2e6:.3f}"


def breakdown_rows(bd: Breakdown) -> tuple[list[str], list[list[str]]]:
    """Block rows x engine columns, then the sum of the blocks' medians and the whole model as one graph; a block
    an engine did not measure reads `—`, and that engine's total counts the blocks it measured."""
    measured = [e for e in bd.engines if e.error is None]
    headers = ["block", "nodes"] + [f"{e.engine} ms" for e in measured]
    totals = [sum(s.median for s in e.summaries if s) for e in measured]
    rows = []
    for k, block in enumerate(bd.blocks):
        cells = []
        for e, total in zip(measured, totals):
            s = e.summaries[k]
            cells.append(f"{_ms(s)} ({100 * s.median / total:4.1f}%)" if s else "—")
        rows.append([block.name, str(block.nodes), *cells])
    rows.append(["total (sum of medians)", str(sum(b.nodes for b in bd.blocks)),
                 *(f"{t / 1e6:.3f}" + (" (blocks missing)" if None in e.summaries else "")
                   for e, t in zip(measured, totals))])
    rows.append([f"{WHOLE}, one graph", "", *(_ms(e.whole) if e.whole else "—" for e in measured)])
    return headers, rows


def _section(bd: Breakdown) -> Section:
    """Median ms ± half the 95% CI per block and engine, and the block's share of the blocks' total; its notes say
    why an engine or a block has no figure."""
    headers, rows = breakdown_rows(bd)
    unmeasured = ([f"{e.engine}: not measured: {e.error}" for e in bd.engines if e.error]
                  + [f"{e.engine}: {name} not measured: {why}" for e in bd.engines for name, why in e.failed.items()])
    return Section(f"time per block, batch {bd.batch_size} x {bd.seq_len} tokens (median ms ± 95% CI half-width, % "
                   "of the blocks' total)", headers, rows, keys=2, left=frozenset({"block"}), notes=unmeasured,
                   repeat=None)


def render_breakdown(bd: Breakdown, console=None) -> None:
    """The breakdown folded to the terminal's width (Markdown off a terminal), as `show` prints it stored."""
    from rich.console import Console

    _section(bd).print(console or Console())


def section(run: Run) -> Section | None:
    """A stored `enginebench blocks` run as the command printed it."""
    results = in_table(run.results, "blocks")
    return _section(breakdown_of(results, run.config["blocks"])) if results else None
