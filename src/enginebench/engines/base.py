"""The engine interface. An engine knows how to load a model and run a batch; nothing of statistics or storage.

Adding an engine is one module with an `Engine` subclass plus one line in `engines/__init__.py`.
Engine modules import their library inside methods, so the registry can list engines that are not installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np

from enginebench.engines.features import precision_bits
from enginebench.measure import cpu_features
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch

if TYPE_CHECKING:  # a type only: the engines know nothing of storage
    from enginebench.store.records import EngineDetails


class Session(ABC):
    """A loaded model, ready to run batches."""

    #: the precision the engine really executed (may differ from the one asked for: see OpenVINO's bf16)
    executed_precision: str = "fp32"
    #: facts about the load worth recording (artifact paths, export time, providers, ...): every key is declared
    #: in store/records.py EngineDetails (tests/store/test_details_shape.py checks it)
    details: EngineDetails

    @abstractmethod
    def prepare(self, batch: TokenBatch) -> Any:
        """Convert a batch to the engine's native inputs. Called before timing starts."""

    @abstractmethod
    def run(self, prepared: Any) -> np.ndarray:
        """Run one batch; return sentence embeddings [batch, hidden] as a numpy array. This is what is timed."""

    def computed_positions(self, batch: TokenBatch) -> int:
        """Token positions one call computes for `batch`: every row to the batch's length, unless the engine
        cuts the batch itself (sentence-transformers re-tokenises and stops at its longest input)."""
        return batch.size * batch.seq_len

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class EngineOptions:
    """Options common to every engine; engines subclass it to add their own (recorded with every result)."""

    threads: int = 1
    # an encoder's call runs as consecutive runs of at most this many items (0: the whole batch at once), each
    # prepared before timing, so a call of 32 answers the same 32 items. Smaller runs keep each operator's
    # activations nearer the core (MiniLM, 8 x 128 tokens: 1.5 MB a hidden-state tensor, against 6.3 MB at 32),
    # and cost a call's fixed overhead more often. MiniLM at batch 32 in runs of 8, 1x2 threads, a Zen 4 EPYC
    # (2026-12-07): torch-compile every-Linear int8 +17-22%, OpenVINO's +3-7%, CTranslate2 int8 -19-33%, ONNX
    # Runtime int8-static -8-11%. Engine by engine, then: tune tries 8 below batches larger than that
    micro_batch: int = field(default=0, metadata={"min": 0, "tune": (8,)})


class MicroBatched(Session):
    """`inner` with every call run as consecutive runs of at most `rows` items (EngineOptions.micro_batch): each
    part prepared before timing, the parts' outputs written into one array in order."""

    def __init__(self, inner: Session, rows: int):
        self.inner, self.rows = inner, rows
        self.executed_precision = inner.executed_precision
        self.details = inner.details

    def parts(self, batch: TokenBatch) -> list[TokenBatch]:
        if batch.size <= self.rows:
            return [batch]
        return [batch.take(range(start, min(start + self.rows, batch.size)))
                for start in range(0, batch.size, self.rows)]

    def prepare(self, batch: TokenBatch) -> Any:
        parts = self.parts(batch)
        return batch.size, [(part.size, self.inner.prepare(part)) for part in parts]

    def run(self, prepared: Any) -> np.ndarray:
        size, parts = prepared
        if len(parts) == 1:
            return self.inner.run(parts[0][1])
        out, start = None, 0
        for rows, part in parts:
            # copied at once: an engine may return a view of a buffer its next run overwrites
            embeddings = self.inner.run(part)
            if out is None:
                out = np.empty((size, *embeddings.shape[1:]), embeddings.dtype)
            out[start:start + rows] = embeddings
            start += rows
        return out

    def computed_positions(self, batch: TokenBatch) -> int:
        return sum(self.inner.computed_positions(part) for part in self.parts(batch))

    def close(self) -> None:
        self.inner.close()


