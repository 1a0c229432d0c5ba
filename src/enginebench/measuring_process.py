"""What every measuring process does to itself before it loads an engine: cap the libraries' thread pools (and
the kernels of a narrowed CPU), die with the process that started it, and silence library logs that do not
concern a CPU benchmark. Used by the cell's child (execution/child.py), the one process that measures every cell (a
model's, an operator's in scenarios/ops, a block's in scenarios/blocks.py), and by the worker processes it starts."""

from __future__ import annotations

import os

from enginebench.measure import cpu_features

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTEROP_THREADS")


def limit_threads(threads: int) -> None:
    """Set what the libraries read when they load: their thread pools, and the kernel caps of a narrowed CPU
    (ENGINEBENCH_CPU_FEATURES). Call before any engine library is imported."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    cpu_features.apply_kernel_caps()


# Libraries that log, in every measuring process, what does not concern a CPU benchmark: torchao (imported by
# transformers whenever it is installed) about its CUDA-only extensions, torch's pytree about deprecations.
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_library_logs() -> None:
    import logging

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def die_with_parent() -> None:
    """Be killed when the process that started this one dies (Linux's PR_SET_PDEATHSIG): an orchestrator
    ended by `kill -9` or a closed terminal leaves no child measuring on, unseen, beside the resumed sweep."""
    import ctypes
    import multiprocessing
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own clean-up is all there is
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the line above
        os._exit(1)


__all__ = ["limit_threads", "die_with_parent", "quiet_library_logs"]
