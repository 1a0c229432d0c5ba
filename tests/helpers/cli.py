"""The command line in a child process, as a user meets it: real exit codes, real output, real database."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

from helpers.fake_engines import CLI_PLUGINS
from helpers.fake_engines import env as fake_env

FAST = ["--duration", "0.2", "--min-samples", "3", "--warmup", "0.05", "--repeat", "1"]


def enginebench(*args, env=None, timeout=300, plugins=CLI_PLUGINS):
    """`enginebench ARGS` in a child process that finds the fake engines (with FAKE_TORCH in `plugins`, a fake
    torch is the fidelity reference)."""
    return subprocess.run([sys.executable, "-m", "enginebench", *args], capture_output=True, text=True,
                          env=fake_env(plugins, **(env or {})), timeout=timeout)


def enginebench_here(*args, env=None, plugins=CLI_PLUGINS):
    """`enginebench ARGS` through `enginebench.cli.main` in this process, for commands refused before anything
    runs (usage errors): the exit code, stdout and stderr a child process would give, without a child's ~2 s
    start-up. The process environment is the one `enginebench` gets, and is restored afterwards."""
    from enginebench.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in fake_env(plugins, **(env or {})).items() if k != "PYTHONPATH"})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # as `python -m enginebench` would exit
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["enginebench", *args], code, out.getvalue(), err.getvalue())
