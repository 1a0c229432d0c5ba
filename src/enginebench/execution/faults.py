"""What can go wrong with a child process, named: why a cell failed (kind + reason) and the memory watchdog.

--max-memory is enforced from the parent, on the resident memory of the child and every process below it
(throughput workers). RLIMIT_AS is not used: JIT engines (JAX, tinygrad, torch.compile) reserve far more
address space than they ever touch, so a virtual-memory limit fails healthy engines and misses nothing the
watchdog misses. A cgroup would be exact but needs privileges this tool cannot assume. The watchdog reads
/proc every 0.1 s, so a child allocating faster than that can overshoot by what it touches in one
poll; shared libraries mapped by several workers are counted once per worker (resident set sizes, summed).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

KINDS = ("error", "signal", "exit", "timeout", "memory", "node", "skipped")  # engine raised | killed by a signal |
# exited | hung | --max-memory | its Ray node was lost twice | the cell cannot run there (stored as skipped)


@dataclass(frozen=True)
class Failure:
    """Why one attempt at a cell failed: `kind` (one of KINDS) for machines, `reason` for people."""

    reason: str
    kind: str = "error"
    details: dict | None = field(default=None, compare=False)  # a skipped cell's, for its result's details

    def to_dict(self) -> dict:
        """As a result's details.attempts entry has it."""
        return {"kind": self.kind, "error": self.reason}


def describe_exit(exitcode: int | None) -> Failure:
    """A dead child's exit code as a Failure (the signal's name, and what it usually means)."""
    if exitcode is None:
        return Failure("child process still running", "exit")
    if exitcode < 0:
        number = -exitcode
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        hint = " (usually the out-of-memory killer)" if number == signal.SIGKILL else ""
        hint = " (segmentation fault in the engine)" if number == signal.SIGSEGV else hint
        return Failure(f"child process killed by {name}{hint}", "signal")
    return Failure(f"child process exited with code {exitcode}", "exit")


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, MB (0 where /proc cannot say)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE_MB
        except (OSError, ValueError, IndexError):
            continue
        todo += _children(p)
    return total


def over_memory(pid: int, limit_mb: float | None) -> Failure | None:
    if not limit_mb:
        return None
    rss = tree_rss_mb(pid)
    if rss <= limit_mb:
        return None
    return Failure(f"exceeded --max-memory {limit_mb:g} MB (resident {rss:.0f} MB in the child and its workers); "
                   "raise --max-memory if the engine needs it", "memory")


__all__ = ["Failure", "KINDS", "describe_exit", "tree_rss_mb", "over_memory"]
