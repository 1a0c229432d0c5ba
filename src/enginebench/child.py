"""The measuring process. It loads one engine, runs its cells, and sends raw measurements to the parent.

Kept light at import time: engine libraries are imported only after thread limits are set.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass

from enginebench.measure import cpu_features
from enginebench.plan import SERVING_SCENARIOS, Cell, Job

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTEROP_THREADS")


def limit_threads(threads: int) -> None:
    """Set what the libraries read when they load: their thread pools, and the kernel caps of a narrowed CPU
    (ENGINEBENCH_CPU_FEATURES). Call before any engine library is imported."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    cpu_features.apply_kernel_caps()


# Libraries that log, in every measuring process, what does not concern a CPU benchmark: torchao (imported by
# transformers whenever it is installed) about its CUDA-only extensions, torch's pytree about deprecations.
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_library_logs() -> None:
    import logging

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def die_with_parent() -> None:
    """Be killed when the process that started this one dies (Linux's PR_SET_PDEATHSIG): an orchestrator
    ended by `kill -9` or a closed terminal leaves no child measuring on, unseen, beside the resumed sweep."""
    import ctypes
    import multiprocessing
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own clean-up is all there is
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the line above
        os._exit(1)


@dataclass(frozen=True)
class SessionFactory:
    """Picklable recipe for a session, so parallel workers each load their own."""

    engine: str
    model: object  # ModelSpec
    precision: str
    threads: int
    options: dict
    measured: tuple | None = None  # the job's WorkloadData: int8-static calibrates on inputs apart from these

    def __call__(self):
        from enginebench.engines import engine_class

        die_with_parent()  # a throughput worker: its parent is the child
        quiet_library_logs()
        limit_threads(self.threads)
        cls = engine_class(self.engine)
        options = cls.make_options(self.threads, self.options)
        if self.precision == "int8-static":
            return cls().load(self.model, self.precision, options, measured=self.measured)
        return cls().load(self.model, self.precision, options)


def child_main(job: Job, out) -> None:
    """Entry point of the child process. Messages: start, loading, loaded, result, error, reference, done."""
    try:
        os.setpgrp()  # the parent can kill this process and its workers as one group
    except OSError:
        pass
    die_with_parent()
    quiet_library_logs()
    _measure(job, out)
    # Flush every message, then leave without interpreter teardown: some engines' destructors abort at exit
    # (seen: "terminate called ... Resource deadlock avoided"), which must not cost results already sent.
    out.close()
    out.join_thread()
    os._exit(0)


def _measure(job: Job, out) -> None:
    limit_threads(job.threads)
    factory = SessionFactory(job.engine, job.model, job.precision, job.threads, job.options,
                             tuple(job.workloads.values()))
    if job.reference_only:
        _send_references(factory, job, out)
        out.put(("done",))
        return
    from enginebench.measure.fidelity import compare_embeddings
    from enginebench.measure.memory import peak_rss_mb
    from enginebench.scenarios.latency import run_latency
    from enginebench.scenarios.throughput import run_throughput

    session = None
    load_s = 0.0
    load_error = None
    load_peak = None
    fidelity_by_workload: dict[str, dict | None] = {}

    def fidelity(workload: str, outputs) -> dict | None:
        if job.references is None or workload not in job.references:
            return None
        return compare_embeddings(outputs, job.references[workload], job.precision)

    for index, cell in job.cells:
        out.put(("start", index))
        try:
            workload = job.workloads[cell.workload]
            if cell.scenario == "server" and job.model.kind == "decoder":
                out.put(("loading", index))  # each worker loads its own session
                m = _run_decoder_server_cell(factory, job, cell, workload, lambda: out.put(("loaded", index)))
                out.put(("result", index, m))
                continue
            if cell.scenario in ("latency", "generate"):
                if session is None and load_error is None:
                    out.put(("loading", index))  # the parent applies --load-timeout until "loaded"
                    try:
                        t0 = time.perf_counter()
                        session = factory()
                        load_s = time.perf_counter() - t0
                        load_peak = peak_rss_mb()
                    except Exception as e:
                        load_error = f"load failed: {type(e).__name__}: {e}"
                    out.put(("loaded", index))
                if load_error:
                    out.put(("error", index, load_error, ""))
                    continue
                if cell.scenario == "generate":
                    m = _run_generate_cell(session, job, cell, workload, load_s, fidelity_by_workload)
                    m.details["load_peak_rss_mb"] = round(load_peak, 1)
                    out.put(("result", index, m))
                    continue
                if cell.workload not in fidelity_by_workload:
                    outputs = session.run(session.prepare(workload.fidelity_inputs()))
                    fidelity_by_workload[cell.workload] = fidelity(cell.workload, outputs)
                m = run_latency(session, workload, cell.batch_size, job.rule, load_s)
                m.details["load_peak_rss_mb"] = round(load_peak, 1)
            else:
                want = None if cell.workload in fidelity_by_workload else workload.fidelity_inputs()
                out.put(("loading", index))  # each worker loads its own session
                loaded = lambda: out.put(("loaded", index))  # noqa: E731
                if cell.scenario in SERVING_SCENARIOS:
                    m, outputs = _run_serving_cell(factory, workload, cell, job.rule, want, loaded)
                else:
                    m, outputs = run_throughput(factory, workload, cell.batch_size, cell.workers, job.rule, want,
                                                on_loaded=loaded)
                if want is not None:
                    fidelity_by_workload[cell.workload] = fidelity(cell.workload, outputs)
            m.fidelity = fidelity_by_workload.get(cell.workload)
            out.put(("result", index, m))
        except Exception as e:  # one cell's failure is recorded; the next cell still runs
            out.put(("error", index, f"{type(e).__name__}: {e}", traceback.format_exc()))
    out.put(("done",))


