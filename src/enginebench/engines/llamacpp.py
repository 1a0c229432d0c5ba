"""llama.cpp through llama-cpp-python's low-level API: Llama-family decoders from GGUF files.

Precision names (ours -> llama.cpp file type):
  fp32 -> ALL_F32, fp16 -> MOSTLY_F16 (both written from the reference folder by models/gguf_llama.py);
  q8_0, q6_k, q4_k_m, q4_0, q3_k_m, q2_k -> MOSTLY_<NAME> (made by llama.cpp's own quantizer from the fp32
  file, or from the fp16 file when the reference is float16);
  native -> the model's original GGUF file as shipped (smollm2-135m: Q4_1); executed_precision names its type.
In k-quant files llama.cpp picks some tensors' types itself (e.g. q6_k output, q4_k_m mixes in q6_k).

Every file is a cached artifact keyed by the reference's content hash, the precision, the converter version
and the llama-cpp-python and gguf versions.

Batches: each row is its own sequence (seq_id) in one llama_batch, so a batch of B prompts is one
llama_decode call; the context holds `max_batch` sequences of n_ctx tokens each, and a larger batch rebuilds
it once (during the scenario's warm-up). forward_logits (fidelity) runs row by row on sequence 0, and the
fidelity's cached-loop check streams one prompt at a time, so neither resizes the context the timed calls use.

A timed prefill()/decode() is one `_feed`: per chunk of n_batch tokens, fill the llama_batch from the numpy
ids, llama_decode, copy the kept logits out. The host-side part (filling and copying) is numpy writes into
views of the batch's arrays, with what depends only on the input's shape written once per shape: a few
microseconds a call, where a Python loop over the tokens (as llama-cpp-python's LlamaBatch.set_batch has)
cost ~1 us a token (0.23 ms in a 240-token prefill). `host_side()` times that part alone on the same inputs,
so the generate scenario records its share of the call.
"""

from __future__ import annotations

import ctypes
import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from enginebench.engines.base import DecoderSession, Engine, EngineOptions, SlotDecoding
from enginebench.errors import UsageError
from enginebench.models.artifacts import artifact_key, cached_artifact
from enginebench.models.gguf_llama import CONVERTER_VERSION, hf_to_gguf
from enginebench.models.spec import ModelSpec

GGUF_FILE = "model.gguf"
_WRITTEN = {"fp32": "f32", "fp16": "f16"}  # written by gguf_llama.hf_to_gguf
_QUANTIZED = {  # made by llama_model_quantize
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M", "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}
NATIVE = "native"


@dataclass(frozen=True)
class LlamaCppOptions(EngineOptions):
    # tokens per sequence (prompt + generated); capped at the model's max positions
    n_ctx: int = field(default=2048, metadata={"min": 1})
    # tokens per llama_decode call (longer inputs are fed in chunks)
    n_batch: int = field(default=512, metadata={"min": 1})
    # sequences the context is sized for; a larger batch rebuilds the context once
    max_batch: int = field(default=1, metadata={"min": 1})
    # llama.cpp's extra weight buffer types (AMX tiles, repacked quantized blocks); auto: all but on a build
    # with AMX_INT8, whose AMX matmul segfaults on quantized models (see amx_extra_buffers_crash)
    extra_buffers: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})


AMX_CRASH = ("llama.cpp's AMX buffer type segfaults in ggml_backend_amx_mul_mat on quantized weights "
             "(ggml-org/llama.cpp#20824; seen on a Xeon with AMX-INT8, llama-cpp-python 0.3.36: SmolLM2 Q8_0 and "
             "the tiny Llama q8_0/q4_0): extra buffer types off, -o llamacpp.extra_buffers=on to try them")


def extra_buffers_decision(setting: str, system_info: str) -> tuple[bool, str]:
    """(use llama.cpp's extra buffer types, why), from the option and the build's own report of its CPU
    features (llama_print_system_info): the build, not the CPU flags, decides whether the AMX path exists."""
    if setting != "auto":
        return setting == "on", f"-o llamacpp.extra_buffers={setting}"
    if "AMX_INT8 = 1" in system_info:
        return False, AMX_CRASH
    return True, "auto: this build has no AMX path"


