"""Exports of a stored run, each carrying the run's notes (warnings, failures, skips, engines' notes) and its
machine:

- json: the whole data model (`Run.to_dict`, machine included) plus `notes`; `from_json` reads it back.
- csv: the frame of results/frame.py, one flat row per result. The machine is in columns of every row
  (hostname, cpu, cores, affinity, memory_gb, python) and each row's notes in its own columns (error,
  verdict_reasons, notes), so a plain `pandas.read_csv(path)` reads everything back: no comment lines.
- md: the tables, their notes as a list under each, and a `machine:` line.
- parquet: the same frame, typed, with the run's machine, config and notes as JSON under the file's
  key-value metadata key `enginebench` (`read_parquet_metadata` returns it).
"""

from __future__ import annotations

import json
from pathlib import Path

from enginebench.results.model import Result, Run

TEXT_FORMATS = ("json", "csv", "md")
FORMATS = TEXT_FORMATS + ("parquet",)
PARQUET_KEY = b"enginebench"


def run_notes(run: Run) -> list[str]:
    """Every footnote the tables print: the encoder table's, then the decoder table's."""
    from enginebench.results.decoder_table import decoder_notes, is_decoder_result
    from enginebench.results.report import notes

    encoders = [r for r in run.results if not is_decoder_result(r)]
    decoders = any(map(is_decoder_result, run.results))
    return notes(encoders) + (decoder_notes(run) if decoders else [])


def to_json(run: Run, with_samples: bool = True) -> str:
    d = run.to_dict(with_samples)
    return json.dumps({**{k: v for k, v in d.items() if k != "results"}, "notes": run_notes(run),
                       "results": d["results"]}, indent=2)


def from_json(text: str) -> Run:
    """The Run a `to_json` text holds (its notes are derived, so they are not read back)."""
    d = json.loads(text)
    return Run(d["run_id"], d["created_at"], d["machine"], d["config"],
               [Result.from_dict(r) for r in d["results"]], d.get("schema_version", 1))


def to_csv(run: Run) -> str:
    from enginebench.results.frame import to_frame

    return to_frame(run).to_csv(index=False)


def to_parquet(run: Run, path: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from enginebench.results.frame import to_frame

    table = pa.Table.from_pandas(to_frame(run), preserve_index=False)
    meta = {"schema_version": run.schema_version, "run_id": run.run_id, "created_at": run.created_at,
            "machine": run.machine, "config": run.config, "notes": run_notes(run)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: json.dumps(meta).encode()})
    pq.write_table(table, str(path))


def read_parquet_metadata(path: str | Path) -> dict:
    """The run-level metadata `to_parquet` wrote: schema_version, run_id, created_at, machine, config, notes."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(str(path)).metadata[PARQUET_KEY])


def to_markdown(run: Run) -> str:
    from enginebench.results.decoder_table import decoder_markdown, is_decoder_result
    from enginebench.results.report import machine_line, measured_how, notes, table_rows
    from enginebench.results.serving_table import is_decoder_serving, serving_markdown
    from enginebench.results.terminal import markdown_table

    encoders = [r for r in run.results if not is_decoder_result(r) and not is_decoder_serving(r)]
    decoders = decoder_markdown(run) + serving_markdown(run)
    parts = []
    if encoders:
        headers, rows, constants = table_rows(encoders)
        models = sorted({r.model for r in encoders})
        title = (f"**run {run.run_id}** · model {', '.join(models)}"
                 + "".join(f" · {k} {v}" for k, v in constants.items()) + measured_how(run.config))
        parts.append(f"{title}\n\n{markdown_table(headers, rows)}")
        parts += ["".join(f"- {line}\n" for line in notes(encoders))] if notes(encoders) else []
    else:
        parts.append(f"**run {run.run_id}**" + (" · decoders" if decoders else " · no results") + "\n")
    if decoders:
        parts.append(decoders)
    parts.append(machine_line(run) + "\n")
    return "\n".join(parts)


def export(run: Run, fmt: str) -> str:
    """A text export (json, csv, md); parquet is binary: `to_parquet(run, path)`."""
    return {"json": to_json, "csv": to_csv, "md": to_markdown}[fmt](run)


__all__ = ["FORMATS", "TEXT_FORMATS", "export", "to_json", "from_json", "to_csv", "to_parquet",
           "read_parquet_metadata", "to_markdown", "run_notes"]
