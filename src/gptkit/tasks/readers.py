"""Read task files into rows: JSONL, CSV, TSV, and (when `datasets` is installed) parquet or a
dataset saved with `save_to_disk`.

A row remembers where it came from (file and line), so every later error can name them.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GptkitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One record of a task file: its fields, the file it came from, and its 1-based line (for CSV
    and TSV the physical line the record starts on; for datasets the row index + 1)."""

    fields: dict[str, Any]
    source: str
    line: int

    def where(self) -> str:
        return f"{self.source}, line {self.line}"


def file_format(path: Path) -> str:
    """The format a path is read as, from its suffix (`.gz` is not supported: tasks files are small)."""
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".parquet":
        return "parquet"
    raise GptkitError(
        f"{path}: unknown task file type {suffix or '(no suffix)'!r}; expected .jsonl, .csv, .tsv, .parquet "
        "or a directory written by datasets' save_to_disk"
    )


def read_rows(path: str | Path) -> list[Row]:
    """All rows of a task file; a missing, empty or malformed file is a GptkitError naming it."""
    path = Path(path)
    if not path.exists():
        raise GptkitError(f"{path}: no such file")
    kind = file_format(path)
    if kind == "jsonl":
        rows = list(_read_jsonl(path))
    elif kind in ("csv", "tsv"):
        rows = list(_read_delimited(path, "," if kind == "csv" else "\t"))
    else:
        rows = list(_read_with_datasets(path, kind))
    if not rows:
        raise GptkitError(f"{path}: no rows")
    log.debug("%s: %d rows", path, len(rows))
    return rows


def _open_text(path: Path):
    try:
        return path.open(encoding="utf-8-sig", newline="")  # -sig: spreadsheet exports start with a BOM
    except OSError as e:
        raise GptkitError(f"{path}: cannot open ({e.strerror})") from None


def _read_jsonl(path: Path) -> Iterator[Row]:
    with _open_text(path) as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise GptkitError(f"{path}, line {lineno + 1}: invalid UTF-8 ({e.reason})") from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise GptkitError(f"{path}, line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise GptkitError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield Row(obj, str(path), lineno)


def _read_delimited(path: Path, delimiter: str) -> Iterator[Row]:
    with _open_text(path) as f:
        # QUOTE_NONE for TSV: GLUE's TSV files contain bare quote characters inside sentences.
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            if len(set(header)) != len(header):
                dupes = sorted({h for h in header if header.count(h) > 1})
                raise GptkitError(f"{path}, line 1: duplicate column name(s) {dupes}")
            start = reader.line_num + 1
            for record in reader:
                if not record or (len(record) == 1 and not record[0].strip()):
                    start = reader.line_num + 1
                    continue
                if len(record) != len(header) and delimiter == "," and reader.line_num > start \
                        and any("\n" in value for value in record):
                    # a quote that never closes swallows the following lines into one field
                    raise GptkitError(f"{path}, line {start}: unbalanced quote: a quoted field opened on this "
                                      f"line runs on to line {reader.line_num}")
                if len(record) != len(header):
                    raise GptkitError(
                        f"{path}, line {start}: ragged row: {len(record)} fields but the header has {len(header)}"
                    )
                yield Row(dict(zip(header, record)), str(path), start)
                start = reader.line_num + 1
        except csv.Error as e:
            raise GptkitError(f"{path}, line {reader.line_num}: malformed {'CSV' if delimiter == ',' else 'TSV'} ({e})") from None
        except UnicodeDecodeError as e:
            raise GptkitError(f"{path}, line {reader.line_num + 1}: invalid UTF-8 ({e.reason})") from None


def _read_with_datasets(path: Path, kind: str) -> Iterator[Row]:
    if kind == "parquet":
        yield from _read_parquet(path)
        return
    try:
        import datasets  # optional: only users with Hugging Face datasets files need it
    except ImportError:
        raise GptkitError(
            f"{path}: reading a saved dataset needs the `datasets` library (pip install 'gptkit[datasets]'); "
            "or convert it to JSONL/CSV/TSV"
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many types; all mean "not readable as a dataset"
        raise GptkitError(f"{path}: not readable as a saved dataset ({' '.join(str(e).split())[:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise GptkitError(f"{path}: holds several splits {sorted(ds)}; pass the directory of one split")
    for i, record in enumerate(ds):
        yield Row(dict(record), str(path), i + 1)


def _read_parquet(path: Path) -> Iterator[Row]:
    # pyarrow directly (it comes with `datasets`): no dataset cache is written next to the user's files.
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GptkitError(
            f"{path}: reading parquet needs pyarrow (pip install 'gptkit[datasets]'); or convert it to JSONL/CSV/TSV"
        ) from None
    try:
        table = pq.read_table(str(path))
    except Exception as e:  # pyarrow's errors vary by failure; all mean "not a readable parquet file"
        raise GptkitError(f"{path}: not a readable parquet file ({' '.join(str(e).split())[:200]})") from None
    for i, record in enumerate(table.to_pylist()):
        yield Row(record, str(path), i + 1)