def micro_batched(session, options: EngineOptions):
    """`session` with its calls split as `options.micro_batch` says (an encoder's Session; anything else as it
    came)."""
    if options.micro_batch and isinstance(session, Session):
        return MicroBatched(session, options.micro_batch)
    return session


def splitting_calls(engine_options: dict[str, dict[str, str]]) -> list[str]:
    """The engines `-o ENGINE.micro_batch=N` asks to split calls for (N not 0), sorted; a value that is not a whole
    number counts as asking (the option check refuses it anyway)."""
    def asks(value) -> bool:
        try:
            return int(str(value).strip() or 0) != 0
        except ValueError:
            return True
    return sorted(engine for engine, kv in engine_options.items() if "micro_batch" in kv and asks(kv["micro_batch"]))


@dataclass(frozen=True)
class EngineInfo:
    name: str
    library: str
    version: str | None  # None when not installed
    install: str  # how to install it
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    formats: tuple[str, ...]
    notes: str = ""
    extra: str = ""  # the enginebench extra that installs it ("" where no package can)
    bits: tuple[str, ...] = ()  # precision classes the library offers: 32-bit, 16-bit, 8-bit, 4-bit, 2/3-bit
    backend: str = ""  # kernels / BLAS underneath
    parallelism: str = ""  # model / tensor parallel support
    training: str = ""  # can it train (autograd, optimizers)
    available: bool = True  # False: known, but cannot run on this machine (see notes)

    @property
    def installed(self) -> bool:
        return self.version is not None


