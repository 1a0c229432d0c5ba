"""Feature-table vocabulary: precision names grouped into the bit widths a reader compares engines by."""

from __future__ import annotations

import re

BIT_CLASSES = ("32-bit", "16-bit", "8-bit", "5/6-bit", "4-bit", "2/3-bit")
_WIDTH = {32: "32-bit", 16: "16-bit", 8: "8-bit", 6: "5/6-bit", 5: "5/6-bit", 4: "4-bit", 3: "2/3-bit", 2: "2/3-bit"}


def bit_class(precision: str) -> str | None:
    """The first number in the name is the width: fp16/bf16 -> 16-bit, int8/q8_0 -> 8-bit, q4_1/nf4 -> 4-bit,
    q3_k/iq2_xs -> 2/3-bit; None for a name without one."""
    m = re.match(r"^[a-z]*?(\d+)", precision.lower())
    return _WIDTH.get(int(m[1])) if m else None


def precision_bits(precisions) -> tuple[str, ...]:
    """The bit classes covered by `precisions`, widest first."""
    found = {bit_class(p) for p in precisions}
    return tuple(c for c in BIT_CLASSES if c in found)
