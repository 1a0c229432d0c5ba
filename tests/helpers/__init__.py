"""What tests share besides fixtures: fake engines, tiny models, process helpers. Imported as `helpers.X`: tests/
is on sys.path in the test process (pytest's rootdir conftest), and `child_pythonpath()` puts it on the
PYTHONPATH of the enginebench processes a test starts, which load the fake engines by "helpers.module:Class"."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def child_pythonpath() -> str:
    """PYTHONPATH for a child process: tests/ first, then whatever the caller had."""
    return os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
