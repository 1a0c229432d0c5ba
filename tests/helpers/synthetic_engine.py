"""A synthetic session with known call times (sleeps), to test the clock, the stopping rule and the workers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from enginebench.engines.base import DecoderSession, Session, SlotDecoding


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
