"""The orchestrator's bookkeeping when a child dies, driven by scripted child messages (no real processes)."""


from helpers.measurements import measurement

from enginebench.execution.local import LocalLauncher
from enginebench.execution.messages import Died, Done, Measured, Started
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Plan


def _orchestrator(titles, minilm, scripts):
    """An orchestrator whose children 'send' the scripted messages, one script per child started."""
    cells = [Cell("onnxruntime", "fp32", "latency", "titles", b, 1, 1) for b in (1, 2, 4)]
    plan = Plan(minilm, {"titles": titles}, cells, StoppingRule(duration_s=0, min_samples=1), {}, timeout_s=60)
    orch = LocalLauncher(plan)
    started = []

    def fake_child_messages(job, timed_out):
        started.append([index for index, _ in job.cells])
        yield from scripts[len(started) - 1]

    orch._child_messages = fake_child_messages
    orch._references = lambda: None
    return orch, started


def test_a_child_dying_after_its_last_result_loses_nothing(titles, minilm):
    script = [Started(0), Measured(0, measurement()), Started(1), Measured(1, measurement()),
              Started(2), Measured(2, measurement()), Died("child process killed by SIGABRT")]
    orch, started = _orchestrator(titles, minilm, [script])
    results = []
    orch.run(lambda index, result: results.append(result))
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert started == [[0, 1, 2]]  # no second child was needed


def test_a_crash_costs_the_running_cell_and_a_fresh_child_takes_the_rest(titles, minilm):
    first = [Started(0), Measured(0, measurement()), Started(1), Died("child process killed by SIGSEGV")]
    second = [Started(2), Measured(2, measurement()), Done()]
    orch, started = _orchestrator(titles, minilm, [first, second])
    results = []
    orch.run(lambda index, result: results.append(result))
    assert [(r.batch_size, r.status) for r in results] == [(1, "ok"), (2, "failed"), (4, "ok")]
    assert "SIGSEGV" in results[1].error
    assert started == [[0, 1, 2], [2]]


def test_a_child_dying_before_it_starts_a_cell_fails_the_next_pending_one(titles, minilm):
    scripts = [[Died("child process exited with code 1")], [Started(1), Measured(1, measurement()),
                                                                  Started(2), Measured(2, measurement()), Done()]]
    orch, started = _orchestrator(titles, minilm, scripts)
    results = []
    orch.run(lambda index, result: results.append(result))
    assert [(r.batch_size, r.status) for r in results] == [(1, "failed"), (2, "ok"), (4, "ok")]
    assert started == [[0, 1, 2], [1, 2]]
