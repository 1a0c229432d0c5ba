"""Single operators (`enginebench ops`): what each computes and costs (definitions), how each engine expresses
it (each engine's `op_kernels`, engines/kernels.py; numpy's here, the reference row: engines.py lists them), the
scenario that times them in the launcher's child processes (scenario.py), its cases (case.py) and what their
samples mean on this machine (figures.py)."""

from enginebench.scenarios.ops.case import CaseSettings, OpCase, OpMeasurement
from enginebench.scenarios.ops.definitions import OPERATORS, PRECISIONS, Operator, require_operator

__all__ = ["OPERATORS", "PRECISIONS", "Operator", "require_operator", "OpCase", "CaseSettings", "OpMeasurement"]
