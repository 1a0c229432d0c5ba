"""Fake engines and sessions with known behaviour, for every test that needs an engine without loading a real one.

The enginebench processes a test starts load them through ENGINEBENCH_ENGINES="name=helpers.fake_engines:Class";
`env()` and `child_pythonpath()` put tests/ on their PYTHONPATH. Each *_PLUGINS set below is what one kind of test
registers: registered engines count as installed ones (`tune` searches all of them), so the sets stay apart.

1. Sessions with known call times (SleepSession, SleepDecoder): the clock, the stopping rule, workers, serving.
2. Engines with known speeds and known fidelity (torch, sentence-transformers, syn, syn-wrong) for `tune`. Every
   faithful fake returns `embeddings(batch)`, so a fake "torch" is an exact fidelity reference that costs nothing.
3. Engines that misbehave on purpose: `fault` (`-o fault.behaviour=...`) for sweeps, faults and resume; the same
   behaviours under fixed names (fake-wrong, fake-crash, fake-hang, fake-raise) for the command line's isolation
   tests; fake-hang-graph, a graph engine that never finishes loading; fake-crash-block, one whose layer 1
   crashes its process when timed (`enginebench blocks`).
4. fake-kernels: an engine whose only part is its single-operator kernels (`enginebench ops`); fake-crashing-kernels,
   the same whose row sum crashes its process.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import DecoderSession, Engine, EngineOptions, Session, SlotDecoding
from enginebench.engines.kernels import Kernels, Prepared, Unsupported
from helpers import child_pythonpath

MODULE = "helpers.fake_engines"


def plugins(**engines: str) -> str:
    """ENGINEBENCH_ENGINES for engine name -> class name in this module."""
    return ",".join(f"{name.replace('_', '-')}={MODULE}:{cls}" for name, cls in engines.items())


# 1. Sessions with known call times ------------------------------------------------------------------------------


class SleepSession(Session):
    def __init__(self, call_s: float):
        self.call_s = call_s
        self.calls = 0
        self.executed_precision = "fp32"
        self.details = {}

    def prepare(self, batch):
        return batch

    def run(self, batch):
        self.calls += 1
        time.sleep(self.call_s)
        return np.zeros((batch.size, 4), dtype=np.float32)


@dataclass(frozen=True)
class SleepFactory:
    """Picklable: each worker process builds its own session. The worker that creates `slow_marker` first
    loads `slow_load_s` longer, so the workers reach the barrier at different times."""

    call_s: float
    slow_marker: str = ""
    slow_load_s: float = 0.0

    def __call__(self):
        if self.slow_marker:
            try:
                os.close(os.open(self.slow_marker, os.O_CREAT | os.O_EXCL))
                time.sleep(self.slow_load_s)
            except FileExistsError:
                pass
        return SleepSession(self.call_s)


class SleepDecoder(DecoderSession):
    """A decoder whose prefill takes `prefill_s` and each decode step `decode_s`, whatever the batch; its
    logits pick token (position + 1) so generations are deterministic."""

    vocab_size = 16

    def __init__(self, prefill_s: float, decode_s: float):
        self.prefill_s, self.decode_s = prefill_s, decode_s
        self.executed_precision = "fp32"
        self.details = {}

    def _logits(self, rows: int) -> np.ndarray:
        return np.tile(np.arange(self.vocab_size, dtype=np.float32), (rows, 1))

    def reset(self):
        pass

    def prefill(self, tokens):
        time.sleep(self.prefill_s)
        return self._logits(len(tokens))

    def decode(self, tokens):
        time.sleep(self.decode_s)
        return self._logits(len(tokens))


class SleepSlotDecoder(SleepDecoder, SlotDecoding):
    """The same, serving sequences in slots that join and leave between decode steps (continuous batching)."""

    def open_slots(self, slots):
        self.slots = slots

    def prefill_slot(self, slot, tokens):
        time.sleep(self.prefill_s)
        return self._logits(1)[0]

    def decode_slots(self, slots, tokens):
        time.sleep(self.decode_s)
        return self._logits(len(slots))

    def free_slot(self, slot):
        pass


@dataclass(frozen=True)
class SleepDecoderFactory:
    prefill_s: float
    decode_s: float
    continuous: bool = False

    def __call__(self):
        return (SleepSlotDecoder if self.continuous else SleepDecoder)(self.prefill_s, self.decode_s)


# 2. Engines with known speeds and known fidelity ----------------------------------------------------------------

HIDDEN = 384  # MiniLM's: the reference's shape


def embeddings(batch) -> np.ndarray:
    """What every faithful fake returns: a normalised bag of hashed tokens, a function of the token ids."""
    out = np.zeros((batch.size, HIDDEN))
    rows, cols = np.nonzero(batch.attention_mask)
    np.add.at(out, (rows, (batch.input_ids[rows, cols] * 2654435761) % HIDDEN), 1.0)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def call_seconds(engine: str, precision: str, mode: str, threads: int, batch: int, cores: int) -> float:
    """The known speed: base time per call, halved by mode=fast, 1.5× slower on fewer threads than cores."""
    base = BASE_MS[(engine, precision)] / 1000 * (1 + 0.25 * (batch - 1))
    return base * (0.5 if mode == "fast" else 1.0) * (1.0 if threads >= cores else 1.5)


BASE_MS = {("torch", "fp32"): 8.0, ("sentence-transformers", "fp32"): 10.0, ("syn", "fp32"): 6.0,
           ("syn", "int8"): 4.0, ("syn-wrong", "int8"): 0.5}
COSINE = {("syn", "int8"): 0.995, ("syn-wrong", "int8"): 0.6}  # the rest: exact


class _KnownSession(Session):
    def __init__(self, engine, precision, options):
        self.key = (engine, precision)
        self.call_s = call_seconds(engine, precision, getattr(options, "mode", "slow"), options.threads, 1,
                                   len(os.sched_getaffinity(0)))
        self.executed_precision = precision
        self.details = {}

    def prepare(self, batch):
        return batch

    def run(self, batch):
        time.sleep(self.call_s * (1 + 0.25 * (batch.size - 1)))
        exact = embeddings(batch)
        cosine = COSINE.get(self.key)
        if cosine is None:
            return exact
        # a unit vector at exactly `cosine` from the exact one, per row
        noise = np.random.default_rng(0).standard_normal(exact.shape)
        noise -= (noise * exact).sum(axis=1, keepdims=True) * exact
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return (cosine * exact + np.sqrt(1 - cosine ** 2) * noise).astype(np.float32)


@dataclass(frozen=True)
class SynOptions(EngineOptions):
    mode: str = field(default="slow", metadata={"choices": ("slow", "fast"), "tune": True})


def _known(engine_name, precisions, options=EngineOptions):
    class Syn(Engine):
        name = engine_name
        library = "numpy"
        requires = ("numpy",)
        extra = "test"
        formats = ()
        Options = options

        def load(self, model, precision, opts):
            return _KnownSession(engine_name, precision, opts)

    Syn.precisions = precisions
    Syn.__name__ = "Syn" + engine_name.title().replace("-", "")
    return Syn


TorchEngine = _known("torch", ("fp32",))
StEngine = _known("sentence-transformers", ("fp32",))
SynEngine = _known("syn", ("fp32", "int8"), SynOptions)
SynWrongEngine = _known("syn-wrong", ("int8",))

TUNE_PLUGINS = plugins(torch="TorchEngine", sentence_transformers="StEngine", syn="SynEngine",
                       syn_wrong="SynWrongEngine")


# 3. Engines that misbehave on purpose ---------------------------------------------------------------------------

BEHAVIOURS = ("ok", "wrong", "segfault", "hang", "hog", "raise", "flaky", "hang-load")


@dataclass(frozen=True)
class FaultOptions(EngineOptions):
    """ok (faithful calls of call_ms) | wrong (fast, random embeddings) | segfault (a real one: reads address 0) |
    hang | hog (allocates 64 MB per call, without bound) | raise | flaky (the first process to load it in
    ENGINEBENCH_TEST_FLAKY_DIR crashes, later ones are fine) | hang-load (every load hangs, each one counted as a
    file in ENGINEBENCH_TEST_FLAKY_DIR). Every other fault strikes after the fidelity call and the first warm-up
    calls. With ENGINEBENCH_TEST_CALLS_DIR set, each process writes the batch size of each call to a file there."""

    behaviour: str = field(default="ok", metadata={"choices": BEHAVIOURS})
    call_ms: float = 1.0


class FaultSession(Session):
    def __init__(self, behaviour: str, call_ms: float, hidden: int):
        self.behaviour = behaviour
        self.call_ms = call_ms
        self.hidden = hidden
        self.executed_precision = "fp32"
        self.details = {}
        self.calls = 0
        self.hoard = []

    def prepare(self, batch):
        return batch

    def run(self, batch):
        self.calls += 1
        if os.environ.get("ENGINEBENCH_TEST_CALLS_DIR"):
            with open(os.path.join(os.environ["ENGINEBENCH_TEST_CALLS_DIR"], f"calls-{os.getpid()}"), "a") as f:
                f.write(f"{batch.size}\n")
        if self.calls > 3:  # after the fidelity call and the first warm-up calls
            if self.behaviour == "segfault":
                ctypes.string_at(0)
            elif self.behaviour == "hang":
                time.sleep(3600)
            elif self.behaviour == "hog":
                self.hoard.append(np.ones(64 * 2**20 // 8))  # written, so resident
            elif self.behaviour == "raise":
                raise RuntimeError("engine exploded")
        time.sleep(self.call_ms / 1000)
        if self.behaviour == "wrong":
            out = np.random.default_rng(int(batch.input_ids.sum())).standard_normal((batch.size, self.hidden))
            return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
        return embeddings(batch)


class FaultEngine(Engine):
    name = "fault"
    library = "numpy"
    requires = ("numpy",)
    extra = "test"
    Options = FaultOptions

    def load(self, model, precision, options):
        if options.behaviour == "hang-load":
            folder = os.environ["ENGINEBENCH_TEST_FLAKY_DIR"]
            open(os.path.join(folder, f"load-{os.getpid()}"), "w").close()
            time.sleep(3600)
        if options.behaviour == "flaky":
            folder = os.environ["ENGINEBENCH_TEST_FLAKY_DIR"]
            try:
                os.close(os.open(os.path.join(folder, "crashed"), os.O_CREAT | os.O_EXCL))
                ctypes.string_at(0)  # the first load crashes the process
            except FileExistsError:
                pass
        return FaultSession(options.behaviour, options.call_ms, HIDDEN)


def _fixed(fake: str, behaviour: str):
    """fake-<name>: `fault` with one behaviour and no options of its own, for the command line's tests."""

    class Fixed(FaultEngine):
        name = f"fake-{fake}"
        formats = ()
        Options = EngineOptions

        def load(self, model, precision, options):
            return FaultSession(behaviour, 1.0, HIDDEN)

    Fixed.__name__ = f"Fake{fake.capitalize()}Engine"
    return Fixed


