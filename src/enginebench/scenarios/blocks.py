"""Per-block timing of an encoder (`enginebench blocks`) as a scenario: each cell is one block of the model's exported
ONNX graph (embeddings, each layer, pooling; models/onnx_graph.find_blocks), or the whole graph, on one engine that
loads ONNX graphs (Engine.cuts_graph). Its cells are measured in the launcher's child like every other cell
(execution/child.py), in their engine's own processes, never beside another engine: a crash or a hang costs the
cell it was running, and a fresh process of the same engine goes on with the rest.

A block is timed on the real outputs of the block before it, computed by the same engine: no block is timed as a
difference of two cumulative cuts. In the measuring process, once (CellRun.cache, kept for the job's next cells):
every block's graph loaded and the workload's batches chained through them, which gives each block its own inputs;
then the cell's block is timed on its inputs under the stopping rule. The whole graph is its own cell, timed on the
same batches. The plan gives the files (Plan.context: "blocks", each Block with its file, and "whole", the whole
graph's file); the batches come from the cell's workload (CellRun.workload), as a model's cells get theirs.

Stored, a block's result is a Result like a model's (model = the model, workload = the workload, settings = the
block), in a table of its own ("blocks"); `breakdown_of` turns a run's results back into the per-engine breakdown
the command prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from enginebench.engines import engine_class
from enginebench.measure.memory import peak_rss_mb
from enginebench.measure.stats import Summary, summarize
from enginebench.measure.timing import measure_calls
from enginebench.models.onnx_export import onnx_encoder, onnx_key
from enginebench.models.onnx_graph import Block, block_models
from enginebench.models.spec import ModelSpec
from enginebench.plan import Cell
from enginebench.scenarios.base import CellRun, Grid, Measurement, Scenario, ScenarioSettings

WHOLE = "whole model"  # the name of the cell that times the whole graph


@dataclass(frozen=True)
class BlockSettings(ScenarioSettings):
    """A blocks cell's settings: which block (its index in the model's blocks; None: the whole graph) and its name."""

    block: int | None
    name: str

    def label(self) -> str:
        return self.name

    @classmethod
    def from_dict(cls, d: dict) -> "BlockSettings":
        return cls(d.get("block"), d.get("name", ""))


def block_settings(blocks: list[Block]) -> list[BlockSettings]:
    """One per block, in the model's order, then the whole graph."""
    return [BlockSettings(k, b.name) for k, b in enumerate(blocks)] + [BlockSettings(None, WHOLE)]


class Blocks(Scenario):
    name = "blocks"
    model_kinds = ()  # not a `run --scenario`: `enginebench blocks` plans it
    times_kernels = True  # each cell loads its own graphs (Plan.context), never the plan's model session
    unranked_because = "a block of a model (enginebench blocks), not the whole model"

    def cells(self, grid: Grid, settings: list[BlockSettings] | None) -> list[Cell]:
        """Every block (`settings`, one per block and one for the whole graph) on every engine of the grid, engine
        by engine; fp32 (the exported graph's), the grid's first workload, batch size and --threads."""
        threads = grid.threads[0] if grid.threads else grid.cores
        return [Cell(engine, "fp32", self.name, grid.workloads[0], grid.batch_sizes[0], 1, threads, settings=s)
                for engine in grid.engines for s in settings or ()]

    def measure(self, run: CellRun) -> Measurement:
        k = run.cell.settings.block
        if k is None:
            calls, feeds, load_s = _whole(run)
        else:
            chained = _chained(run)
            calls, feeds, load_s = chained["runners"][k], chained["feeds"][k], chained["load_s"]
        started = time.perf_counter()
        samples = measure_calls(calls, feeds, run.rule)
        wall_s = time.perf_counter() - started
        batches = _batches(run)
        return Measurement([samples], items_per_call=run.cell.batch_size,
                           tokens_per_item=sum(b.real_tokens for b in batches) / sum(b.size for b in batches),
                           load_s=load_s, peak_rss_mb=peak_rss_mb(), executed_precision=run.cell.precision,
                           wall_s=wall_s)

    def table(self, result) -> str:
        return "blocks"

    frame_columns = {"block": "string", "block_index": "Int64"}

    def frame_values(self, result) -> dict:
        """Which block a row timed (its index in the model's blocks; none for the whole graph)."""
        s = self.settings_from_dict(result.settings or {})
        return {"block": s.name or None, "block_index": s.block}

    def settings_from_dict(self, d: dict) -> BlockSettings:
        return BlockSettings.from_dict(d)


# -- in the measuring process ------------------------------------------------------------------------

def _engine(run: CellRun):
    """The cell's engine and its options, made once in this process."""
    if "engine" not in run.cache:
        cls = engine_class(run.cell.engine)
        run.cache["engine"] = (cls(), cls.make_options(run.cell.threads, getattr(run.factory, "options", {})))
    return run.cache["engine"]


