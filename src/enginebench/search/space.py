"""The candidate list: every configuration `tune` may try, built from the engine classes themselves (their
precisions and their Options dataclasses), so a precision or option an engine gains appears here unasked.

An engine option is tuned when space.TUNED names it (values from the field's `choices`, or a function of the
cores), or when its field's metadata says `tune` (True: every choice; or a tuple of values): plugin engines
declare theirs that way."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from enginebench.analysis.recommend import BASELINES
from enginebench.engines import engine_class
from enginebench.plan import Cell


def _choices(field: dataclasses.Field, cores: int, threads: int) -> tuple:
    choices = field.metadata.get("choices", ())
    return tuple(choices() if callable(choices) else choices)


# engine -> {option: values(field, cores, threads)}: the options worth a search. Left out on purpose: ORT's
# inter_op_threads (idle without a parallel execution mode), torch-compile's mode (max-autotune compiles for
# minutes) and backend, tinygrad's jit=false (always slower), sentence-transformers' device, and OpenVINO's hint
# and num_streams: every scenario gives a session one request at a time, so more streams only split its threads
# (MiniLM b32, one session on 2 cores: 88-113 items/s with 2 streams against 200-207 with one) and one stream is
# one stream whichever hint asked for it; 6 settings of them multiplied OpenVINO's candidates for 2 behaviours.
# CTranslate2's inter_threads likewise: its encoders take one batch each, so with one request at a time a second
# one idles and holds a second copy of the model (MiniLM int8 b32 on 1 thread: 61 items/s and 327 MB with 2
# against 72 items/s and 218 MB with 1).
TUNED: dict[str, dict[str, Callable]] = {
    "onnxruntime": {"graph_optimization": _choices},
    "torch": {"attention": _choices},
}


@dataclass(frozen=True, order=True)
class Candidate:
    """One configuration: a cell of `enginebench run` plus the engine options that differ from the defaults."""

    engine: str
    precision: str
    scenario: str
    batch_size: int
    workers: int
    threads: int
    options: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """One line a person reads: `onnxruntime int8 latency b8 1×2 graph_optimization=basic`."""
        opts = " ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.engine} {self.precision} {self.scenario} b{self.batch_size} {self.workers}×{self.threads}" + (
            f" {opts}" if opts else "")

    @property
    def job(self) -> tuple:
        """What one child process loads once: cells sharing it share the load time."""
        return self.engine, self.precision, self.threads, self.options

    @property
    def cell_key(self) -> tuple:
        """The cell without its options: unique within a run (one option setting per engine and run)."""
        return self.engine, self.precision, self.scenario, self.batch_size, self.workers, self.threads

    def cell(self, workload: str) -> Cell:
        return Cell(self.engine, self.precision, self.scenario, workload, self.batch_size, self.workers, self.threads)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "options"}, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        return cls(d["engine"], d["precision"], d["scenario"], int(d["batch_size"]), int(d["workers"]),
                   int(d["threads"]), tuple(sorted((k, str(v)) for k, v in d.get("options", {}).items())))


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def option_settings(engine_cls, cores: int, threads: int, precision: str | None = None
                    ) -> list[tuple[tuple[str, str], ...]]:
    """Every setting of the engine's tuned options, the defaults first; each as the (key, value) pairs that differ
    from the defaults, values as `-o` takes them. An option whose field names the precisions it acts on
    (metadata `precisions`) is tuned only for those."""
    fields = {f.name: f for f in dataclasses.fields(engine_cls.Options)}
    tuned = dict(TUNED.get(engine_cls.name, {}))
    for name, f in fields.items():
        if precision and precision not in f.metadata.get("precisions", (precision,)):
            tuned.pop(name, None)
            continue
        mark = f.metadata.get("tune")
        if mark is True:
            tuned[name] = _choices
        elif mark:
            tuned[name] = lambda field, cores, threads, values=tuple(mark): values
    axes = []
    for name, values_of in sorted(tuned.items()):
        if name not in fields:
            raise KeyError(f"{engine_cls.name} has no option {name!r}: update enginebench.search.space.TUNED")
        default = _text(fields[name].default)
        values = [_text(v) for v in values_of(fields[name], cores, threads)]
        axes.append([(name, default)] + [(name, v) for v in values if v.lower() != default.lower()])
    settings = []
    for combo in itertools.product(*axes):
        changed = tuple((k, v) for (k, v), (_, default) in zip(combo, [axis[0] for axis in axes]) if v != default)
        engine_cls.make_options(threads, dict(changed))  # a value the engine refuses is a bug here, not the user's
        settings.append(changed)
    return settings


def threading(objective: str, cores: int) -> list[tuple[str, int, int]]:
    """(scenario, workers, threads per worker) to try: one session with all the cores or half of them; for
    throughput also 2, 4, ... worker processes sharing the cores."""
    ways = [("latency", 1, t) for t in dict.fromkeys((cores, max(1, cores // 2)))]
    if objective == "throughput":
        workers = 2
        while workers <= cores:
            ways.append(("throughput", workers, cores // workers))
            workers *= 2
    return ways


def candidates(engines: list[str], model, objective: str, batch_sizes: list[int], cores: int,
               precisions: list[str] | None = None) -> list[Candidate]:
    """The whole space, in a fixed order (engines as given, then precisions, options, threading, batch)."""
    out = []
    for engine in engines:
        cls = engine_class(engine)
        for precision in cls.precisions:
            if (precisions and precision not in precisions) or cls.why_not(model, precision):
                continue
            for scenario, workers, threads in threading(objective, cores):
                for options in option_settings(cls, cores, threads, precision):
                    out += [Candidate(engine, precision, scenario, b, workers, threads, options) for b in batch_sizes
                            if _splits(options, b)]
    return out


def _splits(options: tuple[tuple[str, str], ...], batch_size: int) -> bool:
    """False where `micro_batch` would not split a call of `batch_size` (the same work as without it)."""
    rows = int(dict(options).get("micro_batch", 0))
    return rows == 0 or rows < batch_size


def precision_options(engine: str) -> frozenset[str]:
    """The engine's options that decide how much of the model runs in which precision (their fields name the
    precisions they act on: int8_layers, dynamic_quantization): to the search each setting is a precision."""
    return frozenset(f.name for f in dataclasses.fields(engine_class(engine).Options) if "precisions" in f.metadata)


def _ceiling_key(precision: str) -> str:
    """The machine ceiling (measure/machine_speed's GEMM per precision) that bounds a precision's roofline."""
    return "int8" if precision.startswith("int8") else precision if precision in ("bf16", "fp16") else "fp32"


def admission_order(space: list[Candidate], seed: int, cores: int,
                    ceilings: dict[str, float] | None = None) -> list[Candidate]:
    """The order round 1 takes candidates in when the budget cannot hold them all: whole jobs (a load and its
    cells), first each engine × precision on all the cores (a setting of an option that acts on a precision,
    such as int8_layers=all, counts as a precision of its own), then the same otherwise threaded, then the
    other option settings. Within a tier, the precisions whose GEMM ceiling on this machine is highest go
    first (`ceilings`: GFLOP/s by precision, as `enginebench machine` stores them; the roofline of what they
    compute is highest, and an emulated bf16 goes last), seeded shuffles among equals."""
    jobs: dict[tuple, list[Candidate]] = {}
    for c in space:
        jobs.setdefault(c.job, []).append(c)
    acting = {engine: precision_options(engine) for engine in {c.engine for c in space}}

    def tier(job) -> int:
        engine, _, threads, options = job
        plain = all(name in acting[engine] for name, _ in options)
        return 0 if plain and threads == cores else 1 if plain else 2

    def ceiling(job) -> float:
        return -(ceilings or {}).get(_ceiling_key(job[1]), 0.0)

    rng = np.random.default_rng(seed)
    ordered = []
    for t in (0, 1, 2):
        keys = [job for job in jobs if tier(job) == t]
        ordered += sorted((keys[k] for k in rng.permutation(len(keys))), key=ceiling)  # stable: shuffled ties
    return [c for job in ordered for c in jobs[job]]


def family(c: Candidate) -> tuple:
    """What a candidate computes: its engine, precision and the options that act on that precision
    (int8_layers=all); its threading and other options change how fast it computes that, not what."""
    acting = precision_options(c.engine)
    return c.engine, c.precision, tuple((k, v) for k, v in c.options if k in acting)


def follow_leaders(pending: list[Candidate], ranked: list[Candidate], dropped: Iterable[Candidate],
                   cannot_win: Callable[[Candidate], bool] = lambda c: False) -> list[Candidate]:
    """Round 1's queue as its measurements come in: candidates of families not tried yet first, in their admission
    order; then the other threadings and options of the tried families, the family of the fastest faithful
    candidate first (threading and options moved a configuration by 2-10% here, engine × precision by 4x, so
    a variant of the leader is likelier to be fastest than a variant of one 3x slower), and within a family
    the fewest settings away from its fastest candidate first (`distance`); then those that `cannot_win` (their
    roofline is under what the leader measured: roofline_bound); families tried and only dropped (below the
    fidelity bound, or failed) last. Among equals the admission order stays."""
    place, best = {}, {}
    for c in ranked:  # best first
        if family(c) not in place:
            place[family(c)], best[family(c)] = len(place), c
    lost = {family(c) for c in dropped} - set(place)
    of = {c: family(c) for c in pending}
    hopeless = {c for c in pending if of[c] not in lost and cannot_win(c)}
    untried = [c for c in pending if of[c] not in place and of[c] not in lost and c not in hopeless]
    followed = sorted((c for c in pending if of[c] in place and c not in hopeless),
                      key=lambda c: (place[of[c]], distance(c, best[of[c]])))
    return untried + followed + [c for c in pending if c in hopeless] + [c for c in pending if of[c] in lost]


def roofline_bound(c: Candidate, ceilings: dict[str, float], flops_per_item: float) -> float | None:
    """Items/s `c` cannot pass on this machine: every product of the model at its precision's GEMM ceiling on all
    the cores (`ceilings`: GFLOP/s by precision, as `enginebench machine` stores them). It counts every product,
    attention's and every Linear's, in the candidate's precision, so it is at or above the roofline of what an
    engine really runs (a third of an int8 model left in fp32 only lowers that); every precision is bounded
    by the faster of its own ceiling and fp32's (the share does so for an emulated one, compute_roofline.bound_of;
    a native one's own ceiling is the faster anyway). None where a ceiling or the FLOPs are unknown. A reduced precision without a ceiling of its own (CTranslate2's int16) takes the highest one."""
    key = _ceiling_key(c.precision)
    rate = (max((v or 0.0 for v in ceilings.values()), default=0.0) if key == "fp32" and c.precision != "fp32"
            else max(ceilings.get(key) or 0.0, ceilings.get("fp32") or 0.0))
    return rate * 1e9 / flops_per_item if rate and flops_per_item > 0 else None


def neighbours(leader: Candidate, among: Iterable[Candidate]) -> list[Candidate]:
    """The candidates of `among` one setting away from `leader` in its family (`distance` 1): what a search
    climbing from the leader tries next."""
    return [c for c in among if c != leader and family(c) == family(leader) and distance(c, leader) == 1]


def distance(a: Candidate, b: Candidate) -> int:
    """How many settings two candidates of one family differ in: the threading (scenario, workers and threads
    together), the batch size and each option. Within a family round 1 tries the fastest one's neighbours
    first (one setting changed), then theirs: a search from the leader, one setting at a time, rather than
    every combination of the options in a seeded order."""
    options_a, options_b = dict(a.options), dict(b.options)
    changed = sum(options_a.get(k) != options_b.get(k) for k in options_a.keys() | options_b.keys())
    return changed + ((a.scenario, a.workers, a.threads) != (b.scenario, b.workers, b.threads)) + (
        a.batch_size != b.batch_size)


def baselines(cell: Candidate, installed: Callable[[str], bool]) -> list[Candidate]:
    """recommend's baselines in the cell of `cell`: PyTorch eager fp32 and sentence-transformers fp32, default
    options (where installed)."""
    return [Candidate(engine, "fp32", cell.scenario, cell.batch_size, cell.workers, cell.threads)
            for engine, _ in BASELINES if installed(engine)]


def pack_runs(cands: list[Candidate]) -> list[list[Candidate]]:
    """Group candidates into runs, order kept: a run gives each engine one option setting (enginebench run's
    `-o` is per engine), so a second setting of an engine goes to the next run that has room for it."""
    runs: list[tuple[dict, list[Candidate]]] = []
    for c in cands:
        for setting, members in runs:
            if setting.setdefault(c.engine, c.options) == c.options:
                members.append(c)
                break
        else:
            runs.append(({c.engine: c.options}, [c]))
    return [members for _, members in runs]


__all__ = ["Candidate", "TUNED", "option_settings", "threading", "candidates", "admission_order", "precision_options",
           "family", "follow_leaders", "roofline_bound", "neighbours", "distance", "baselines", "pack_runs"]