FakeWrongEngine = _fixed("wrong", "wrong")
FakeCrashEngine = _fixed("crash", "segfault")
FakeHangEngine = _fixed("hang", "hang")
FakeRaiseEngine = _fixed("raise", "raise")


class HangGraphEngine(Engine):
    """Loads ONNX graphs (so `blocks` runs it) but never finishes loading one."""

    name = "fake-hang-graph"
    library = "numpy"
    requires = ("numpy",)
    extra = "test"
    cuts_graph = True

    def load(self, model, precision, options):
        return FaultSession("hang", 1.0, HIDDEN)

    def load_onnx_graph(self, path, options):
        time.sleep(3600)


class CrashBlockEngine(Engine):
    """Loads ONNX graphs with ONNX Runtime (so `blocks` runs it); its `layer 1` block crashes its process (a
    segmentation fault) when timed: the second call on the same inputs (chaining the blocks calls each input once)."""

    name = "fake-crash-block"
    library = "onnxruntime"
    requires = ("onnxruntime",)
    extra = "test"
    cuts_graph = True
    crashes = "block2.onnx"  # embeddings, layer 0, layer 1: the third block's file

    def load(self, model, precision, options):
        raise NotImplementedError("fake-crash-block only times ONNX graphs")

    def load_onnx_graph(self, path, options):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        if os.path.basename(str(path)) != self.crashes:
            return lambda feeds: session.run(None, feeds)
        seen = set()

        def run(feeds):
            if id(feeds) in seen:
                ctypes.string_at(0)
            seen.add(id(feeds))
            return session.run(None, feeds)
        return run


