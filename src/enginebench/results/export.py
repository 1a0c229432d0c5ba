"""Exports of a stored run: JSON (the full data model), CSV (one flat row per result), Markdown (the table)."""

from __future__ import annotations

import json

import pandas as pd

from enginebench.results.model import Run
from enginebench.results.report import measured_how, table_rows

FORMATS = ("json", "csv", "md")


def to_json(run: Run, with_samples: bool = True) -> str:
    return json.dumps(run.to_dict(with_samples), indent=2)


def to_csv(run: Run) -> str:
    rows = [r.to_dict(with_samples=False) for r in run.results]
    for row in rows:  # one flat row per result: per-process records stay in JSON (details.processes counts them)
        row.pop("repetitions")
    frame = pd.json_normalize(rows, sep=".")
    frame.insert(0, "run_id", run.run_id)
    return frame.to_csv(index=False)


def to_markdown(run: Run) -> str:
    from enginebench.results.decoder_table import decoder_markdown, is_decoder_result

    decoders = decoder_markdown(run)
    encoders = [r for r in run.results if not is_decoder_result(r)]
    if decoders and not encoders:
        return f"**run {run.run_id}** · decoders\n\n" + decoders
    run = Run(run.run_id, run.created_at, run.machine, run.config, encoders, run.schema_version)
    headers, rows, constants = table_rows(run.results)
    lines = [f"**run {run.run_id}**" + "".join(f" · {k} {v}" for k, v in constants.items())
             + measured_how(run.config), ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n" + ("\n" + decoders if decoders else "")


def export(run: Run, fmt: str) -> str:
    return {"json": to_json, "csv": to_csv, "md": to_markdown}[fmt](run)
