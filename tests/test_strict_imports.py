"""Under `make test` (ENGINEBENCH_REQUIRE_ALL=1) a test skipped because a module does not import fails: the
README installs every extra, so such a skip would hide a broken install. Run by hand on a partial install, it
still skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _pytest(tmp_path, strict: bool, only: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_it.py").write_text(
        "import pytest\n"
        "pytest.importorskip('a_module_nobody_installed')\n\n"
        "def test_it():\n    pass\n\n")
    (tmp_path / "test_needs_it_inside.py").write_text(
        "import pytest\n\n"
        "def test_inside():\n    pytest.importorskip('another_module_nobody_installed')\n\n"
        "def test_fine():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "ENGINEBENCH_REQUIRE_ALL": "1" if strict else "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / only)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_a_missing_module_fails_under_make_test(tmp_path):
    done = _pytest(tmp_path, strict=True, only="test_needs_it_inside.py")
    assert done.returncode == 1 and "1 failed, 1 passed" in done.stdout, done.stdout
    assert "broken install, not a skip" in done.stdout
    at_import = _pytest(tmp_path, strict=True, only="test_needs_it.py")  # a module-level importorskip
    assert at_import.returncode != 0 and "1 error" in at_import.stdout, at_import.stdout
    assert "broken install, not a skip" in at_import.stdout


def test_a_missing_module_skips_on_a_partial_install(tmp_path):
    done = _pytest(tmp_path, strict=False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped" in done.stdout, done.stdout
