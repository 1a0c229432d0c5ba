"""Real engine sessions for the engine tests: load one as the measuring processes do, embed a batch with it."""

from __future__ import annotations

from enginebench.engines import require_engine


def embed(session, batch):
    """Sentence embeddings of one TokenBatch through an encoder session."""
    return session.run(session.prepare(batch))


def load_session(engine: str, model, precision: str = "fp32", threads: int = 2, **options):
    cls = require_engine(engine)
    return cls().load(model, precision, cls.make_options(threads, {k: str(v) for k, v in options.items()}))
