"""Timing operators: one spawned process per engine, as breakdown.py does for blocks.

In the engine's process, for each case (operator × shape × precision): inputs made and converted, the graph
built and compiled, one call checked against numpy float64 (int8: numpy's exact int64 matmul), then the call
timed under the stopping rule.
Engines never share a thread pool or a heap; one that crashes or hangs costs its own rows only.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from enginebench.engines.kernels import Kernels, Unsupported
from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.measuring_process import die_with_parent, limit_threads
from enginebench.scenarios.ops.definitions import OPERATORS, check_output, format_shape, make_inputs
from enginebench.scenarios.ops.engines import kernels_class, version


@dataclass(frozen=True)
class OpCase:
    op: str
    shape: tuple[int, ...]
    precision: str
    label: str = ""  # where the shape comes from, e.g. "minilm b32 FFN up"; "" for a --shape override
    batch: int = 1  # the model's sequences in a call at this shape
    tokens: int = 1  # tokens per sequence in the model's phase (128 prefill, 1 decode)

    @property
    def workload(self) -> str:
        """How a stored result names the case: the shape, then its label."""
        return f"{format_shape(self.shape)} {self.label}".strip()


@dataclass
class OpMeasurement:
    """One case on one engine: samples in ns, or why there are none."""

    case: OpCase
    engine: str
    samples_ns: list[int] | None = None
    max_rel_error: float | None = None
    io_itemsize: int | None = None  # bytes per element the engine's call read and wrote
    note: str = ""
    unsupported: str | None = None  # the engine cannot express it: why
    error: str | None = None  # it failed: why
    threads: dict | None = None  # how the engine's threads were set, as the engine reports it
    engine_version: str | None = None
    prepare_s: float | None = None  # converting the inputs, building and compiling the graph
    wall_s: float | None = None  # warm-up and timed calls together
    peak_rss_mb: float | None = None  # the engine's process so far (earlier cases included)


def measure_engine(engine: str, cases: list[OpCase], rule: StoppingRule, threads: int) -> list[OpMeasurement]:
    """In the engine's own process: every case in turn; one case's failure is its row's, not the engine's."""
    limit_threads(threads)
    die_with_parent()
    kernels = kernels_class(engine)()
    kernels.setup(threads)
    measured = [measure_case(engine, kernels, case, rule) for case in cases]
    engine_version = version(engine)
    for m in measured:
        m.engine_version = engine_version
    return measured


def measure_case(engine: str, kernels: Kernels, case: OpCase, rule: StoppingRule) -> OpMeasurement:
    op = OPERATORS[case.op]
    result = OpMeasurement(case, engine)
    try:
        if op.why_not(case.precision):  # e.g. softmax in int8: the same reason on every engine
            raise Unsupported(op.why_not(case.precision))
        inputs = make_inputs(op, case.shape, case.precision)
        started = time.perf_counter()
        prepared = kernels.prepare(op.name, inputs, case.precision)
        result.prepare_s = time.perf_counter() - started
        result.note, result.io_itemsize = prepared.note, prepared.io_itemsize
        result.max_rel_error = check_output(op, inputs, prepared.fetch(prepared.run(prepared.arg)))
        started = time.perf_counter()
        result.samples_ns = measure_calls(prepared.run, [prepared.arg], rule).tolist()
        result.wall_s = time.perf_counter() - started
        result.peak_rss_mb = peak_rss_mb()
    except Unsupported as e:
        result.unsupported = str(e)
    except Exception as e:  # noqa: BLE001 - reported in the row
        result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    result.threads = dict(kernels.threads_info)
    return result


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_ops(engines: list[str], cases: list[OpCase], rule: StoppingRule, threads: int,
            timeout_s: float = 600.0, on_engine=None) -> list[OpMeasurement]:
    """Every case on every engine, each engine in its own spawned process, ended after `timeout_s`.
    `on_engine(measurements)` receives each engine's rows as soon as its process is done."""
    results: list[OpMeasurement] = []
    for engine in engines:
        done = len(results)
        pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        failure = None
        try:
            results += pool.submit(measure_engine, engine, cases, rule, threads).result(timeout=timeout_s)
        except FuturesTimeout:
            for proc in list(getattr(pool, "_processes", {}).values()):  # a hung engine: end its process
                proc.kill()
            failure = f"timed out after {timeout_s:g} s (raise --timeout)"
        except BrokenProcessPool:
            failure = "its process died (crash or out of memory)"
        except Exception as e:  # noqa: BLE001 - one engine's failure is its rows'
            failure = f"{type(e).__name__}: {e}"
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if failure:
            results += [OpMeasurement(case, engine, error=failure) for case in cases]
        if on_engine:
            on_engine(results[done:])
    return results


__all__ = ["OpCase", "OpMeasurement", "measure_engine", "measure_case", "run_ops"]
