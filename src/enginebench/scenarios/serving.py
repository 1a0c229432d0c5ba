"""The LoadGen scenarios as registered scenarios: server (encoders and decoders) and offline. Their machinery
is in server.py, offline.py and decoder_server.py, over the kit in loadgen_sut.py."""

from __future__ import annotations

from enginebench.plan import Cell
from enginebench.scenarios.base import DECODER_REFERENCE, CellRun, Grid, Measurement, Scenario
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


class Offline(Server):
    """Every query available at once (LoadGen's Offline); the engine batches up to --max-batch per call."""

    name = "offline"
    model_kinds = ("encoder",)
    judged_by_spread = True

    def measure(self, run: CellRun) -> Measurement:
        return run.in_worker_processes(lambda want, loaded: run_offline(
            run.factory, run.workload, run.cell, run.rule, want, on_loaded=loaded))

    def table(self, result) -> str:
        return "encoders"



__all__ = ["Server", "Offline"]