def _silence_llama_logs() -> None:
    import logging

    try:
        import llama_cpp._logger as llama_logger  # llama-cpp-python routes llama.cpp's log through it

        llama_logger.logger.setLevel(logging.CRITICAL)
    except ImportError:
        pass


def gguf_file(model: ModelSpec, precision: str, threads: int = 1) -> tuple[Path, dict]:
    """The cached GGUF file of `model` at `precision` (written or quantized on first use) and facts about it."""
    if precision == NATIVE:
        if not model.gguf_path:
            raise UsageError(f"llamacpp precision 'native' needs a model that came as a GGUF file; {model.name} "
                             "did not: use fp32, fp16 or a quantized type")
        return Path(model.gguf_path), {"gguf_path": model.gguf_path, "gguf_cached": True}
    key = artifact_key(model.content_hash, precision, CONVERTER_VERSION, metadata.version("llama_cpp_python"),
                       metadata.version("gguf"))
    started = time.perf_counter()
    if precision in _WRITTEN:
        def build(out: Path) -> None:
            hf_to_gguf(Path(model.path), out / GGUF_FILE, _WRITTEN[precision])
    elif precision in _QUANTIZED:
        def build(out: Path) -> None:  # the source file is made (or found) only when this file is missing
            source, _ = gguf_file(model, _reference_precision(model), threads)
            _quantize(source, out / GGUF_FILE, _QUANTIZED[precision], threads)
    else:
        raise UsageError(f"llamacpp has no precision {precision!r}")
    folder, cached = cached_artifact("gguf", key, build)
    path = folder / GGUF_FILE
    return path, {"gguf_path": str(path), "gguf_cached": cached, "gguf_build_s": round(time.perf_counter() - started, 3)}


def _reference_precision(model: ModelSpec) -> str:
    config = json.loads((Path(model.path) / "config.json").read_text())
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    return "fp32" if dtype == "float32" else "fp16"  # an f16/bf16 reference is quantized from an f16 file


def _quantize(source: Path, out: Path, ftype_name: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = max(1, threads)
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source.name} to {ftype_name} (status {status})")


