"""junit: a comparison as JUnit XML, what CI systems (Jenkins, GitLab, GitHub test reporters) read as a test
report: one <testcase> per cell (classname engine.model.precision, name the rest of the cell), the cells the gate
counts first. A report fails exactly where `--fail-on regression` does: a cell slower beyond the threshold is a
<failure type="regression"> (the change, new/base with its 95% CI); a cell the base measured that the new run
lacks, skipped, lost fidelity on or has no CI for is a <failure> of that kind (missing, skipped, fidelity, no-ci),
one that failed in the new run an <error type="failed">, each with the reason — unless `--allow` names its kind,
when it is <skipped> (or passes, when it was compared) with the reason. Cells in one run only or not compared
for another reason (the base failed) are <skipped>.
`enginebench compare A B --format junit > report.xml` (exit 1 with --fail-on regression as ever)."""

from __future__ import annotations

import re
from typing import ClassVar
from xml.etree import ElementTree as ET

from enginebench.analysis.compare import CellComparison, GateIssue, RunComparison, percent
from enginebench.formats.base import COMPARISON, Format, Subject
from enginebench.formats.tables.comparison import cell_label, notes, ratio_text

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0 forbids the rest


def _text(value) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _classname(cell: dict) -> str:
    """engine.model.precision: CI reports group by the dots, so a dot inside a part (a model file) is `_`."""
    return ".".join(_text(cell[k]).replace(".", "_") for k in ("engine", "model", "precision"))


def _name(cell: dict) -> str:
    """The cell's label without the engine and precision the classname holds: `latency titles b8 1×2`."""
    label, head = cell_label(cell), f"{cell['engine']} {cell['precision']} "
    return _text(label[len(head):] if label.startswith(head) else label)


def _case(suite: ET.Element, cell: dict) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=_classname(cell), name=_name(cell), time="0")


def _judged(c: CellComparison) -> str:
    return (f"{c.change()}: {c.metric} {c.base:.4g} → {c.new:.4g} {c.unit}, new/base {ratio_text(c.ratio)} "
            f"(95% CI), speed-up {ratio_text(c.speedup)}")


def _cell_id(cell: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in cell.items()))


def _issue_text(x: GateIssue) -> str:
    return f"{x.reason} (allowed: --allow {x.kind})" if x.allowed else x.reason


def _gated_case(suite: ET.Element, cell: dict, c: CellComparison | None, issues: list[GateIssue], slower: bool,
                threshold: float) -> str:
    """A cell the gate counts (or could): its <error>, <failure>, <skipped> or nothing; which one it was."""
    case = _case(suite, cell)
    blocking = [x for x in issues if not x.allowed]
    detail = "\n".join(([_judged(c)] + c.reasons if c else []) + [f"{x.kind}: {_issue_text(x)}" for x in issues])
    messages = [x.reason for x in blocking]
    if slower:
        messages.insert(0, f"{_judged(c)}: beyond the {percent(threshold)} threshold with 95% confidence")
    if any(x.kind == "failed" for x in blocking):
        element, kind = ET.SubElement(case, "error", type="failed", message=_text("; ".join(messages))), "errors"
    elif messages:
        kinds = ["regression"] * slower + [x.kind for x in blocking]
        element = ET.SubElement(case, "failure", type=",".join(kinds), message=_text("; ".join(messages)))
        kind = "failures"
    elif c is None:
        element, kind = ET.SubElement(case, "skipped", message=_text("; ".join(map(_issue_text, issues)))), "skipped"
    else:
        ET.SubElement(case, "system-out").text = _text(detail)
        return "passed"
    element.text = _text(detail)
    return kind


def junit_xml(cmp: RunComparison) -> str:
    suite = ET.Element("testsuite", name=_text(f"enginebench compare {cmp.base_id} (base) → {cmp.new_id} (new)"))
    properties = ET.SubElement(suite, "properties")
    for name, value in [("base", cmp.base_id), ("new", cmp.new_id), ("threshold", percent(cmp.threshold)),
                        ("correction", cmp.correction_text()), ("allow", ",".join(sorted(cmp.allow)) or "none")] + [
            ("difference", d) for d in cmp.differences()]:
        ET.SubElement(properties, "property", name=name, value=_text(value))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    compared = {_cell_id(c.cell): c for c in cmp.cells}
    slower = {id(c) for c in cmp.regressions()}
    issues: dict[tuple, list[GateIssue]] = {}
    for x in cmp.issues:  # blocking first: their cases lead the report
        issues.setdefault(_cell_id(x.cell), []).append(x)
    for key, found in issues.items():
        c = compared.get(key)
        kind = _gated_case(suite, found[0].cell, c, found, c is not None and id(c) in slower, cmp.threshold)
        counts[kind] = counts.get(kind, 0) + 1
    for c in cmp.cells:
        if _cell_id(c.cell) not in issues:
            kind = _gated_case(suite, c.cell, c, [], id(c) in slower, cmp.threshold)
            counts[kind] = counts.get(kind, 0) + 1
    others = [(x["cell"], f"not compared: {x['why']}") for x in cmp.not_compared]
    others += [(cell, f"only in base ({cmp.base_id}): not measured in {cmp.new_id}") for cell in cmp.only_in_base]
    others += [(cell, f"only in new ({cmp.new_id}): not measured in {cmp.base_id}") for cell in cmp.only_in_new]
    for cell, why in others:
        if _cell_id(cell) not in issues:
            counts["skipped"] += 1
            ET.SubElement(_case(suite, cell), "skipped", message=_text(why))
    counts.pop("passed", None)
    counts["tests"] = len(suite.findall("testcase"))
    suite.attrib.update({k: str(v) for k, v in counts.items()}, time="0")
    lines = ([f"the runs differ in more than the code measured: {d}" for d in cmp.differences()] + notes(cmp)
             + [cmp.correction_text()])
    ET.SubElement(suite, "system-out").text = _text("\n".join(lines))
    root = ET.Element("testsuites", name="enginebench compare", **{k: str(v) for k, v in counts.items()})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


class JUnit(Format):
    name = "junit"
    help = "JUnit XML for CI: a failure or error wherever --fail-on regression fails"
    renders: ClassVar[frozenset[str]] = frozenset({COMPARISON})
    suffix = ".xml"

    def text(self, subject: Subject) -> str:
        return junit_xml(subject)


__all__ = ["JUnit", "junit_xml"]
