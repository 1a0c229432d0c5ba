"""How a figure reads as text, shared by the tables (results/, formats/) and the scenarios' notes."""

from __future__ import annotations


def significant(x: float, digits: int = 3) -> str:
    """3 significant digits, but never in exponent form: 6,910 rather than 6.91e+03."""
    text = f"{x:.{digits}g}"
    return f"{x:,.0f}" if "e+" in text else text


__all__ = ["significant"]
