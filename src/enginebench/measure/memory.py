"""Peak resident memory of this process, resettable between cells (Linux's VmHWM via clear_refs)."""

from __future__ import annotations

import resource


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark so the next reading covers only what follows. False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available_memory_bytes() -> int | None:
    """The kernel's estimate of memory available to a new process without swapping (MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_shortfall(engine: str, what: str, model: str, need_bytes: float) -> str | None:
    """Why `need_bytes` for `what` would not fit in the memory available now (a 7B model in fp32 would get this
    process, or a neighbour, killed by the out-of-memory killer), or None when it fits or cannot be told."""
    available = available_memory_bytes()
    if available is None or need_bytes <= available:
        return None
    return (f"{engine} {what} needs ~{need_bytes / 2**30:.1f} GiB for {model}, more than the "
            f"{available / 2**30:.1f} GiB available")


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_peak_window(details: dict) -> None:
    """Reset the high-water mark before a cell's warm-up (every scenario the same way); when the kernel refuses,
    say so in the result instead of reporting a peak that silently includes the model's load."""
    if not reset_peak_rss():
        details["peak_rss_reset"] = False
        details.setdefault("notes", []).append(
            "peak RSS could not be reset (/proc/self/clear_refs): it includes the model's load")
