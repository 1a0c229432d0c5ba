"""Where cells run, and the process that measures them. A launcher takes a Plan (and what is already stored of its cells) and emits each cell's
Result as it is measured: `launcher.run(emit)`, `emit(index, result)`.

- child.py — the measuring process: loads the engine, runs each cell's scenario, sends raw Measurements back.
- local.py — child processes on this machine (LocalLauncher): isolation, timeouts, --max-memory, retries.
- faults.py — why an attempt failed (error, signal, exit, timeout, memory) and the memory watchdog.
- records.py — a cell's stored history (measured repetitions, failed attempts), read back to resume.

- ray.py — the same Plan in and emit calls out, each job a Ray task holding a whole node, run there by local.py's
  code (--ray ADDRESS | local); imported only when asked for, since Ray is an optional extra.
"""

from enginebench.execution.faults import Failure
from enginebench.execution.local import LocalLauncher
from enginebench.execution.records import CellHistory, history_of

__all__ = ["LocalLauncher", "Failure", "CellHistory", "history_of"]
