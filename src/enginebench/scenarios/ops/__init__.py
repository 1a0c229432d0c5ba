"""Single operators (`enginebench ops`): what each computes and costs (definitions), how each engine expresses
it (each engine's `op_kernels`, engines/kernels.py; numpy's here, the reference row: engines.py lists them), and
how it is timed, one process per engine (runner)."""

from enginebench.scenarios.ops.definitions import OPERATORS, PRECISIONS, Operator, require_operator
from enginebench.scenarios.ops.runner import OpCase, OpMeasurement, run_ops

__all__ = ["OPERATORS", "PRECISIONS", "Operator", "require_operator", "OpCase", "OpMeasurement", "run_ops"]