def _batches(run: CellRun) -> list:
    return run.workload.batches(run.cell.batch_size)


def _chained(run: CellRun) -> dict:
    """Every block loaded, and its inputs: the workload's batches chained through the blocks before it, by this
    engine. Once per process (the job's next cells reuse it)."""
    if "chained" not in run.cache:
        instance, options = _engine(run)
        blocks: list[tuple[Block, Path]] = run.context["blocks"]
        run.loading()  # the parent times it as a load: one that hangs or dies twice gives up the engine's cells
        started = time.perf_counter()
        runners = [instance.load_onnx_graph(path, options) for _, path in blocks]
        feeds: list[list[dict]] = [[] for _ in blocks]
        for batch in _batches(run):
            values = batch.as_dict()
            for k, (block, _) in enumerate(blocks):
                feeds[k].append({name: values[name] for name in block.inputs})
                values.update(zip(block.outputs, runners[k](feeds[k][-1])))
        run.cache["chained"] = {"runners": runners, "feeds": feeds, "load_s": time.perf_counter() - started}
        run.loaded()
    return run.cache["chained"]


def _whole(run: CellRun):
    """The whole graph loaded by this engine, its inputs from the same batches, and the seconds its load took."""
    instance, options = _engine(run)
    whole = run.context["whole"]
    run.loading()
    started = time.perf_counter()
    call = instance.load_onnx_graph(whole, options)
    load_s = time.perf_counter() - started
    run.loaded()
    wanted = graph_inputs(whole)
    return call, [{k: v for k, v in b.as_dict().items() if k in wanted} for b in _batches(run)], load_s


def graph_inputs(path: Path) -> set[str]:
    import onnx  # deferred: an optional dependency (the onnxruntime extra), read only where a graph is timed

    return {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}


# -- planning: the files ------------------------------------------------------------------------------

def full_graph(model: ModelSpec) -> Path:
    """The whole model's exported ONNX graph (not a cut of it)."""
    return onnx_encoder(replace(model, until=None))[0]


def block_files(model: ModelSpec) -> list[tuple[Block, Path]]:
    """Each block of the model with its own ONNX file (cached)."""
    return block_models(full_graph(model), onnx_key(model))


# -- the breakdown, read back from the results ----------------------------------------------------------

@dataclass
class EngineBlocks:
    engine: str
    summaries: list[Summary | None] = field(default_factory=list)  # one per block, in ns (None: not measured)
    whole: Summary | None = None  # the whole model as one graph, on the same inputs
    error: str | None = None  # why this engine has no figures at all
    failed: dict[str, str] = field(default_factory=dict)  # block name (or WHOLE) -> why it has no figure


@dataclass
class Breakdown:
    blocks: list[Block]
    engines: list[EngineBlocks]
    batch_size: int
    seq_len: int


def block_facts(blocks: list[Block]) -> list[dict]:
    """The blocks as a run stores them (its configuration's "blocks" record)."""
    return [{"name": b.name, "nodes": b.nodes, "inputs": list(b.inputs), "outputs": list(b.outputs)} for b in blocks]


def breakdown_of(results: list, facts: dict) -> Breakdown:
    """A blocks run's results (any order) back as its breakdown; `facts`: what the run recorded of its blocks
    ({"blocks": block_facts, "engines", "batch_size", "seq_len"}). An engine none of whose cells was measured
    has the reason as its error."""
    blocks = [Block(d["name"], tuple(d["inputs"]), tuple(d["outputs"]), d["nodes"]) for d in facts["blocks"]]
    mine = [r for r in results if r.scenario == Blocks.name]
    engines = list(dict.fromkeys([*facts.get("engines", []), *(r.engine for r in mine)]))
    out = []
    for engine in engines:
        e = EngineBlocks(engine, [None] * len(blocks))
        for r in (r for r in mine if r.engine == engine):
            settings = BlockSettings.from_dict(r.settings or {})
            summary = summarize(r.samples) if r.samples else None
            if summary is None:
                e.failed[settings.name] = r.error or r.status
            elif settings.block is None:
                e.whole = summary
            else:
                e.summaries[settings.block] = summary
        if e.whole is None and all(s is None for s in e.summaries):
            reasons = list(dict.fromkeys(e.failed.values()))
            # one reason, or one the others extend (a load given up on: "...; ... so this cell was not tried")
            e.error = reasons[0] if all(r.startswith(reasons[0].split("; ")[0]) for r in reasons) else (
                "; ".join(f"{n}: {why}" for n, why in e.failed.items()) or "not measured")
            e.summaries, e.failed = [], {}
        out.append(e)
    return Breakdown(blocks, out, facts["batch_size"], facts["seq_len"])


__all__ = ["Blocks", "BlockSettings", "block_settings", "WHOLE", "EngineBlocks", "Breakdown", "breakdown_of",
           "block_facts", "block_files", "full_graph", "graph_inputs"]
