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
- `--client-nodes K` (a run against --endpoint): the client load of each cell that can be shared out (a
  concurrency cell of at least K clients: Scenario.spread_clients) is spread over K nodes at once, each running
  its share of the clients. The K parts of such a job start together on K free nodes; at each cell's start
  line every part waits for the others (a Rendezvous actor), all start at the same epoch second, and the
  orchestrator merges their records into one Measurement (scenarios/requests.py merge_client_parts), whose
  result lists the nodes (details.client_nodes) and says so in a note. Its other cells run as any job.
  A part lost or failed fails the cell (no part is measured again elsewhere: the load would no longer be one).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from enginebench.config import positive_int
from enginebench.engines import engine_class
from enginebench.errors import UsageError
from enginebench.execution.faults import Failure
from enginebench.execution.local import LocalLauncher
from enginebench.execution.messages import CellStarted, JobEnded, JobLost, NodeReferences, NodeStarted, Outcome
from enginebench.execution.records import CellHistory
from enginebench.measure.machine import machine_info
from enginebench.plan import Job, Plan
from enginebench.scenarios.registry import scenario_class
from enginebench.scenarios.requests import merge_client_parts
from enginebench.scenarios.base import Measurement
from enginebench.store.derive import measurement_record, repetition_record
from enginebench.store.model import Result

_POLL_S = 0.2
_NODE_LOSSES = 2  # a job whose node is lost this many times more fails its cells: they may be what kills nodes
_SUSPECT_S = 30.0  # a node that lost a job gets no other for this long, unless Ray drops it first
_NO_NODE_WAIT_S = 60.0  # with work left and no node to run it, how long to wait for one to join
_NOT_FORWARDED = ("ENGINEBENCH_CACHE",)  # a path on this machine; every other ENGINEBENCH_* variable goes to the nodes

_RENDEZVOUS_LEAD_S = 0.5  # from the last client node's arrival at a start line to the start: the word's way there

_connected: str | None = None
_remote_fn = None
_rendezvous_cls = None


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray, which is not installed: pip install 'enginebench[ray]'") from None
    return ray


def connect(address: str, client_nodes: int = 1) -> None:
    """Join the Ray cluster at `address` (HOST:PORT of its head, ray://HOST:PORT, auto) or start one in this
    process ("local"). A UsageError, before anything is measured, when Ray is missing, nothing answers, or the
    cluster has fewer nodes to measure on than `client_nodes` (--client-nodes)."""
    global _connected
    ray = _ray()
    if not (ray.is_initialized() and _connected == address):
        _join(ray, address)
        _connected = address
    have = len(measuring_nodes())
    if not have:
        raise UsageError(f"--ray {address}: no node of this Ray cluster offers a CPU to measure on; start one "
                         "with `ray start --address ...` (a head started with --num-cpus 0 only orchestrates)")
    if have < client_nodes:
        raise UsageError(f"--client-nodes {client_nodes}: the Ray cluster at {address} has {have} node(s) to "
                         "measure on; start more with `ray start --address ...`, or give fewer")


def _join(ray, address: str) -> None:
    if ray.is_initialized():
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


def check_client_nodes(plans: list, ray: str | None, given) -> int:
    """--client-nodes, checked against the plans (a run's, or a sweep's parts'): a run against a server on a Ray
    cluster, with a cell of at least that many clients to share out; 1 when not given."""
    if given is None:
        return 1
    n = positive_int("--client-nodes", given)
    cells = [c for plan in plans for c in plan.cells]
    if not ray:
        raise UsageError("--client-nodes shares the clients out over the nodes of a Ray cluster: give --ray ADDRESS")
    if not any(engine_class(c.engine).remote for c in cells):
        raise UsageError("--client-nodes shares out the clients of a run against a server: give --endpoint URL")
    if n > 1 and not any(scenario_class(c.scenario).spread_clients(c) >= n for c in cells):
        raise UsageError(f"--client-nodes {n}: no cell has {n} clients or more to share out; give --scenario "
                         f"concurrency --concurrency N with N >= {n}")
    return n


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


