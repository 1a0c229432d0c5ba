"""A cell's canonical identity: everything that changes the work a result measured, defined once for compare
and recommend. Two results measured the same cell when their identities are equal.

What is in it: engine, precision, scenario, workload (its name, the digest of its text and its seed), seq_len,
batch size, workers and threads; the model by its content (ModelSpec.content_hash, which keys every cached
conversion, from Run.config["model"]) and where it was cut (`--until`); every engine option (Result.engine_options
holds all of them, defaults included: a changed default changes the work); the serving settings (qps, SLOs,
max batch, max wait, find-max-qps, LoadGen's seed); the scenario's own settings (Result.settings); the
padding (--padding: fixed to seq_len or dynamic; a run stored before the option existed padded to seq_len).

What is not: the engine's version, the machine, the stopping rule, the number of processes — they change how a
figure came out, not what was measured; compare says them apart as differences between the runs.

Runs stored by older versions did not record everything (the corpus digest is recorded since schema 4's cell
identity; a run built without Run.config has no model record). `Matching` matches two sets of identities on
what both recorded, and says what it left out: the model by its name where either side has no content digest
(not its path: a registry model's folder differs from machine to machine while its name does not), `--until`,
the corpus digest and seed only where both runs recorded them, an engine option only where both runs recorded
it for that engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from enginebench.store.model import Result, Run

Pairs = tuple[tuple[str, str], ...]  # (name, value as JSON), sorted by name


@dataclass(frozen=True)
class CellIdentity:
    engine: str
    precision: str
    scenario: str
    workload: str
    seq_len: int
    batch_size: int
    workers: int
    threads: int
    model: str  # the name; matched on only where the content digest is not recorded on both sides
    model_digest: str | None  # ModelSpec.content_hash; None: unrecorded
    until: str | None  # the node the model was cut at, "" for the whole model; None: unrecorded
    corpus_digest: str | None  # the workload's text (WorkloadSpec.digest); None: unrecorded
    seed: int | None  # the workload's sampling seed (None: unrecorded; 0 for titles, which samples nothing)
    padding: str = "fixed"  # --padding; runs stored before it existed padded every batch to seq_len
    engine_options: Pairs = ()
    serving: Pairs | None = None  # the serving scenarios' settings (plan.Serving)
    settings: Pairs | None = None  # the scenario's own settings

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("engine_options", "serving", "settings"):
            d[key] = None if d[key] is None else {k: json.loads(v) for k, v in d[key]}
        return d

    def text(self) -> str:
        """A stable text form: equal identities, equal texts."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _pairs(d: dict | None) -> Pairs | None:
    if d is None:
        return None
    return tuple(sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in d.items()))


def cell_identity(r: Result, run: Run | None = None, *, config: dict | None = None) -> CellIdentity:
    """`r`'s cell identity; `run` is the run it belongs to (its config records the model and the workloads), or
    `config` that record itself (a cell not measured yet: LocalLauncher.identity)."""
    if config is None:
        config = (run.config if run is not None else None) or {}
    model = config.get("model") or None
    workload = ((config.get("workloads") or {}).get(r.workload) or (r.details or {}).get("workload") or {})
    seed = workload.get("seed")
    if workload.get("source") == "titles":  # every title, whatever the seed
        seed = 0
    serving = (r.serving or {}).get("settings") or (r.details or {}).get("serving_settings")
    return CellIdentity(
        engine=r.engine, precision=r.precision, scenario=r.scenario, workload=r.workload, seq_len=r.seq_len,
        batch_size=r.batch_size, workers=r.workers, threads=r.threads, model=r.model,
        model_digest=model.get("content_hash") if model else None,
        until=(model.get("until") or "") if model else None,
        corpus_digest=workload.get("digest"), seed=seed, padding=workload.get("padding") or "fixed",
        engine_options=_pairs(r.engine_options or {}), serving=_pairs(serving), settings=_pairs(r.settings))


_LABELS = {"model_digest": "model content", "until": "cut at", "corpus_digest": "corpus", "seed": "workload seed"}
_SHOWN = {"seq_len": "seq", "batch_size": "batch"}
_OPTIONAL = ("until", "corpus_digest", "seed")  # matched on where both sides recorded them
_WHAT = {"model_digest": "the model's content digest", "until": "where the model was cut (--until)",
         "corpus_digest": "the corpus digest", "seed": "the workload's seed"}


def _shown(part: str, value) -> str:
    if part == "cut at":
        return value or "none (the whole model)"
    if part in ("model content", "corpus"):
        return str(value)[:8]
    if isinstance(value, str) and part not in ("engine", "precision", "scenario", "workload", "model"):
        try:  # an option's or a setting's value, kept as JSON
            value = json.loads(value)
        except ValueError:
            pass
    return str(value)


