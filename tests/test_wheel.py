"""The README's second way in: `pip install enginebench[all]` from a built wheel, for users who do not clone.
The wheel is built from this checkout, its extras must resolve against the package index, and installed into
a fresh virtual environment it must measure a cell from outside the source tree (the package and its data
files are in the wheel, not borrowed from src/)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.engine]

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "pyproject.toml").exists():
    ROOT = ROOT.parent


# what a user's shell has: not the test run's PYTHONPATH (this checkout's src/) nor its plug-in engines
CLEAN = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENGINEBENCH_ENGINES")}


def _run(*cmd, env=CLEAN, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=900, env=env, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_built_wheel_resolves_its_extras_and_measures_from_a_fresh_environment(tmp_path):
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT))
    wheel = next((tmp_path / "dist").glob("enginebench-*.whl"))
    # every extra resolves, under the project's constraints, to a set pip could install
    env = {**CLEAN, "PIP_CONSTRAINT": str(ROOT / "constraints.txt")}
    report = tmp_path / "report.json"
    _run(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "--report", str(report),
         f"{wheel}[all]", env=env)
    names = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()  # PEP 503's normal form
             for item in json.loads(report.read_text())["install"]}
    assert {"enginebench", "torch", "onnxruntime", "openvino", "jax", "ctranslate2", "tinygrad",
            "llama-cpp-python", "sentence-transformers", "ray", "mlcommons-loadgen"} <= names
    # installed alone into a fresh environment that sees this one's dependencies (not its enginebench)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel))
    site = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(site, "deps-of-the-test-environment.pth").write_text(ours + "\n")
    where = _run(str(python), "-c", "import enginebench; print(enginebench.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where
    # the C sources it compiles on the user's machine (the CPUID mask, the clock probe) come with it
    _run(str(python), "-c", "from enginebench.measure import clock, cpuid_mask; "
         "assert clock.SOURCE.is_file() and cpuid_mask.SOURCE.is_file()", cwd=tmp_path)
    enginebench = str(venv / "bin" / "enginebench")
    assert "onnxruntime" in _run(enginebench, "engines", cwd=tmp_path).stdout
    done = _run(enginebench, "run", "--engine", "onnxruntime", "--workload", "titles", "--scenario", "latency",
                "--batch-size", "1", "--duration", "0.3s", "--warmup", "0.1s", "--repeat", "1", "--db",
                str(tmp_path / "r.db"), "--json", cwd=tmp_path)
    results = json.loads(done.stdout)["results"]
    assert [(r["engine"], r["status"]) for r in results if r["engine"] == "onnxruntime"] == [("onnxruntime", "ok")]