class Rendezvous:
    """The start line of a job's client nodes (a Ray actor, async: every part waits in it at once): arrive(index)
    returns, once all `parts` have arrived at cell `index`, the epoch second they all start at; None when
    `timeout_s` passed first, or the cell (abandon(index): a part failed it) or the whole job (abandon(): a part
    was lost) was given up."""

    def __init__(self, parts: int):
        import asyncio

        self.parts, self.arrived, self.starts, self.broken = parts, {}, {}, asyncio.Event()
        self.events: dict = {}

    async def arrive(self, index: int, timeout_s: float) -> float | None:
        import asyncio

        event = self.events.setdefault(index, asyncio.Event())
        self.arrived[index] = self.arrived.get(index, 0) + 1
        if self.arrived[index] == self.parts:
            self.starts[index] = time.time() + _RENDEZVOUS_LEAD_S
            event.set()
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.broken.wait())]
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return self.starts.get(index) if event.is_set() and not self.broken.is_set() else None

    def abandon(self, index: int | None = None) -> None:
        import asyncio

        if index is None:
            self.broken.set()
            return
        self.starts[index] = None
        self.events.setdefault(index, asyncio.Event()).set()


def _rendezvous():
    global _rendezvous_cls
    if _rendezvous_cls is None:
        _rendezvous_cls = _ray().remote(num_cpus=0)(Rendezvous)  # takes no CPU a measuring job needs
    return _rendezvous_cls


