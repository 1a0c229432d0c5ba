"""The LoadGen scenarios as registered scenarios: server (encoders and decoders) and offline. Their machinery
is in server.py, offline.py and decoder_server.py, over the kit in loadgen_sut.py."""

from __future__ import annotations

from enginebench.display import significant as _num
from enginebench.plan import Cell
from enginebench.scenarios.base import (DECODER_REFERENCE, CellRun, Grid, Measurement, Scenario, worker_args,
                                        workload_args)
from enginebench.scenarios.decoder_server import run_decoder_server
from enginebench.scenarios.offline import run_offline
from enginebench.scenarios.server import run_server
from enginebench.scenarios.throughput import worker_cells


class Server(Scenario):
    """Queries arrive as a Poisson process (LoadGen's Server) into the workers' queue: VALID or INVALID
    against the p99 target from arrival. Decoders' requests are judged on their TTFT and TPOT
    (scenarios/decoder_server.py)."""

    name = "server"
    model_kinds = ("encoder", "decoder")
    needs = "mlperf_loadgen"
    install = "pip install 'enginebench[loadgen]'"
    workers_load_sessions = True
    shows_workers = True
    takes_serving = True
    judged_by_spread = False  # latencies from arrival vary by design: the SLO verdict judges a server
    unranked_because = "server scenario (judged VALID/INVALID against its SLO, not ranked)"  # items/s = offered

    def cells(self, grid: Grid, settings=None) -> list[Cell]:
        return worker_cells(self.name, grid, [grid.serving.max_batch], serving=grid.serving)

    def measure(self, run: CellRun) -> Measurement:
        if run.model_kind == "decoder":  # its first worker checks the fidelity before serving
            run.loading()  # each worker loads its own session
            reference = (run.references or {}).get(DECODER_REFERENCE)
            return run_decoder_server(run.factory, run.workload, run.cell, run.rule, reference, run.precision,
                                      on_loaded=run.loaded)
        return run.in_worker_processes(lambda want, loaded: run_server(
            run.factory, run.workload, run.cell, run.rule, want, on_loaded=loaded))

    def table(self, result) -> str:
        return "decoder serving" if (result.serving or {}).get("kind") == "decoder" else "encoders"

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        s = (result.serving or {}).get("settings") or {}
        if (result.serving or {}).get("kind") == "decoder":  # its workload is the request shape, pp64+tg16
            prompt, _, gen = result.workload.partition("+")
            out = ["--prompt-len", prompt[2:], "--gen-len", gen[2:]]
        else:
            out = workload_args(result, corpus)
        out += worker_args(result) + ["--max-batch", str(s.get("max_batch", 1))]
        if s.get("max_wait_ms"):
            out += ["--max-wait", f"{s['max_wait_ms']:g}"]
        for key, flag in (("slo_p99_ms", "--slo-p99"), ("slo_ttft_ms", "--slo-ttft"), ("slo_tpot_ms", "--slo-tpot")):
            if s.get(key) is not None:
                out += [flag, f"{s[key]:g}"]
        if s.get("find_max_qps"):
            out.append("--find-max-qps")
        if s.get("qps"):
            out += ["--qps", f"{s['qps']:g}"]
        return out

    def note(self, result) -> str:
        s = result.serving or {}
        queue = s.get("queue") or {}
        return (f"server: median/p99 from arrival, queueing included; items/s = achieved {_num(s['achieved_qps'])} "
                f"q/s of {_num(s['scheduled_qps'])} scheduled; at most {queue.get('max', '?')} queries in the "
                f"system{_batched(s)}; LoadGen {_said(s)}")


class Offline(Server):
    """Every query available at once (LoadGen's Offline); the engine batches up to --max-batch per call."""

    name = "offline"
    model_kinds = ("encoder",)
    judged_by_spread = True

    def measure(self, run: CellRun) -> Measurement:
        return run.in_worker_processes(lambda want, loaded: run_offline(
            run.factory, run.workload, run.cell, run.rule, want, on_loaded=loaded))

    unranked_because = None  # its items/s is what it achieved with every query available

    def table(self, result) -> str:
        return "encoders"

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        s = (result.serving or {}).get("settings") or {}
        return workload_args(result, corpus) + worker_args(result) + ["--max-batch", str(s.get("max_batch", 1))]

    def note(self, result) -> str:
        s = result.serving or {}
        return f"offline: {_num(s['samples_per_s'])} samples/s over the run{_batched(s)}; LoadGen {_said(s)}"


def _said(serving: dict) -> str:
    return (serving.get("loadgen") or {}).get("validity", "no result")


def _batched(serving: dict) -> str:
    batches = serving.get("batching") or {}
    return f"; {batches['mean_size']:.2g} queries per call" if batches.get("mean_size", 1) > 1 else ""



__all__ = ["Server", "Offline"]
