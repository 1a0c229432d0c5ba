"""How much of this process's CPUs other processes used while it measured something. A ceiling measured beside
other work (`enginebench machine`, or the first run on a machine) is low, and every share of it reads high (on
a 2-core EPYC the kept triad figure, measured during a test session, was 18.3 GB/s; 22.9 with the host idle).
The figure is other processes' CPU time over the wall time, counted from /proc/stat on the CPUs this process
may use; None where the kernel does not say."""

from __future__ import annotations

import os
import resource
import time

BUSY_CORES = 0.25  # other processes' average use, in cores, above which a measurement was not alone


def _cpus_busy_s() -> float | None:
    """Seconds the CPUs this process may use have spent busy since boot (every process's time)."""
    allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or (allowed is not None and name not in allowed):
                    continue
                values = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(values) - values[3] - values[4]
    except (OSError, ValueError, IndexError):
        return None
    return total / tick


def _own_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OthersLoad:
    """`with OthersLoad() as load: ...`, then `load.cores`: the cores other processes kept busy on average."""

    cores: float | None = None

    def __enter__(self) -> "OthersLoad":
        self._start = (time.monotonic(), _cpus_busy_s(), _own_s())
        return self

    def __exit__(self, *exc) -> None:
        wall0, busy0, own0 = self._start
        busy1, wall = _cpus_busy_s(), time.monotonic() - wall0
        if busy0 is None or busy1 is None or wall <= 0:
            return
        self.cores = max(0.0, (busy1 - busy0) - (_own_s() - own0)) / wall


def busy_cores(speed: dict | None) -> float | None:
    """The cores other processes kept busy while these ceilings were measured, where over BUSY_CORES: from a
    stored `enginebench machine` row (details.others_cores) or the copy a run's results carry (others_cores)."""
    speed = speed or {}
    cores = speed.get("others_cores", (speed.get("details") or {}).get("others_cores"))
    return cores if cores is not None and cores > BUSY_CORES else None


def busy_note(speed: dict | None) -> str:
    """What a reader of a figure over these ceilings must know when they were measured beside other work; ""
    when they were not (or it is not known)."""
    cores = busy_cores(speed)
    if cores is None:
        return ""
    return (f"the ceilings were measured while other processes kept {cores:.1f} cores busy: they may be low and "
            "every share of them high; `enginebench machine` on a quiet machine measures them again")


__all__ = ["BUSY_CORES", "OthersLoad", "busy_cores", "busy_note"]
