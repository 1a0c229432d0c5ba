"""A run writing to a pipe or a log shows each finished cell at once on stderr: its figure with its interval
and the time left, one line per result delivered, before the run ends; stdout keeps the table alone."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from helpers.fake_engines import env
from helpers.measurements import measurement

from enginebench.execution.messages import Done, Loaded, Loading, Measured, Started

@pytest.mark.waits  # its first line must come while the run's later cells are still to measure
def test_each_finished_cell_is_a_line_on_stderr_while_the_run_goes_on(tmp_path):
    cmd = [sys.executable, "-m", "enginebench", "run", "--engine", "fault", "--workload", "titles", "--scenario",
           "latency", "--batch-size", "1,2,4", "--duration", "1s", "--warmup", "0.05s", "--min-samples", "3",
           "--repeat", "1", "-o", "fault.call_ms=1", "--db", str(tmp_path / "r.db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        first = proc.stderr.readline()
        while first and not first.startswith("["):  # what it expects to take comes before
            first = proc.stderr.readline()
        running = proc.poll() is None  # the first cell's line came while the others were still to measure
        out, rest = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert running, "the first line came only when the run had ended"
    lines = [first] + [line for line in rest.splitlines() if line.startswith("[")]
    assert len(lines) == 3
    pattern = r"\[(\d)/3 \d+:\d\d(, ~\d+:\d\d left)?\] fault fp32 latency titles b(\d): median latency [\d.]+ ms"
    found = [re.match(pattern, line) for line in lines]
    assert all(found), lines
    assert [m.group(1) for m in found] == ["1", "2", "3"]
    assert sorted(m.group(3) for m in found) == ["1", "2", "4"]
    assert found[0].group(2) and not found[2].group(2)  # the time left, until nothing is
    assert "(95% CI " in lines[0]
    assert "median latency" not in out


@pytest.mark.slow  # child processes that crash, hang or run twice: over 5 s, not in `make test-fast`
def test_a_run_says_first_how_long_it_expects_to_take_from_the_stored_load_times(tmp_path):
    cmd = [sys.executable, "-m", "enginebench", "run", "--engine", "fault", "--workload", "titles", "--scenario",
           "latency", "--batch-size", "1,2", "--duration", "0.5s", "--warmup", "0.1s", "--min-samples", "3",
           "--repeat", "2", "-o", "fault.call_ms=1", "--db", str(tmp_path / "r.db")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    lines = [done.stderr.splitlines()[0] for done in (first, again)]
    # 4 measurements of 0.6 s, a load per child (one engine, two rounds) and the fidelity reference's
    assert lines[0] == ("expected: about 32 s (4 measurements of 0.6 s, 3 model loads; never loaded with this "
                        "database: fault, counted at 10 s each, though a first load may export, convert or compile "
                        "the model for minutes (cached after))")
    m = re.fullmatch(r"expected: about (\d+) s \(4 measurements of 0.6 s, 3 model loads(, .* as stored runs of "
                     r"these engines took)?\)", lines[1])
    assert m and int(m.group(1)) < 15, lines[1]  # the fake engine loads at once: its stored time says so


@pytest.mark.slow  # child processes that crash, hang or run twice: over 5 s, not in `make test-fast`
def test_the_estimate_counts_what_stored_runs_of_the_same_jobs_spent_beyond_their_durations(tmp_path):
    """Calls of 300 ms under a 0.1 s duration and 3 samples: each cell takes over a second more than its
    warm-up + duration (a warm-up call, three timed calls, the fidelity inputs), as a decoder's cells do with
    their generations and fidelity checks. The first run cannot know it; the second counts what the first
    spent."""
    cmd = [sys.executable, "-m", "enginebench", "run", "--engine", "fault", "--workload", "titles", "--scenario",
           "latency", "--batch-size", "1,2", "--duration", "0.1s", "--warmup", "0.05s", "--min-samples", "3",
           "--repeat", "1", "-o", "fault.call_ms=300", "--db", str(tmp_path / "r.db")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "beyond the duration" not in first.stderr.splitlines()[0]
    line = again.stderr.splitlines()[0]
    m = re.fullmatch(r"expected: about .* \(2 measurements of 0.15 s, 2 model loads, (\d+) s of fidelity checks, "
                     r"compiles and calls beyond the duration, as stored runs of these engines took\)", line)
    assert m and int(m.group(1)) >= 2, line  # two cells, each four calls of 300 ms at least, less 0.15 s


def test_a_failed_cell_says_so_in_its_line(tmp_path):
    cmd = [sys.executable, "-m", "enginebench", "run", "--engine", "fault", "--workload", "titles", "--scenario",
           "latency", "--batch-size", "1", "--duration", "0.2s", "--warmup", "0.05s", "--min-samples", "3",
           "--repeat", "1", "-o", "fault.behaviour=segfault", "--db", str(tmp_path / "r.db")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("[1/1")]
    assert len(lines) == 1 and "fault fp32 latency titles b1: failed: " in lines[0], done.stderr


def test_a_long_load_says_what_it_prepared_and_how_long_it_took():
    import io

    from rich.console import Console

    from enginebench.cli.progress import cell_progress
    from enginebench.plan import Cell

    text = io.StringIO()
    bar = cell_progress(Console(file=text, width=80))
    cell = Cell("onnxruntime", "int8", "latency", "titles", 1, 1, 1)
    with bar.progress:
        bar.on_load(cell, None)
        assert bar.progress.tasks[0].description.endswith(
            ": loading (writes the model as an ONNX graph, cached after the first time)")
        bar.on_load(cell, 2.0)  # quick: no line
        bar.on_load(cell, 42.4)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]  # the bar leaves a blank line
    assert lines == ["  onnxruntime int8 loaded in 42 s (writes the model as an ONNX graph; cached after the first time)"]


def test_time_left_follows_the_plan_until_the_run_outlasts_it():
    """Seen on a fresh machine: the first cell (after the machine's ceilings and a load) made the average pace
    say 15 min left where the plan said 6 and 5:39 was true; the plan's estimate less the time spent is kept
    while the run is within it, the pace of the cells done once it is not."""
    import io

    from rich.console import Console

    from enginebench.cli.progress import cell_progress

    bar = cell_progress(Console(file=io.StringIO(), width=80), expected_s=372.0)
    bar.on_total(32)
    bar.done = 1
    assert bar.left_s(30.0) == 342.0  # not 30 × 31 = 930
    bar.done = 28
    assert bar.left_s(243.0) == 129.0  # a slow engine last: the plan knows, the average pace (35 s) does not
    bar.done = 30
    assert bar.left_s(400.0) == 400.0 / 30 * 2  # past the plan: the pace
    plain = cell_progress(Console(file=io.StringIO(), width=80))  # no plan (a sweep): the pace throughout
    plain.on_total(4)
    plain.done = 1
    assert plain.left_s(10.0) == 30.0


def test_the_orchestrator_reports_each_load_with_its_time(titles, minilm):

    from enginebench.execution.local import LocalLauncher
    from enginebench.measure.timing import StoppingRule
    from enginebench.plan import Cell, Plan

    cells = [Cell("onnxruntime", "fp32", "latency", "titles", b, 1, 1) for b in (1, 2)]
    orch = LocalLauncher(Plan(minilm, {"titles": titles}, cells, StoppingRule(duration_s=0, min_samples=1), {},
                             timeout_s=60))

    def child(job, timed_out):
        yield Started(0)
        yield Loading(0)
        time.sleep(0.2)
        yield Loaded(0)
        yield Measured(0, measurement())
        yield Started(1)
        yield Measured(1, measurement())
        yield Done()

    orch._child_messages, orch._references = child, lambda: None
    loads = []
    orch.on_load = lambda cell, seconds: loads.append((cell.batch_size, seconds))
    orch.run(lambda index, result: None)
    assert [b for b, _ in loads] == [1, 1] and loads[0][1] is None and 0.2 <= loads[1][1] < 5
