"""junit: a comparison as JUnit XML, what CI systems (Jenkins, GitLab, GitHub test reporters) read as a test
report: one <testcase> per cell (classname engine.model.precision, name the rest of the cell). A cell slower
beyond the threshold with 95% confidence is a <failure> (the change, new/base with its 95% CI); a cell failed
in either run, or judged on different figures, an <error> with the reason; a cell in one run only is <skipped>.
`enginebench compare A B --format junit > report.xml` (exit 1 with --fail-on regression as ever)."""

from __future__ import annotations

import re
from typing import ClassVar
from xml.etree import ElementTree as ET

from enginebench.formats.base import COMPARISON, Format, Subject
from enginebench.results.compare import CellComparison, RunComparison, cell_label, notes, percent, ratio_text

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


def junit_xml(cmp: RunComparison) -> str:
    suite = ET.Element("testsuite", name=_text(f"enginebench compare {cmp.base_id} (base) → {cmp.new_id} (new)"))
    properties = ET.SubElement(suite, "properties")
    for name, value in [("base", cmp.base_id), ("new", cmp.new_id), ("threshold", percent(cmp.threshold))] + [
            ("difference", d) for d in cmp.differences()]:
        ET.SubElement(properties, "property", name=name, value=_text(value))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    slower = {id(c) for c in cmp.regressions()}
    for c in cmp.cells:
        case = _case(suite, c.cell)
        detail = "\n".join([_judged(c)] + c.reasons)
        if id(c) in slower:
            counts["failures"] += 1
            failure = ET.SubElement(case, "failure", type="regression", message=_text(
                f"{_judged(c)}: beyond the {percent(cmp.threshold)} threshold with 95% confidence"))
            failure.text = _text(detail)
        else:
            ET.SubElement(case, "system-out").text = _text(detail)
    for x in cmp.not_compared:
        counts["errors"] += 1
        ET.SubElement(_case(suite, x["cell"]), "error", type="not compared", message=_text(x["why"]))
    for side, cells, other in (("base", cmp.only_in_base, cmp.new_id), ("new", cmp.only_in_new, cmp.base_id)):
        for cell in cells:
            counts["skipped"] += 1
            run = cmp.base_id if side == "base" else cmp.new_id
            ET.SubElement(_case(suite, cell), "skipped",
                          message=_text(f"only in {side} ({run}): not measured in {other}"))
    counts["tests"] = len(suite.findall("testcase"))
    suite.attrib.update({k: str(v) for k, v in counts.items()}, time="0")
    if cmp.differences() or notes(cmp):
        lines = ([f"the runs differ in more than the code measured: {d}" for d in cmp.differences()] + notes(cmp))
        ET.SubElement(suite, "system-out").text = _text("\n".join(lines))
    root = ET.Element("testsuites", name="enginebench compare", **{k: str(v) for k, v in counts.items()})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


class JUnit(Format):
    name = "junit"
    help = "JUnit XML for CI: a cell slower beyond the threshold is a failure"
    renders: ClassVar[frozenset[str]] = frozenset({COMPARISON})
    suffix = ".xml"

    def text(self, subject: Subject) -> str:
        return junit_xml(subject)


__all__ = ["JUnit", "junit_xml"]