def run_on_node(plan: Plan, job: Job | None, rendezvous=None):
    """The Ray task (a generator of messages.py's records): NodeStarted first; then, for a job, CellStarted and
    Outcome (a Measurement or a Failure, with the earlier failed attempts) as local.py's launcher measures each
    cell; for job None, NodeReferences (the reference outputs, or why there are none). `rendezvous`: the
    start line this job's part shares with the other client nodes (--client-nodes)."""
    yield NodeStarted(node_info(), engine_class(job.engine).version() if job else None)
    local = LocalLauncher(plan)
    if rendezvous is not None:
        import ray

        local.start_line = lambda job, index: ray.get(rendezvous.arrive.remote(index, plan.timeout_s / 2))
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

    reuses_fidelity = False  # its repetitions may run at once: each measures its cells' fidelity

    def __init__(self, plan: Plan, address: str = "local", client_nodes: int = 1, **kwargs):
        super().__init__(plan, **kwargs)
        self.address = address
        self.client_nodes = client_nodes
        self.where = f"ray {address}" + (f", client load over {client_nodes} nodes" if client_nodes > 1 else "")
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
        return [_Work(self, None)] + [work for repetition, jobs in enumerate(schedule) for job in jobs
                                      for work in self._works(job, repetition)]

    def _works(self, job: Job, repetition: int) -> list[_Work]:
        """The job as one work, or (--client-nodes K) its cells whose clients spread as K parts of a gang that
        start together, and its other cells as one work."""
        k = self.client_nodes
        spread = [(i, c) for i, c in job.cells if k > 1 and scenario_class(c.scenario).spread_clients(c) >= k]
        if not spread:
            return [_Work(self, job, repetition)]
        rest = [(i, c) for i, c in job.cells if (i, c) not in spread]
        gang = _Gang()
        gang.parts = [_Work(self, replace(job, cells=list(spread), client_part=(part, k)), repetition, gang=gang,
                            part=part) for part in range(k)]
        return ([_Work(self, replace(job, cells=rest), repetition)] if rest else []) + gang.parts

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
class _Gang:
    """The parts of a job spread over client nodes (--client-nodes): their rendezvous, and each cell's outcome
    per part until every part has given one."""

    parts: list = field(default_factory=list)
    rendezvous: object = None
    outcomes: dict = field(default_factory=dict)  # cell index -> {part: (outcome, failures, node info)}


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
    gang: _Gang | None = None  # one of the parts of a job spread over client nodes
    part: int = 0

    @property
    def pin(self) -> tuple | None:
        """What keeps a job's repetitions on one node (a gang's parts take whichever nodes are free)."""
        if self.job is None or self.gang is not None:
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
        self._start_gangs()
        for node in self.nodes.values():
            if node.node_id in self.running or node.node_id in self.suspect:
                continue
            work = next((w for w in self.waiting if w.ready() and w.gang is None
                         and self.pins.get(w.pin, node.node_id) == node.node_id), None)
            if work is not None:
                self.waiting.remove(work)
                self._start(work, node)
        self._starve_check()

    def _free_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.node_id not in self.running and n.node_id not in self.suspect]

    def _start_gangs(self) -> None:
        """Start a spread job's parts together, each on a free node of its own, once there are enough."""
        for work in list(self.waiting):
            gang = work.gang
            if gang is None or work not in self.waiting or not work.ready():
                continue
            free = self._free_nodes()
            if len(free) < len(gang.parts):
                return  # until that many nodes are free at once (other work may take a free one meanwhile)
            gang.rendezvous = _rendezvous().remote(len(gang.parts))
            for part, node in zip(gang.parts, free):
                self.waiting.remove(part)
                self._start(part, node)

    def _starve_check(self) -> None:
        """Work left, nothing running, no node to run it: wait a while for one to join, then fail the cells."""
        usable = set(self.nodes) - set(self.suspect)
        fits = any(w.gang is None or len(w.gang.parts) <= len(usable) for w in self.waiting)
        if self.running or not self.waiting or (usable and fits):
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
        ).remote(self.plans[key], work.job, work.gang.rendezvous if work.gang else None)
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
                if work.part == 0:  # a spread cell starts once, however many client nodes measure it
                    launcher.on_start(cell)
            case Outcome(index, outcome, failures) if work.gang is not None:
                work.job.cells = [(i, c) for i, c in work.job.cells if i != index]
                self._part_done(work, index, outcome, failures)
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
            case JobLost(error) if work.gang is not None:
                del self.running[work.node.node_id]
                self._part_lost(work, error)
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

    def _part_done(self, work: _Work, index: int, outcome, failures: list) -> None:
        """A client node's outcome of a spread cell; once every part has given one, the cell's merged
        Measurement (or the first part's failure) is recorded."""
        gang, launcher = work.gang, work.launcher
        got = gang.outcomes.setdefault(index, {})
        got[work.part] = (outcome, failures, work.info or {"hostname": work.node.hostname if work.node else None})
        if isinstance(outcome, Failure) and gang.rendezvous is not None:
            gang.rendezvous.abandon.remote(index)  # the others need not wait for it at this cell's start line
        if len(got) < len(gang.parts):
            return
        outcomes = [got[k] for k in range(len(gang.parts))]
        nodes = [{"hostname": info.get("hostname"), "ray_node_id": info.get("ray_node_id")} for _, _, info in outcomes]
        failed = [(k, o) for k, (o, _, _) in enumerate(outcomes) if isinstance(o, Failure)]
        if failed:
            k, first = failed[0]
            merged = Failure(f"client node {k + 1} of {len(outcomes)} ({nodes[k]['hostname']}): {first.reason}",
                             first.kind)
        else:
            try:
                merged = merge_client_parts([o for o, _, _ in outcomes], nodes)
            except RuntimeError as e:
                merged = Failure(str(e), "error")
        hosts = "+".join(dict.fromkeys(str(n["hostname"]) for n in nodes))
        if isinstance(merged, Measurement):  # its processes' machine: the client nodes together
            merged.details["node"] = {"hostname": hosts, "ray_node_id": nodes[0]["ray_node_id"]}
        launcher.cell_nodes[index] = {**outcomes[0][2], "hostname": hosts}
        launcher.cell_versions[index] = work.version
        launcher.record(work.repetition, index, merged, [f for _, fs, _ in outcomes for f in fs])

    def _part_lost(self, work: _Work, error: Exception) -> None:
        """A client node lost or its task failed: the part's unfinished cells fail (the others, waiting at a
        start line for it, are let go at once)."""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if work.gang.rendezvous is not None:
            work.gang.rendezvous.abandon.remote()
        for index, _ in work.job.cells:
            self._part_done(work, index, Failure(f"{work.where()} was lost or failed while measuring its share of "
                                                 f"the clients: {reason}", "node"), [])
        work.job.cells = []

    def _fail(self, work: _Work, failure: Failure) -> None:
        if work.gang is not None:
            for index, _ in work.job.cells:
                self._part_done(work, index, failure, [])
            work.job.cells = []
            return
        if work.job is None:
            self._references_known(work.launcher, None, f"no fidelity reference: {failure.reason}")
            return
        for index, cell in work.job.cells:
            work.launcher.on_start(cell)
            if work.info:
                work.launcher.cell_nodes[index] = work.info
            work.launcher.record(work.repetition, index, failure, [])
        work.job.cells = []


__all__ = ["RayLauncher", "check_client_nodes", "connect", "run_together", "run_on_node", "node_info", "measuring_nodes", "Node"]