def file_type_name(path: Path) -> str:
    """The GGUF's general.file_type as a precision name, e.g. 'q4_1'."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    name = gguf.LlamaFileType(int(field.contents())).name  # MOSTLY_Q4_1, ALL_F32, ...
    return {"ALL_F32": "fp32", "MOSTLY_F16": "fp16"}.get(name, name.removeprefix("MOSTLY_").lower())


class LlamaCppSession(DecoderSession, SlotDecoding):
    #: what a timed call runs (recorded with each generate result)
    timed_calls = {
        "prefill": "llama_decode of the prompt batch (chunks of n_batch tokens), including filling the llama_batch "
                   "from the numpy ids and copying the last position's logits out (Python, numpy); the cache "
                   "clear (reset) is outside",
        "decode": "llama_decode of one token per sequence, including filling the llama_batch and copying the "
                  "logits out (Python, numpy)",
    }

    def __init__(self, path: Path, precision: str, options: LlamaCppOptions, max_positions: int, details: dict):
        import llama_cpp

        self._lc = llama_cpp
        self._options = options
        llama_cpp.llama_backend_init()
        system_info = llama_cpp.llama_print_system_info().decode().strip()
        extra_buffers, extra_why = extra_buffers_decision(options.extra_buffers, system_info)
        params = llama_cpp.llama_model_default_params()
        params.use_extra_bufts = extra_buffers
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model))
        self._n_ctx = min(options.n_ctx, max_positions)
        self._ctx = None
        self._batch = None
        self._open_context(max(1, options.max_batch))
        self.executed_precision = file_type_name(path)
        self.details = {**details, "requested_precision": precision, "n_ctx": self._n_ctx, "n_batch": options.n_batch,
                        "weight_bytes": path.stat().st_size,
                        "system_info": system_info,
                        "extra_buffers": {"used": extra_buffers, "why": extra_why},
                        "threads_used": int(llama_cpp.llama_n_threads(self._ctx))}  # read back from the context
        self.reset()

    def _open_context(self, n_seq: int) -> None:
        lc = self._lc
        self._close_context()
        params = lc.llama_context_default_params()
        params.n_seq_max = n_seq
        params.n_ctx = self._n_ctx * n_seq
        params.n_batch = params.n_ubatch = self._options.n_batch
        params.n_threads = params.n_threads_batch = self._options.threads
        params.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context (out of memory?)")
        self._batch = lc.llama_batch_init(self._options.n_batch, 0, n_seq)
        size = self._options.n_batch
        self._token_view = np.ctypeslib.as_array(self._batch.token, shape=(size,))
        self._pos_view = np.ctypeslib.as_array(self._batch.pos, shape=(size,))
        self._n_seq_id_view = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(size,))
        self._logits_view = np.ctypeslib.as_array(self._batch.logits, shape=(size,))
        self._layouts: dict[tuple, tuple] = {}
        self._written_layout = None  # the layout whose seq_id / n_seq_id / logits flags the batch holds now
        self._seq_written = np.full(size, -1, dtype=np.int64)  # each slot's seq_id[j][0]; -1: not written yet
        self._n_seq = n_seq
        self._positions = np.zeros(n_seq, dtype=np.int64)

    def _close_context(self) -> None:
        if self._batch is not None:
            self._lc.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            self._lc.llama_free(self._ctx)
            self._ctx = None

    def reset(self) -> None:
        self._lc.llama_memory_clear(self._lc.llama_get_memory(self._ctx), True)
        self._positions[:] = 0

    def _feed(self, tokens: np.ndarray, want: str) -> np.ndarray:
        """Append tokens [batch, n] to sequences 0..batch-1; logits of the last ("last") or every ("all") position.

        Per chunk of n_batch tokens: fill the llama_batch (host side, _fill), llama_decode, copy the logits out
        (host side, _read). This whole method is what a timed prefill()/decode() runs."""
        tokens = np.asarray(tokens)
        rows, n = tokens.shape
        if rows > self._n_seq:
            self._open_context(rows)  # a new batch size: the context is rebuilt (a one-off cost, see module doc)
        if int(self._positions[:rows].max()) + n > self._n_ctx:
            raise RuntimeError(f"llama.cpp context of {self._n_ctx} tokens is full: raise --option llamacpp.n_ctx")
        out = np.empty((rows, n if want == "all" else 1, self.vocab_size), dtype=np.float32)
        total = rows * n
        for start in range(0, total, self._options.n_batch):
            outputs = self._fill(tokens, start, want)
            status = self._lc.llama_decode(self._ctx, self._batch)
            if status != 0:
                raise RuntimeError(f"llama_decode failed (status {status})")
            self._read(out, outputs, want)
        self._positions[:rows] += n
        return out

    def _layout(self, rows: int, n: int, start: int, want: str) -> tuple:
        """Where each slot of the chunk from flat index `start` goes (sequence, position, keeps logits?), per
        input shape: computed once, then reused by every call of that shape."""
        key = (rows, n, start, want)
        layout = self._layouts.get(key)
        if layout is None:
            flat = np.arange(start, min(start + self._options.n_batch, rows * n))
            seq, pos = np.divmod(flat, n)
            keep = np.ones(len(flat), dtype=bool) if want == "all" else pos == n - 1
            layout = self._layouts[key] = (key, len(flat), seq, pos, keep.astype(np.int8), seq[keep], pos[keep])
        return layout

    def _fill(self, tokens: np.ndarray, start: int, want: str) -> tuple:
        """Write the chunk of flattened (sequence, position) pairs from `start` into the llama_batch through numpy
        views of its arrays: no Python loop per token (llama-cpp-python's own LlamaBatch.set_batch has one). What
        depends only on the input's shape (seq_id, n_seq_id, the logits flags) is written only when the shape
        differs from the previous call's; the token ids and positions are written every call."""
        rows, n = tokens.shape
        key, count, seq, pos, keep, out_seq, out_pos = self._layout(rows, n, start, want)
        if n == 1 and count <= 8:  # a decode step of a few sequences: scalar writes beat numpy's call overhead
            batch, positions = self._batch, self._positions
            for j in range(count):
                batch.token[j] = int(tokens[j, 0])
                batch.pos[j] = int(positions[j])
        elif rows == 1:
            self._token_view[:count] = tokens[0, pos[0]:pos[0] + count]
            self._pos_view[:count] = pos + self._positions[0]
        else:
            self._token_view[:count] = tokens[seq, pos]
            self._pos_view[:count] = self._positions[seq] + pos
        if self._written_layout != key:
            self._n_seq_id_view[:count] = 1
            self._logits_view[:count] = keep
            changed = np.flatnonzero(self._seq_written[:count] != seq)
            for j in changed.tolist():  # seq_id is an array of pointers (no numpy view): only the slots that change
                self._batch.seq_id[j][0] = int(seq[j])
            self._seq_written[changed] = seq[changed]
            self._written_layout = key
        self._batch.n_tokens = count
        return out_seq, out_pos

    def _read(self, out: np.ndarray, outputs: tuple, want: str) -> None:
        """Copy the logits of the last llama_decode (stored contiguously, in batch order) into `out`."""
        out_seq, out_pos = outputs
        if not len(out_seq):  # a chunk of a long input holding no kept position
            return
        size = len(out_seq) * self.vocab_size
        pointer = self._lc.llama_get_logits(self._ctx)
        block = np.frombuffer((ctypes.c_float * size).from_address(ctypes.addressof(pointer.contents)), np.float32)
        out[out_seq, out_pos if want == "all" else 0] = block.reshape(len(out_seq), self.vocab_size)

    def host_side(self, tokens: np.ndarray, call: str, repeats: int = 7) -> dict | None:
        """The host-side share of a timed prefill()/decode() on these tokens: the same batch filling and logits
        copy, without llama_decode (after one real call, so the logits buffer holds outputs of that layout)."""
        if call not in ("prefill", "decode"):
            return None
        tokens = np.asarray(tokens)
        rows, n = tokens.shape
        self.reset()
        self._feed(tokens, "last")
        samples = []
        out = np.empty((rows, 1, self.vocab_size), dtype=np.float32)
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for start in range(0, rows * n, self._options.n_batch):
                outputs = self._fill(tokens, start, "last")
            self._read(out, outputs, "last")
            samples.append(time.perf_counter_ns() - t0)
        self._batch.n_tokens = 0
        self.reset()
        return {"what": "llama_batch filling (numpy writes into its arrays) and the logits copy (llama_get_logits), "
                        "in Python around llama_decode", "samples_ns": samples, "inside_timed_call": True}

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        return self._feed(tokens, "last")[:, 0]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self._feed(tokens, "last")[:, 0]

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        # row by row on sequence 0: fidelity checks never resize the context the timed calls use
        rows = []
        for row in np.asarray(tokens):
            self.reset()
            rows.append(self._feed(row[None, :], "all")[0])
        self.reset()
        return np.stack(rows)

    # -- continuous batching (the decoder server scenario): each slot is a sequence id of the one context ------
    def open_slots(self, slots: int) -> None:
        if slots > self._n_seq:
            self._open_context(slots)
        self.reset()

    def prefill_slot(self, slot: int, tokens: np.ndarray) -> np.ndarray:
        self.free_slot(slot)
        tokens = np.asarray(tokens).reshape(-1)
        n = len(tokens)
        if n > self._n_ctx:
            raise RuntimeError(f"llama.cpp context of {self._n_ctx} tokens is full: raise --option llamacpp.n_ctx")
        out = np.empty((1, self.vocab_size), dtype=np.float32)
        for start in range(0, n, self._options.n_batch):
            chunk = tokens[start:start + self._options.n_batch]
            last = start + len(chunk) == n
            self._write_slots(np.full(len(chunk), slot), chunk, np.arange(start, start + len(chunk)),
                              keep_last_only=True, keep=last)
            self._decode_batch()
            if last:
                self._read(out[:, None], (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)), "last")
        self._positions[slot] = n
        return out[0]

    def decode_slots(self, slots: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        slots = np.asarray(slots, dtype=np.int64)
        positions = self._positions[slots]
        if int(positions.max()) + 1 > self._n_ctx:
            raise RuntimeError(f"llama.cpp context of {self._n_ctx} tokens is full: raise --option llamacpp.n_ctx")
        self._write_slots(slots, np.asarray(tokens).reshape(-1), positions, keep_last_only=False, keep=True)
        self._decode_batch()
        out = np.empty((len(slots), 1, self.vocab_size), dtype=np.float32)
        self._read(out, (np.arange(len(slots)), np.zeros(len(slots), dtype=np.int64)), "last")
        self._positions[slots] += 1
        return out[:, 0]

    def free_slot(self, slot: int) -> None:
        self._lc.llama_memory_seq_rm(self._lc.llama_get_memory(self._ctx), int(slot), -1, -1)
        self._positions[slot] = 0

    def _write_slots(self, seqs: np.ndarray, tokens: np.ndarray, positions: np.ndarray, keep_last_only: bool,
                     keep: bool) -> None:
        """Fill the llama_batch with (sequence, token, position) triples; logits for every one, for the last one
        only, or (keep False) for none. The layout cache of _fill is invalidated: this writes seq ids itself."""
        count = len(tokens)
        self._token_view[:count] = tokens
        self._pos_view[:count] = positions
        self._n_seq_id_view[:count] = 1
        flags = np.zeros(count, dtype=np.int8)
        if keep:
            flags[-1 if keep_last_only else slice(None)] = 1
        self._logits_view[:count] = flags
        changed = np.flatnonzero(self._seq_written[:count] != seqs)
        for j in changed.tolist():
            self._batch.seq_id[j][0] = int(seqs[j])
        self._seq_written[changed] = seqs[changed]
        self._written_layout = None
        self._batch.n_tokens = count

    def _decode_batch(self) -> None:
        status = self._lc.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed (status {status})")

    def close(self) -> None:
        self._close_context()
        if self._model:
            self._lc.llama_model_free(self._model)
            self._model = None


class LlamaCppEngine(Engine):
    name = "llamacpp"
    prepares = "converts the model to GGUF"
    library = "llama_cpp_python"
    requires = ("llama_cpp", "gguf")
    extra = "llamacpp"
    precisions = ("fp32", "fp16", *_QUANTIZED, NATIVE)
    formats = ("gguf",)
    Options = LlamaCppOptions
    model_kinds = ("decoder",)

    @classmethod
    def why_not(cls, model: ModelSpec, precision: str, options: dict[str, str] | None = None) -> str | None:
        if model.kind != "decoder":
            return f"llamacpp runs decoders (LLMs); {model.name} is an {model.kind}"
        if model.architecture != "llama":
            return f"llamacpp here converts Llama-family decoders only; {model.name} is {model.architecture}"
        if precision == NATIVE and not model.gguf_path:
            return f"{model.name} did not come as a GGUF file, so it has no native llama.cpp precision"
        return cls.why_not_precision(precision)

    def load(self, model: ModelSpec, precision: str, options: LlamaCppOptions) -> LlamaCppSession:
        reason = self.why_not(model, precision)
        if reason:
            raise UsageError(reason)
        _silence_llama_logs()
        path, details = gguf_file(model, precision, options.threads)
        return LlamaCppSession(path, precision, options, model.max_positions, details)