class Matching:
    """How two sets of identities are matched: on what both recorded (see the module's docstring)."""

    def __init__(self, a: Iterable[CellIdentity], b: Iterable[CellIdentity], names: tuple[str, str] = ("base", "new")):
        a, b = list(a), list(b)
        self.notes: list[str] = []
        recorded = [{f for f in ("model_digest", *_OPTIONAL) if any(getattr(i, f) is not None for i in side)}
                    for side in (a, b)]
        self.fields = [f for f in ("model_digest", *_OPTIONAL) if f in recorded[0] & recorded[1]]
        for f in ("model_digest", *_OPTIONAL):
            lacking = [n for n, rec, side in zip(names, recorded, (a, b)) if f not in rec and side]
            if f not in self.fields and len(lacking) == 1:
                also = "; the model matched by its name" if f == "model_digest" else ""
                self.notes.append(f"cell identity: the {lacking[0]} run did not record {_WHAT[f]} (an older "
                                  f"enginebench): cells matched without it{also}")
        options = [{}, {}]  # engine -> option names recorded
        for side, seen in zip((a, b), options):
            for i in side:
                seen.setdefault(i.engine, set()).update(k for k, _ in i.engine_options)
        self.options = {e: options[0][e] & options[1][e] for e in set(options[0]) & set(options[1])}
        for e in sorted(self.options):
            for n, seen in zip(names, options):
                only = sorted(seen[e] - self.options[e])
                if only:
                    self.notes.append(f"cell identity: engine {e}'s option{'s' * (len(only) > 1)} "
                                      f"{', '.join(only)} recorded in the {n} run only: cells matched without it")

    def parts(self, i: CellIdentity) -> tuple[tuple[str, object], ...]:
        """(field, value) for each part the identities are matched on."""
        out = [(f, getattr(i, f)) for f in ("engine", "precision", "scenario", "workload", "seq_len", "padding",
                                             "batch_size", "workers", "threads")]
        out.append(("model content", i.model_digest) if "model_digest" in self.fields else ("model", i.model))
        out += [(_LABELS[f], getattr(i, f)) for f in _OPTIONAL if f in self.fields]
        kept = self.options.get(i.engine)
        out += [(f"option {k}", v) for k, v in i.engine_options if kept is None or k in kept]
        for group in ("serving", "settings"):
            value = getattr(i, group)
            out += [(group, None)] if value is None else [(k, v) for k, v in value]
        return tuple(out)

    def key(self, i: CellIdentity) -> tuple:
        return self.parts(i)

    def differences(self, a: CellIdentity, b: CellIdentity, names: tuple[str, str] = ("base", "new")) -> list[str]:
        """What tells two identities apart, each as `base seq 128, new seq 64`."""
        pa, pb = dict(self.parts(a)), dict(self.parts(b))
        out = []
        for f in dict.fromkeys([*pa, *pb]):
            va, vb = pa.get(f, "unset"), pb.get(f, "unset")
            if va != vb:
                label = _SHOWN.get(f, f)
                out.append(f"{names[0]} {label} {_shown(f, va)}, {names[1]} {label} {_shown(f, vb)}")
        return out


def differences(a: CellIdentity, b: CellIdentity, names: tuple[str, str] = ("base", "new")) -> list[str]:
    """What tells two identities apart, matched on what both recorded (`Matching`); [] for the same cell."""
    return Matching([a], [b], names).differences(a, b, names)


_WORK = (("model_digest", "other model content"), ("until", "other model cut (--until)"),
         ("seq_len", "other seq_len"), ("padding", "other padding"), ("corpus_digest", "other corpus"),
         ("seed", "other workload seed"))


def work_difference(a: CellIdentity, b: CellIdentity) -> str | None:
    """Why `b` did other work than `a` on the same workload, whatever the engine and its configuration (the
    model's content or cut, seq_len, the corpus or its seed), or None; a part one side did not record counts
    as the same (the model then by its name)."""
    if a.model_digest is None or b.model_digest is None:
        if a.model != b.model:
            return "other model"
    for f, why in _WORK:
        va, vb = getattr(a, f), getattr(b, f)
        if va is not None and vb is not None and va != vb:
            return why
    return None


def positions_share(a: Result, b: Result) -> float | None:
    """`b`'s token positions computed per input as a share of `a`'s, where both recorded them (latency and
    throughput cells since --padding); 1.0 when both computed the same work."""
    pa, pb = ((r.details or {}).get("positions_per_item") for r in (a, b))
    return pb / pa if pa and pb else None


SAME_WORK_TOLERANCE = 0.02  # two results' positions per input this close are the same work


def positions_differ(a: Result, b: Result) -> float | None:
    """`b`'s share of `a`'s token positions per input where it is not the same work (beyond
    SAME_WORK_TOLERANCE of 1), else None."""
    share = positions_share(a, b)
    return share if share is not None and abs(share - 1) > SAME_WORK_TOLERANCE else None


def positions_note(a: Result, b: Result) -> str:
    """A note when `b` computed a share of `a`'s token positions other than 1 (every engine computes the batch's
    width today; sentence-transformers' results stored before it did stopped at each batch's longest input):
    their speed-up is not on the same work. "" otherwise."""
    share = positions_differ(a, b)
    if share is None:
        return ""
    return (f" [{b.engine} computed {share:.0%} of {a.engine}'s token positions: not the same work; "
            f"measure both with this version of enginebench]")


def work_text(i: CellIdentity) -> str:
    """`seq 128 · the whole model`, `seq 64 · dynamic padding · cut at /encoder/layer.1/Add`."""
    cut = "" if i.until is None else " · " + (f"cut at {i.until}" if i.until else "the whole model")
    padding = " · dynamic padding" if i.padding == "dynamic" else ""
    return f"seq {i.seq_len}{padding}{cut}"


__all__ = ["CellIdentity", "cell_identity", "Matching", "differences", "work_difference", "work_text", "positions_share",
           "positions_differ", "positions_note", "SAME_WORK_TOLERANCE"]
