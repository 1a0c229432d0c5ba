"""The Ray launcher (`--ray ADDRESS`, or `--ray local` for a Ray started in this process): the same Plan in and
the same emit(index, result) calls out as local.py, each job run on a node of a Ray cluster.

- A job (one engine x precision x threads: a model loaded once, its cells) is a Ray task that holds a whole
  node: every CPU and GPU the node offers, so one job runs on a node at a time and no two measurements share a
  machine. A node offering no CPU (a head started with `--num-cpus 0`) measures nothing.
- On the node the job runs as local.py runs it: a child process, --timeout, --load-timeout, --max-memory,
  --retries. Each outcome streams back the moment it is measured (a Ray generator task); the Result is built
  and emitted here, in the orchestrating process, with the node's machine_info() in details["node"] and the
  node of each repetition in its record (repetitions[].measurement.details.node).
- A job's later repetitions run on the node that ran its first, so a result's processes share a machine. When
  that node is lost and another machine finishes them, the result keeps one machine's processes (the one that
  measured most) and sets the others apart (details.set_apart): processes of two machines never make a figure.
- A lost node (machine, raylet or worker gone) costs its job's unfinished cells only: they go to another node,
  up to _NODE_LOSSES times per job, then are recorded as failed (kind "node"). An exception raised by the task
  itself fails the job's unfinished cells at once.
- The fidelity reference of each plan is computed on a node too, before that plan's jobs start.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from enginebench.engines import engine_class
from enginebench.errors import UsageError
from enginebench.execution.faults import Failure
from enginebench.execution.local import LocalLauncher
from enginebench.execution.messages import CellStarted, JobEnded, JobLost, NodeReferences, NodeStarted, Outcome
from enginebench.execution.records import CellHistory
from enginebench.measure.machine import machine_info
from enginebench.plan import Job, Plan
from enginebench.scenarios.base import Measurement
from enginebench.store.derive import measurement_record, repetition_record
from enginebench.store.model import Result

_POLL_S = 0.2
_NODE_LOSSES = 2  # a job whose node is lost this many times more fails its cells: they may be what kills nodes
_SUSPECT_S = 30.0  # a node that lost a job gets no other for this long, unless Ray drops it first
_NO_NODE_WAIT_S = 60.0  # with work left and no node to run it, how long to wait for one to join
_NOT_FORWARDED = ("ENGINEBENCH_CACHE",)  # a path on this machine; every other ENGINEBENCH_* variable goes to the nodes

_connected: str | None = None
_remote_fn = None


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray, which is not installed: pip install 'enginebench[ray]'") from None
    return ray


def connect(address: str) -> None:
    """Join the Ray cluster at `address` (HOST:PORT of its head, ray://HOST:PORT, auto) or start one in this
    process ("local"). A UsageError, before anything is measured, when Ray is missing or nothing answers."""
    global _connected
    ray = _ray()
    if ray.is_initialized():
        if _connected == address:
            return
        ray.shutdown()
    if address != "local":
        _check_reachable(address)
    env = {k: v for k, v in os.environ.items() if k.startswith("ENGINEBENCH_") and k not in _NOT_FORWARDED}
    options = dict(logging_level=logging.WARNING, log_to_driver=False,
                   runtime_env={"env_vars": env} if env else None)
    try:
        if address == "local":
            ray.init(include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, its own errors
        raise UsageError(f"--ray {address}: could not join the Ray cluster there ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); check the address `ray start --head` "
                         "printed, or use --ray local") from None
    _connected = address
    if not measuring_nodes():
        raise UsageError(f"--ray {address}: no node of this Ray cluster offers a CPU to measure on; start one "
                         "with `ray start --address ...` (a head started with --num-cpus 0 only orchestrates)")


def _check_reachable(address: str) -> None:
    """Fail fast: ray.init waits minutes for a head that is not there."""
    target = address.split("://", 1)[-1]
    if target == "auto":
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address!r} is not an address: give HOST:PORT of the cluster's head (as `ray start "
                         "--head` prints it), ray://HOST:PORT, or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(f"--ray {address}: nothing answers there ({e.strerror or e}); start the cluster with "
                         "`ray start --head` and give the address it prints, or use --ray local") from None


@dataclass(frozen=True)
class Node:
    """A node a job can hold whole."""

    node_id: str
    hostname: str
    cpus: float
    gpus: float


def measuring_nodes() -> dict[str, Node]:
    """The cluster's live nodes that offer at least one CPU, by Ray node id."""
    nodes = {}
    for n in _ray().nodes():
        resources = n.get("Resources") or {}
        if n.get("Alive") and resources.get("CPU", 0) >= 1:
            nodes[n["NodeID"]] = Node(n["NodeID"], n.get("NodeManagerHostname", "?"), resources["CPU"],
                                      resources.get("GPU", 0))
    return nodes


# -- on the node ----------------------------------------------------------------------------------
def node_info() -> dict:
    """machine_info() of the node this runs on, with its Ray node id and address."""
    import ray

    return {**machine_info(), "ray_node_id": ray.get_runtime_context().get_node_id(),
            "ray_node_ip": ray.util.get_node_ip_address()}


def run_on_node(plan: Plan, job: Job | None):
    """The Ray task (a generator of messages.py's records): NodeStarted first; then, for a job, CellStarted and
    Outcome (a Measurement or a Failure, with the earlier failed attempts) as local.py's launcher measures each
    cell; for job None, NodeReferences (the reference outputs, or why there are none)."""
    yield NodeStarted(node_info(), engine_class(job.engine).version() if job else None)
    local = LocalLauncher(plan)
    if job is None:
        references = local._references()
        yield NodeReferences(references, local.reference_error)
        return
    messages: queue.Queue = queue.Queue()
    local.on_start = lambda cell: messages.put(CellStarted(cell))

    def work():  # in a thread, so that this generator can yield while the orchestrator's callbacks run
        try:
            local._run_with_retries(job, lambda index, outcome, failures: messages.put(
                Outcome(index, outcome, failures)))
        except Exception as e:
            messages.put(e)
        finally:
            messages.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (msg := messages.get()) is not None:
        if isinstance(msg, Exception):
            raise msg
        yield msg


def _remote():
    global _remote_fn
    if _remote_fn is None:
        _remote_fn = _ray().remote(max_retries=0)(run_on_node)  # a lost job is given to another node here
    return _remote_fn


# -- here: the launcher and the dispatcher ---------------------------------------------------------
class RayLauncher(LocalLauncher):
    """The local orchestrator's plan, history and results, with its jobs run on a Ray cluster."""

    def __init__(self, plan: Plan, address: str = "local", **kwargs):
        super().__init__(plan, **kwargs)
        self.address = address
        self.where = f"ray {address}"
        self.cell_nodes: dict[int, dict] = {}  # index -> machine of the node that measured it last
        self.cell_versions: dict[int, str | None] = {}  # index -> the engine's version on that node
        self.references = None
        self.references_pending = False
        self.record = None

    def run(self, emit: Callable[[int, Result], None]) -> None:
        run_together([(self, emit)])

    def begin(self, emit: Callable[[int, Result], None]) -> list[_Work]:
        """Deliver what needs no node (skips) and give the work left: the reference first, then the jobs."""
        deliver = self.deliverer(emit)
        self.deliver_skips(deliver)
        schedule = self.schedule()
        if not any(schedule):
            return []
        self.record = self.recorder(deliver)
        self.references_pending = True
        return [_Work(self, None)] + [_Work(self, job, repetition)
                                      for repetition, jobs in enumerate(schedule) for job in jobs]

    def _result(self, index: int, history) -> Result:
        kept, apart = one_machine(history)
        result = super()._result(index, kept)
        if apart:
            result.details["set_apart"] = apart
            hosts = ", ".join(sorted({rep["measurement"]["details"]["node"]["hostname"] for rep in apart}))
            result.details["notes"] = result.details.get("notes", []) + [
                f"{len(apart)} repetition{'s' * (len(apart) > 1)} measured on {hosts} after a node was lost "
                "are kept apart (details.set_apart), not pooled: processes of two machines never make one figure"]
        if index in self.cell_nodes:
            result.details["node"] = self.cell_nodes[index]
            if self.cell_versions.get(index):
                result.engine_version = self.cell_versions[index]
        return result


def _host(m: Measurement) -> str:
    """The machine that measured `m`: its node's, or this one for a repetition measured here (a sweep begun
    locally and finished on Ray)."""
    return (m.details.get("node") or {}).get("hostname") or socket.gethostname()


def one_machine(history: CellHistory) -> tuple[CellHistory, list[dict]]:
    """The cell's history with the repetitions of one machine only (the one that measured most, and of those
    the one that measured first), and the records of the others (a lost node's job finished elsewhere)."""
    hosts = [_host(m) for _, m in history.measured]
    if len(set(hosts)) < 2:
        return history, []
    first = {h: k for k, h in reversed(list(enumerate(hosts)))}
    chosen = max(first, key=lambda h: (hosts.count(h), -first[h]))
    kept = [(r, m) for r, m in history.measured if _host(m) == chosen]
    apart = [{**repetition_record(r, m), "measurement": measurement_record(m)}
             for r, m in history.measured if _host(m) != chosen]
    return CellHistory(kept, dict(history.failed), list(history.attempts)), apart


@dataclass
class _Work:
    """A job (or, with job None, a plan's fidelity reference) waiting for a node or running on one."""

    launcher: RayLauncher
    job: Job | None
    repetition: int = 0
    losses: int = 0
    node: Node | None = None
    info: dict = field(default_factory=dict)  # the node's node_info(), once it said
    version: str | None = None
    task: object = None  # its ObjectRefGenerator

    @property
    def pin(self) -> tuple | None:
        """What keeps a job's repetitions on one node."""
        if self.job is None:
            return None
        return id(self.launcher), self.job.engine, self.job.precision, self.job.threads, self.job.reference_only

    def ready(self) -> bool:
        return self.job is None or not self.launcher.references_pending

    def where(self) -> str:
        host = self.info.get("hostname") or (self.node.hostname if self.node else "?")
        return f"node {host} ({self.node.node_id[:8] if self.node else '?'})"


def run_together(launchers: list[tuple[RayLauncher, Callable[[int, Result], None]]]) -> None:
    """Run several plans' jobs on the cluster at once (a sweep's parts), each result through its plan's emit."""
    connect(launchers[0][0].address)
    _Dispatcher(launchers).run()


class _Dispatcher:
    def __init__(self, launchers):
        self.waiting: list[_Work] = []
        for launcher, emit in launchers:
            self.waiting += launcher.begin(emit)
        self.plans = {id(launcher): None for launcher, _ in launchers}  # launcher -> its plan in Ray's store
        self.running: dict[str, _Work] = {}  # node id -> the work holding it
        self.pins: dict[tuple, str] = {}  # a job's pin -> the node its repetitions run on
        self.inbox: queue.Queue = queue.Queue()
        self.nodes: dict[str, Node] = {}
        self.looked = 0.0
        self.suspect: dict[str, float] = {}  # node id -> when a job was lost on it
        self.no_node_since: float | None = None

    def run(self) -> None:
        try:
            while self.waiting or self.running:
                self._dispatch()
                try:
                    work, msg = self.inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                self._handle(work, msg)
        except BaseException:  # Ctrl-C or a failure here: end the jobs on the nodes (their children die with them)
            for work in self.running.values():
                try:
                    _ray().cancel(work.task, force=True)
                except Exception:
                    pass
            raise

    def _dispatch(self) -> None:
        if time.monotonic() - self.looked > 1.0 or not self.nodes:
            self.nodes = measuring_nodes()
            self.looked = time.monotonic()
            self.pins = {pin: node for pin, node in self.pins.items() if node in self.nodes}
        now = time.monotonic()
        self.suspect = {n: since for n, since in self.suspect.items() if now - since < _SUSPECT_S and n in self.nodes}
        for node in self.nodes.values():
            if node.node_id in self.running or node.node_id in self.suspect:
                continue
            work = next((w for w in self.waiting if w.ready() and self.pins.get(w.pin, node.node_id) == node.node_id),
                        None)
            if work is not None:
                self.waiting.remove(work)
                self._start(work, node)
        self._starve_check()

    def _starve_check(self) -> None:
        """Work left, nothing running, no node to run it: wait a while for one to join, then fail the cells."""
        if self.running or not self.waiting or set(self.nodes) - set(self.suspect):
            self.no_node_since = None
            return
        self.no_node_since = self.no_node_since or time.monotonic()
        if time.monotonic() - self.no_node_since < _NO_NODE_WAIT_S:
            return
        for work in list(self.waiting):
            self.waiting.remove(work)
            self._fail(work, Failure(f"no node of the Ray cluster left to run it (waited {_NO_NODE_WAIT_S:g} s)",
                                     "node"))

    def _start(self, work: _Work, node: Node) -> None:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        key = id(work.launcher)
        if self.plans[key] is None:
            self.plans[key] = ray.put(work.launcher.plan)
        if work.job is not None:
            work.job.references = work.launcher.references
            self.pins.setdefault(work.pin, node.node_id)
        work.node, work.info = node, {}
        work.task = _remote().options(
            num_cpus=node.cpus, num_gpus=node.gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        ).remote(self.plans[key], work.job)
        self.running[node.node_id] = work
        threading.Thread(target=self._follow, args=(work,), daemon=True).start()

    def _follow(self, work: _Work) -> None:
        """Pass a task's messages to the dispatcher's inbox, then ("end",) or ("lost", the error)."""
        ray = _ray()
        try:
            for ref in work.task:
                self.inbox.put((work, ray.get(ref)))
            self.inbox.put((work, JobEnded()))
        except Exception as e:
            self.inbox.put((work, JobLost(e)))

    def _handle(self, work: _Work, msg) -> None:
        launcher = work.launcher
        match msg:
            case NodeStarted(info, version):
                work.info, work.version = info, version
            case CellStarted(cell):
                launcher.on_start(cell)
            case Outcome(index, outcome, failures):
                work.job.cells = [(i, c) for i, c in work.job.cells if i != index]
                if isinstance(outcome, Measurement):
                    outcome.details["node"] = {"hostname": work.info.get("hostname"),
                                               "ray_node_id": work.info.get("ray_node_id")}
                launcher.cell_nodes[index] = work.info
                launcher.cell_versions[index] = work.version
                launcher.record(work.repetition, index, outcome, failures)
            case NodeReferences(references, error):
                self._references_known(launcher, references, error)
            case JobEnded():
                del self.running[work.node.node_id]
            case JobLost(error):
                del self.running[work.node.node_id]
                self._lost(work, error)

    @staticmethod
    def _references_known(launcher: RayLauncher, references, error: str | None) -> None:
        launcher.references, launcher.reference_error = references, error
        launcher.references_pending = False

    def _lost(self, work: _Work, error: Exception) -> None:
        ray = _ray()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, ray.exceptions.RayTaskError):  # the task itself raised: running it again would too
            self._fail(work, Failure(f"the job failed on {work.where()}: {reason}", "error"))
            return
        self.suspect[work.node.node_id] = time.monotonic()  # Ray may not know yet that it is gone
        work.losses += 1
        if work.losses > _NODE_LOSSES:
            self._fail(work, Failure(f"{work.where()} was lost while running it, {work.losses} times "
                                     f"(last: {reason})", "node"))
            return
        if work.pin is not None and self.pins.get(work.pin) == work.node.node_id:
            del self.pins[work.pin]  # its node may be gone: the remaining repetitions may go elsewhere
        self.waiting.insert(0, work)

    def _fail(self, work: _Work, failure: Failure) -> None:
        if work.job is None:
            self._references_known(work.launcher, None, f"no fidelity reference: {failure.reason}")
            return
        for index, cell in work.job.cells:
            work.launcher.on_start(cell)
            if work.info:
                work.launcher.cell_nodes[index] = work.info
            work.launcher.record(work.repetition, index, failure, [])
        work.job.cells = []


__all__ = ["RayLauncher", "connect", "run_together", "run_on_node", "node_info", "measuring_nodes", "Node"]