# 4. An engine outside the package with single-operator kernels for `enginebench ops` -------------------------------


class SlightlyOffKernels(Kernels):
    """numpy's add, exact; matmul 0.1% off (the ops table must flag it); nothing else."""

    requires = ("numpy",)

    def prepare(self, op, arrays, precision):
        if precision != "fp32" or op not in ("add", "matmul"):
            raise Unsupported(f"fake-kernels has no {precision} {op}")
        if op == "add":
            return Prepared(lambda a: np.add(*a), tuple(arrays.values()), np.asarray, 4, "numpy.add")
        return Prepared(lambda a: np.matmul(*a) * np.float32(1.001), tuple(arrays.values()), np.asarray, 4,
                        "0.1% off")


class KernelsEngine(Engine):
    name = "fake-kernels"
    library = "numpy"
    requires = ("numpy",)
    extra = "test"
    op_kernels = SlightlyOffKernels

    def load(self, model, precision, options):
        raise NotImplementedError("fake-kernels only times operators")


class CrashOnSumKernels(SlightlyOffKernels):
    """fake-kernels' add and matmul; a row sum crashes its process (a segmentation fault)."""

    def prepare(self, op, arrays, precision):
        if op == "sum":
            ctypes.string_at(0)
        return super().prepare(op, arrays, precision)


class CrashingKernelsEngine(KernelsEngine):
    name = "fake-crashing-kernels"
    op_kernels = CrashOnSumKernels


OPS_PLUGINS = plugins(fake_kernels="KernelsEngine")
OPS_CRASH_PLUGINS = plugins(fake_crashing_kernels="CrashingKernelsEngine")
BLOCKS_CRASH_PLUGINS = plugins(fake_crash_block="CrashBlockEngine")
FAKE_TORCH = plugins(torch="TorchEngine")  # the fidelity reference in place of the real torch: exact, instant
FAULT_PLUGINS = plugins(fault="FaultEngine") + "," + FAKE_TORCH
CLI_PLUGINS = plugins(fake_wrong="FakeWrongEngine", fake_crash="FakeCrashEngine", fake_hang="FakeHangEngine",
                      fake_raise="FakeRaiseEngine")


def env(plugins: str = FAULT_PLUGINS, **extra) -> dict:
    """The environment an enginebench process needs to find these engines."""
    return {**os.environ, "PYTHONPATH": child_pythonpath(), "ENGINEBENCH_ENGINES": plugins, "COLUMNS": "200",
            **extra}
