"""`enginebench sweep FILE.toml`: a matrix of `run` options in a file (spec.py), run part by part and resumed
after any interruption (runner.py), estimated before it runs (estimate.py)."""

from enginebench.sweep.runner import run_sweep
from enginebench.sweep.spec import Part, Sweep, load_sweep

__all__ = ["load_sweep", "run_sweep", "Sweep", "Part"]
