"""Real engine sessions for the engine tests: load one as the measuring processes do, embed a batch with it."""

from __future__ import annotations

from enginebench.engines import require_engine
from enginebench.engines.base import DecoderSession


def embed(session, batch):
    """Sentence embeddings of one TokenBatch through an encoder session."""
    return session.run(session.prepare(batch))


def load_session(engine: str, model, precision: str = "fp32", threads: int = 2, **options):
    cls = require_engine(engine)
    return cls().load(model, precision, cls.make_options(threads, {k: str(v) for k, v in options.items()}))


class WrappedDecoder(DecoderSession):
    """A real decoder session passed through call by call: tests subclass it to break one call on purpose (a KV
    cache that forgets, a position that never advances) and leave the rest intact."""

    def __init__(self, inner, fault: str | None = None):
        self.inner, self.fault = inner, fault
        self.vocab_size, self.details, self.executed_precision = inner.vocab_size, {}, inner.executed_precision

    def reset(self):
        self.inner.reset()

    def prefill(self, tokens):
        return self.inner.prefill(tokens)

    def decode(self, tokens):
        return self.inner.decode(tokens)

    def forward_logits(self, tokens):
        return self.inner.forward_logits(tokens)