class Engine(ABC):
    name: ClassVar[str]
    #: distribution whose version identifies the engine
    library: ClassVar[str]
    #: import names that must be present for the engine to run
    requires: ClassVar[tuple[str, ...]]
    #: the enginebench extra that installs it
    extra: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    formats: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[EngineOptions]] = EngineOptions
    # Feature-table facts about the library (what it can do, whether or not enginebench drives all of it)
    #: precisions the library offers beyond `precisions`, e.g. ("int4", "q3_k") for a GGUF runtime
    library_precisions: ClassVar[tuple[str, ...]] = ()
    backend: ClassVar[str] = ""
    parallelism: ClassVar[str] = "no"
    training: ClassVar[str] = "no"
    #: loads arbitrary ONNX graphs: can run a model cut at a node (`run --until`) and `blocks`
    cuts_graph: ClassVar[bool] = False
    #: the kinds of model it runs: "encoder" (sentence embeddings), "decoder" (causal LMs)
    model_kinds: ClassVar[tuple[str, ...]] = ("encoder",)
    #: precision -> CPU flags of which it needs one to offer that precision (e.g. bf16 instructions where the
    #: library would otherwise fall back to fp32 silently); read through measure/cpu_features, so
    #: ENGINEBENCH_CPU_FEATURES=avx2 asks what an AVX2-only machine is offered
    cpu_needs: ClassVar[dict[str, frozenset[str]]] = {}
    #: what its first load does before a call can run (an export, a conversion, a compile; cached or not), or
    #: "" when it runs the model as it comes: such engines run first in a run's first round, so the first
    #: figure comes early
    prepares: ClassVar[str] = ""
    #: a server reached over the network rather than a library loaded here (engines/endpoint.py): the scenarios
    #: drive it with request clients, and a run takes it only when asked for (--endpoint)
    remote: ClassVar[bool] = False
    #: its single-operator kernels for `enginebench ops` (an engines/kernels.Kernels subclass), if it has any
    op_kernels: ClassVar[type | None] = None

    @classmethod
    def missing(cls) -> list[str]:
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    @classmethod
    def installed(cls) -> bool:
        return not cls.missing()

    @classmethod
    def version(cls) -> str | None:
        try:
            return metadata.version(cls.library)
        except metadata.PackageNotFoundError:
            return None

    @classmethod
    def install_hint(cls) -> str:
        return f"pip install 'enginebench[{cls.extra}]'"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        return ("cpu",)

    @classmethod
    def probe_backend(cls) -> str:
        """The kernels underneath, probed from the installed library where it says (default: `backend`)."""
        return cls.backend

    @classmethod
    def describe(cls) -> EngineInfo:
        """What the engine is and runs on this machine: an installed engine's precisions are those it offers
        here (a precision the CPU lacks instructions for, or the library's build refuses, goes to the notes with
        the reason)."""
        installed = cls.installed()
        refused = {p: why for p in cls.precisions if installed and (why := cls.why_not_precision(p))}
        notes = "; ".join(([] if installed else [f"not installed (missing {', '.join(cls.missing())})"])
                          + [f"not here: {why}" for why in refused.values()])
        return EngineInfo(
            name=cls.name, library=cls.library, version=cls.version() if installed else None,
            install=cls.install_hint(), precisions=tuple(p for p in cls.precisions if p not in refused),
            devices=cls.devices() if installed else (), formats=cls.formats, notes=notes, extra=cls.extra,
            bits=precision_bits(cls.precisions + cls.library_precisions),
            backend=cls.probe_backend() if installed else cls.backend,
            parallelism=cls.parallelism, training=cls.training,
        )

    @classmethod
    def why_not_model(cls, model: ModelSpec) -> str | None:
        """Why this engine cannot run `model` as given (its kind, a graph cut at a node), or None if it can."""
        if model.kind not in cls.model_kinds:
            return f"{cls.name} does not run {model.kind} models (it runs {', '.join(cls.model_kinds)} models)"
        if model.until and not cls.cuts_graph:
            return f"{cls.name} cannot run a model cut at a node (--until needs an engine that loads ONNX graphs)"
        return None

    @classmethod
    def why_not(cls, model: ModelSpec, precision: str, options: dict[str, str] | None = None) -> str | None:
        """Why this engine cannot run `model` at `precision` (with these `--option` overrides), or None; override
        where precisions depend on the model's kind (e.g. an engine offering more precisions for decoders than
        for encoders) or on an option."""
        return cls.why_not_precision(precision) or cls.why_not_model(model)

    @classmethod
    def reference_options(cls, model: ModelSpec) -> tuple[dict[str, str], str | None]:
        """The option overrides under which this engine computes `model`'s fp32 fidelity reference, and why it
        cannot (None: it can)."""
        return {}, cls.why_not(model, "fp32")

    def load_onnx_graph(self, path, options: EngineOptions):
        """Load any ONNX file; return a callable taking {input name: array} and returning its outputs as a
        list of arrays in the graph's output order. Engines with `cuts_graph = True` implement it."""
        raise NotImplementedError(f"{self.name} does not load arbitrary ONNX graphs")

    @classmethod
    def why_not_precision(cls, precision: str) -> str | None:
        """Why this engine cannot run `precision` here, or None if it can."""
        if precision not in cls.precisions:
            return f"{cls.name} does not offer {precision} (it offers {', '.join(cls.precisions)})"
        if precision in cls.cpu_needs:
            return cpu_features.current().missing(cls.cpu_needs[precision], f"{cls.name} {precision}")
        return None

    @classmethod
    def make_options(cls, threads: int, overrides: dict[str, str]) -> EngineOptions:
        """Build the engine's options from `--option engine.key=value` strings, typed by the dataclass and
        checked against the field's metadata: `choices` (a tuple, or a function returning one) and `min`."""
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        values: dict[str, Any] = {"threads": threads}
        for key, raw in overrides.items():
            if key not in fields or key == "threads":
                known = ", ".join(k for k in fields if k != "threads") or "none"
                raise KeyError(f"{cls.name} has no option {key!r} (options: {known})")
            values[key] = _coerce(f"{cls.name}.{key}", raw, fields[key])
        return cls.Options(**values)

    @abstractmethod
    def load(self, model: ModelSpec, precision: str, options: EngineOptions) -> Session:
        """Load (and convert, compile) the model. Timed as load time."""


