"""Peak resident memory of this process, resettable between cells (Linux's VmHWM via clear_refs); the memory the
machine has available (engines refuse a model that would not fit)."""

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


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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
