"""parquet: the frame of csv, typed, with the run's machine, config and notes as JSON under the file's
key-value metadata key `enginebench` (`read_parquet_metadata` returns it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from enginebench.formats.base import RUNS, Format, Subject
from enginebench.formats.json import run_notes
from enginebench.formats.frame import export_frame
from enginebench.store.model import Run

PARQUET_KEY = b"enginebench"


def to_parquet(run: Run, path: str | Path) -> None:
    import pyarrow as pa  # heavy: only when a parquet file is written
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(export_frame(run), preserve_index=False)
    meta = {"schema_version": run.schema_version, "run_id": run.run_id, "created_at": run.created_at,
            "machine": run.machine, "config": run.config, "notes": run_notes(run)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: json.dumps(meta).encode()})
    pq.write_table(table, str(path))


def read_parquet_metadata(path: str | Path) -> dict:
    """The run-level metadata `to_parquet` wrote: schema_version, run_id, created_at, machine, config, notes."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(str(path)).metadata[PARQUET_KEY])


class Parquet(Format):
    name = "parquet"
    help = "the csv frame, typed, with the run's machine, config and notes in its metadata"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS})
    suffix = ".parquet"
    binary = True

    def write(self, subject: Subject, path: Path) -> list[Path]:
        to_parquet(subject[0], path)
        return [path]


__all__ = ["Parquet", "to_parquet", "read_parquet_metadata", "PARQUET_KEY"]