def _coerce(name: str, raw: str, spec: dataclasses.Field) -> Any:
    """`raw` as the type of the field's default, or ValueError naming the option, what it takes and an example."""
    default, meta = spec.default, spec.metadata
    example = f"write e.g. -o {name}={str(default).lower() if isinstance(default, bool) else default}"
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} takes true or false, not {raw!r}: {example}")
    if isinstance(default, (int, float)):
        kind = "a whole number" if isinstance(default, int) else "a number"
        try:
            value = type(default)(raw)
        except ValueError:
            value = float("nan")
        if value != value:
            raise ValueError(f"{name} takes {kind}, not {raw!r}: {example}")
        if "min" in meta and value < meta["min"]:
            raise ValueError(f"{name} must be at least {meta['min']}, not {raw}: {example}")
        return value
    choices = meta.get("choices")
    if choices is None:
        return raw
    choices = tuple(choices() if callable(choices) else choices)
    by_case = {c.lower(): c for c in choices}  # LATENCY or latency: the value the library expects
    if raw.lower() not in by_case:
        raise ValueError(f"{name} takes one of {', '.join(choices)}, not {raw!r}: {example}")
    return by_case[raw.lower()]


def options_dict(options: EngineOptions) -> dict:
    return dataclasses.asdict(options)


__all__ = ["Engine", "EngineInfo", "EngineOptions", "Session", "MicroBatched", "micro_batched", "splitting_calls",
           "DecoderSession", "SlotDecoding", "options_dict"]


class DecoderSession(ABC):
    """A loaded causal LM with a KV cache, for the `generate` scenario (prefill and decode timed apart).

    Token ids are int32/int64 numpy arrays shaped [batch, tokens]; logits come back as float32 numpy arrays.
    """

    executed_precision: str = "fp32"
    details: EngineDetails  # as Session.details
    vocab_size: int

    def checked_ids(self, tokens) -> np.ndarray:
        """`tokens` as an array of ids shaped [batch, n>0] within the vocabulary, or ValueError saying which."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.size == 0:
            raise ValueError(f"expected token ids shaped [batch, n>0], got {tokens.shape}")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return tokens

    @abstractmethod
    def reset(self) -> None:
        """Forget every cached token (start a new sequence)."""

    @abstractmethod
    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        """Process a prompt [batch, n] into the cache; return the last position's logits [batch, vocab]."""

    @abstractmethod
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Append one token per sequence [batch, 1]; return its logits [batch, vocab]."""

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        """Teacher forcing for fidelity: logits of every position [batch, n, vocab] of a fresh sequence."""
        raise NotImplementedError(f"{type(self).__name__} cannot return logits for every position")

    def stream(self, prompt: np.ndarray, new_tokens: int) -> Iterator[np.ndarray]:
        """Greedy generation from a fresh sequence: yield each step's token ids [batch] as it is chosen.

        The first yield follows the prompt's prefill (time to first token), every later one a decode step.
        Engines whose KV cache lives inside their own generation loop (CTranslate2) override this and cannot
        offer decode(); the generate scenario times through stream() so every engine is timed the same way.
        """
        self.reset()
        logits = self.prefill(prompt)
        for step in range(new_tokens):
            token = logits.argmax(-1)
            yield token
            if step + 1 < new_tokens:
                logits = self.decode(token[:, None])

    def close(self) -> None:
        pass


class SlotDecoding(ABC):
    """A decoder that serves sequences side by side, each in its own slot of one KV cache, joining and leaving
    between decode steps: continuous batching (llama.cpp's parallel sequences, vLLM's iteration-level
    scheduling). The decoder server scenario uses it where a session offers it, and otherwise batches only
    requests that start together."""

    @abstractmethod
    def open_slots(self, slots: int) -> None:
        """Make room for `slots` sequences and empty them all."""

    @abstractmethod
    def prefill_slot(self, slot: int, tokens: np.ndarray) -> np.ndarray:
        """Start sequence `slot` (emptied first) from prompt ids [n]; return its last position's logits [vocab]."""

    @abstractmethod
    def decode_slots(self, slots: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Append token tokens[k] to sequence slots[k], all in one call; return their logits [k, vocab]."""

    @abstractmethod
    def free_slot(self, slot: int) -> None:
        """Forget sequence `slot`'s cached tokens."""

