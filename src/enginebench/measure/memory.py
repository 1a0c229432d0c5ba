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


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
