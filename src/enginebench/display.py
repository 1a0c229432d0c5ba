"""How a figure reads as text, shared by the tables (formats/, analysis/) and the scenarios' notes."""

from __future__ import annotations


def significant(x: float, digits: int = 3) -> str:
    """3 significant digits, but never in exponent form: 6,910 rather than 6.91e+03."""
    text = f"{x:.{digits}g}"
    return f"{x:,.0f}" if "e+" in text else text


def max_rate(search: dict) -> str:
    """A --find-max-qps answer: one search's highest VALID rate with the bracket it ended in, `392 (bracket
    392–402)`; over several searches (one per repetition) their interval, `395 ± 20 over 3 searches`."""
    searches = search.get("searches") or [search]
    found = [s for s in searches if s.get("max_qps")]
    if not found:
        return "none VALID"
    if search.get("max_qps_ci95") and len(found) > 1:
        lo, hi = search["max_qps_ci95"]
        half = max(search["max_qps"] - lo, hi - search["max_qps"])
        of = f"{len(found)} of {len(searches)}" if len(found) < len(searches) else str(len(found))
        return f"{significant(search['max_qps'])} ± {significant(half, 2)} over {of} searches"
    one = found[0]
    top = significant(one["bracket"][1]) if one["bracket"][1] else "?"
    also = f"; 1 of {len(searches)} searches VALID" if len(searches) > 1 else ""
    return f"{significant(one['max_qps'])} (bracket {significant(one['max_qps'])}–{top}{also})"


__all__ = ["significant", "max_rate"]
