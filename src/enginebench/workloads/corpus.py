"""Corpus text: the default ships with Python itself; users give .txt, .jsonl or .parquet files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from enginebench.errors import UsageError

DEFAULT_CORPUS = "python-docs"
_MIN_WORDS = 8
_DOC_WORDS = 110  # consecutive paragraphs are joined to about this many words: most fill 128 tokens


def python_docs_paragraphs() -> list[str]:
    """Prose from the Python reference documentation that ships with CPython (pydoc_data), as documents of
    consecutive paragraphs of one topic, long enough that the default --seq-len truncates rather than pads."""
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        current: list[str] = []
        for block in re.split(r"\n\s*\n", topics[name]):
            if block.startswith("   ") or block.lstrip().startswith((">>>", "*", "+", "=", "-")):
                continue  # code examples, lists and tables are not prose
            text = " ".join(block.split())
            if len(text.split()) < _MIN_WORDS:
                continue
            current.append(text)
            if sum(len(p.split()) for p in current) >= _DOC_WORDS:
                documents.append(" ".join(current))
                current = []
        if current:
            documents.append(" ".join(current))
    return documents


def corpus_digest(docs: list[str]) -> str:
    """Identifies a corpus by its text (part of a cell's identity, store/identity.py): the same file name
    with other text, or python-docs of another Python version, is another workload."""
    return hashlib.sha256("\0".join(docs).encode()).hexdigest()[:24]


def _text(value, path: str, where: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"corpus {path} {where}: 'text' is {json.dumps(value, default=repr)[:40]}, not a string: "
                         "every document's text must be a string")
    return value


def read_corpus(path: str) -> list[str]:
    """One document per line (.txt), field `text` (.jsonl) or column `text` (.parquet)."""
    if path == DEFAULT_CORPUS:
        return python_docs_paragraphs()
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"corpus file {path} does not exist: give --corpus a .txt, .jsonl or .parquet file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".txt":
            docs = p.read_text(encoding="utf-8").splitlines()
        elif suffix == ".jsonl":
            docs = []
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict) or "text" not in row:
                        raise UsageError(f"corpus {path} line {n} has no field 'text': each line must be a JSON object with 'text'")
                    docs.append(_text(row["text"], path, f"line {n}"))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            if "text" not in table.column_names:
                raise UsageError(f"corpus {path} has no column 'text' (columns: {', '.join(table.column_names)})")
            docs = [_text(t, path, f"row {i} (counting from 0)") for i, t in enumerate(table.column("text").to_pylist())]
        else:
            raise UsageError(f"corpus {path} has an unknown format {suffix or '(none)'}: use .txt, .jsonl or .parquet")
    except UsageError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"cannot read corpus {path}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # pyarrow's errors when a .parquet file is not parquet
        raise UsageError(f"cannot read corpus {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise UsageError(f"corpus {path} holds no text: give a file with at least one non-empty document")
    return docs
