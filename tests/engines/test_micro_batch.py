"""`-o ENGINE.micro_batch=N`: an encoder's call of B items runs as consecutive runs of at most N, each prepared
before timing, and answers the same B items in order (engines/base.py MicroBatched)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.sessions import embed, load_session
from enginebench.engines.base import MicroBatched, Session, micro_batched
from enginebench.engines import engine_class


class Spy(Session):
    """A real session passed through, recording the size of every batch it prepares and each run."""

    def __init__(self, inner):
        self.inner, self.details, self.executed_precision = inner, inner.details, inner.executed_precision
        self.prepared, self.runs = [], 0

    def prepare(self, batch):
        self.prepared.append(batch.size)
        return self.inner.prepare(batch)

    def run(self, prepared):
        self.runs += 1
        return self.inner.run(prepared)


def test_a_call_runs_as_runs_of_at_most_n_items_and_answers_the_same_items_in_order(minilm, corpus):
    whole = load_session("onnxruntime", minilm)
    options = engine_class("onnxruntime").make_options(2, {"micro_batch": "2"})
    spy = Spy(whole)
    split = micro_batched(spy, options)
    assert isinstance(split, MicroBatched) and split.details is whole.details
    batch = corpus.batch(0, 5)
    prepared = split.prepare(batch)
    assert spy.prepared == [2, 2, 1] and spy.runs == 0  # every part prepared before the (timed) call
    out = split.run(prepared)
    assert spy.runs == 3 and out.shape == (5, 384)
    np.testing.assert_allclose(out, embed(whole, batch), rtol=1e-4, atol=1e-5)
    # rows stay in order: each part's embeddings are those of its own rows
    np.testing.assert_allclose(out[4:], embed(whole, batch.take([4])), rtol=1e-4, atol=1e-5)
    assert split.computed_positions(batch) == whole.computed_positions(batch)
    # a batch no larger than N runs whole; without the option the session is returned as it came
    spy.prepared.clear()
    split.run(split.prepare(corpus.batch(0, 2)))
    assert spy.prepared == [2]
    assert micro_batched(whole, engine_class("onnxruntime").make_options(2, {})) is whole


class ReusesItsBuffer(Session):
    """An engine whose run returns a view of one output buffer that its next run overwrites (OpenVINO's output
    tensor, before its session copied it): each row's embedding is its first input id."""

    def __init__(self):
        self.buffer, self.details = np.zeros((4, 3), np.float32), {}

    def prepare(self, batch):
        return batch.input_ids[:, 0].copy()

    def run(self, ids):
        self.buffer[:len(ids)] = ids[:, None]
        return self.buffer[:len(ids)]


def test_each_parts_output_is_kept_before_the_next_run_overwrites_it(corpus):
    batch = corpus.batch(0, 6)
    split = MicroBatched(ReusesItsBuffer(), 4)
    out = split.run(split.prepare(batch))
    np.testing.assert_array_equal(out[:, 0], batch.input_ids[:, 0])


@pytest.mark.parametrize("value, fragment", [("-1", "at least 0"), ("eight", "whole number")])
def test_a_bad_micro_batch_names_the_option(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        engine_class("openvino").make_options(2, {"micro_batch": value})
