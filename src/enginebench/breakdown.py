"""Per-block timing of the encoder (`enginebench blocks`): embeddings, each layer, pooling, per engine.

Each block is its own ONNX subgraph (models/onnx_graph.find_blocks), timed on the real outputs of the block
before it, computed by the same engine: no block is timed as a difference of two cumulative cuts.

Each engine runs in its own spawned process, as in the orchestrator: engines never share a thread pool or a
heap, and one that crashes costs its own column only.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enginebench.engines import engine_class, require_engine
from enginebench.measure.stats import Summary, summarize
from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.measuring_process import limit_threads
from enginebench.models.onnx_export import onnx_encoder, onnx_key
from enginebench.models.onnx_graph import Block, block_models
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch


@dataclass
class EngineBlocks:
    engine: str
    summaries: list[Summary] = field(default_factory=list)  # one per block, in ns
    whole: Summary | None = None  # the whole model as one graph, on the same inputs
    error: str | None = None  # why this engine has no figures


@dataclass
class Breakdown:
    blocks: list[Block]
    engines: list[EngineBlocks]
    batch_size: int
    seq_len: int


def _full_graph(model: ModelSpec) -> Path:
    from dataclasses import replace

    return onnx_encoder(replace(model, until=None))[0]


def block_files(model: ModelSpec) -> list[tuple[Block, Path]]:
    return block_models(_full_graph(model), onnx_key(model))


def time_blocks(engine: str, blocks: list[tuple[Block, Path]], whole: Path, batches: list[TokenBatch],
                rule: StoppingRule, threads: int, options: dict[str, str]) -> list[np.ndarray]:
    """In the engine's own process: load every block, chain them once per batch to get each block's real
    inputs, then time each block on those inputs, and the whole graph last. Returns samples in ns."""
    limit_threads(threads)
    cls = require_engine(engine)
    instance = cls()
    opts = cls.make_options(threads, options)
    runners = [instance.load_onnx_graph(path, opts) for _, path in blocks]
    feeds: list[list[dict]] = [[] for _ in blocks]
    for batch in batches:
        values = batch.as_dict()
        for k, (block, _) in enumerate(blocks):
            feeds[k].append({name: values[name] for name in block.inputs})
            values.update(zip(block.outputs, runners[k](feeds[k][-1])))
    samples = [measure_calls(run, block_feeds, rule) for run, block_feeds in zip(runners, feeds)]
    full = instance.load_onnx_graph(whole, opts)
    wanted = _graph_inputs(whole)
    whole_inputs = [{k: v for k, v in batch.as_dict().items() if k in wanted} for batch in batches]
    return samples + [measure_calls(full, whole_inputs, rule)]


def _graph_inputs(path: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}


def breakdown(model: ModelSpec, engines: list[str], batches: list[TokenBatch], rule: StoppingRule, threads: int,
              options: dict[str, dict[str, str]], timeout_s: float = 1800.0) -> Breakdown:
    """Each engine in its own process, abandoned (and killed) after `timeout_s` for its loads and timings."""
    blocks = block_files(model)
    results = []
    for engine in engines:
        cls = engine_class(engine)
        if not cls.cuts_graph:
            results.append(EngineBlocks(engine, error=f"{engine} does not load ONNX graphs, so it cannot time blocks"))
            continue
        pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        try:
            samples = pool.submit(time_blocks, engine, blocks, _full_graph(model), batches, rule, threads,
                                  options.get(engine, {})).result(timeout=timeout_s)
            results.append(EngineBlocks(engine, [summarize(s) for s in samples[:-1]], summarize(samples[-1])))
        except FuturesTimeout:
            for proc in list(getattr(pool, "_processes", {}).values()):  # a hung engine: end its process
                proc.kill()
            results.append(EngineBlocks(engine, error=f"timed out after {timeout_s:g} s (raise --timeout)"))
        except BrokenProcessPool:
            results.append(EngineBlocks(engine, error="its process died (crash or out of memory)"))
        except Exception as e:  # one engine's failure is reported in its column; the others still run
            results.append(EngineBlocks(engine, error=f"{type(e).__name__}: {e}"))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return Breakdown([b for b, _ in blocks], results, batches[0].size, batches[0].seq_len)