def _run_serving_cell(factory, workload, cell: Cell, rule, fidelity_inputs, on_loaded):
    """server or offline: LoadGen drives the workers (scenarios/loadgen_sut.py)."""
    if cell.scenario == "server":
        from enginebench.scenarios.server import run_server as run
    else:
        from enginebench.scenarios.offline import run_offline as run
    return run(factory, workload, cell, rule, fidelity_inputs, on_loaded=on_loaded)


def _run_decoder_server_cell(factory, job: Job, cell: Cell, prompts, on_loaded):
    """A decoder under LoadGen's server scenario (scenarios/decoder_server.py); its first worker checks the
    engine's fidelity against the reference before serving."""
    from enginebench.scenarios.decoder_server import run_decoder_server

    reference = (job.references or {}).get(DECODER_REFERENCE)
    return run_decoder_server(factory, prompts, cell, job.rule, reference, job.precision, on_loaded=on_loaded)


DECODER_REFERENCE = "decoder"  # key of the decoder reference in Job.references (one for every test)
GREEDY_PROMPTS = 2  # prompts the reference generates from for greedy agreement


def _run_generate_cell(session, job: Job, cell: Cell, prompts, load_s: float, fidelity_cache: dict):
    """One decoder cell; the fidelity against the reference is computed once per job, before timing."""
    from enginebench.engines.base import DecoderSession
    from enginebench.measure.llm_fidelity import compare_decoder
    from enginebench.scenarios.generate import run_generate

    if not isinstance(session, DecoderSession):
        raise TypeError(f"{job.engine} does not run decoder (LLM) models: its load gave a {type(session).__name__}")
    if DECODER_REFERENCE not in fidelity_cache:
        reference = (job.references or {}).get(DECODER_REFERENCE)
        try:
            fidelity_cache[DECODER_REFERENCE] = compare_decoder(session, reference, job.precision) if reference else None
        except NotImplementedError as e:
            fidelity_cache[DECODER_REFERENCE] = {"metric": "top1_agreement", "value": None, "ok": False,
                                                 "threshold": None, "error": str(e)}
    m = run_generate(session, prompts, cell.batch_size, job.rule, load_s)
    m.fidelity = fidelity_cache[DECODER_REFERENCE]
    return m


def _decoder_references(session, job: Job) -> dict:
    from enginebench.measure.llm_fidelity import reference_data

    sets = list(job.workloads.values())
    tg = next((p for p in sets if p.test.kind in ("tg", "pg")), None)
    source = tg or sets[0]
    new_tokens = tg.test.gen_len if tg else 16
    prompt_len = min(source.test.prompt_len, max(1, job.model.max_positions - new_tokens))
    greedy_prompt = source.prompts[:GREEDY_PROMPTS, :prompt_len]
    return {DECODER_REFERENCE: reference_data(session, source.fidelity_ids, greedy_prompt, new_tokens)}


def _send_references(factory: SessionFactory, job: Job, out) -> None:
    try:
        session = factory()
        if job.model.kind == "decoder":
            out.put(("reference", _decoder_references(session, job)))
            return
        refs = {name: session.run(session.prepare(w.fidelity_inputs())) for name, w in job.workloads.items()}
        out.put(("reference", refs))
    except Exception as e:
        out.put(("error", -1, f"reference failed: {type(e).__name__}: {e}", traceback.format_exc()))


__all__ = ["child_main", "SessionFactory", "Cell", "limit_threads"]
