"""requests: every request measured against a server (--endpoint), one JSON object per line (JSONL), so any
figure can be recomputed elsewhere: the cell (run, scenario, workload, clients), the repetition, the record as
the client kept it (times in ns of the measuring process's perf_counter, status, failure, tokens, usage) and
the request's own figures in ms (e2e, TTFT, TPOT, each ITL) as scenarios/requests.py derives them."""

from __future__ import annotations

import json
from typing import ClassVar

from enginebench.formats.base import RUNS, Format, Subject
from enginebench.scenarios.requests import per_request
from enginebench.store.model import Run


def request_rows(run: Run):
    for index, result in enumerate(run.results, 1):
        for rep in result.repetitions or []:
            for record in rep.get("requests") or []:
                yield {"run_id": run.run_id, "result": index, "scenario": result.scenario,
                       "workload": result.workload, "batch_size": result.batch_size, "settings": result.settings,
                       "repetition": rep.get("index", 0), **record, **per_request(record)}


def to_jsonl(run: Run) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in request_rows(run))


class Requests(Format):
    name = "requests"
    help = "every request measured against a server (--endpoint) as JSONL: its record and figures"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS})
    suffix = ".jsonl"

    def text(self, subject: Subject) -> str:
        return to_jsonl(subject[0])


__all__ = ["Requests", "to_jsonl", "request_rows"]
