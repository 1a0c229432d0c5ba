"""The command line in a child process, as a user meets it: real exit codes, real output, real database."""

from __future__ import annotations

import subprocess
import sys

from helpers.fake_engines import CLI_PLUGINS, env as fake_env

FAST = ["--duration", "0.2", "--min-samples", "3", "--warmup", "0.05", "--repeat", "1"]


def enginebench(*args, env=None, timeout=300, plugins=CLI_PLUGINS):
    """`enginebench ARGS` in a child process that finds the fake engines (with FAKE_TORCH in `plugins`, a fake
    torch is the fidelity reference)."""
    return subprocess.run([sys.executable, "-m", "enginebench", *args], capture_output=True, text=True,
                          env=fake_env(plugins, **(env or {})), timeout=timeout)
