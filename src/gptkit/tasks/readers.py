"""Read task files into rows: JSONL, CSV, TSV (also GLUE's headerless CoLA files and MRPC's `.txt`),
and (when `datasets` is installed) parquet or a dataset saved with `save_to_disk`.

A row remembers where it came from (file and line), so every later error can name them. Labels that
`datasets` stored as a ClassLabel are read as their names, and the row keeps the names in id order.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GptkitError
from ..textio import utf8_error
from . import glue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One record of a task file: its fields, the file it came from, and its 1-based line (for CSV
    and TSV the physical line the record starts on; for datasets the row index + 1)."""

    fields: dict[str, Any]
    source: str
    line: int
    class_names: dict[str, tuple[str, ...]] | None = field(default=None, compare=False, repr=False)
    """For each column `datasets` declared a ClassLabel: its names in id order (one dict per file)."""

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
    if suffix == ".txt":
        return "txt"  # tab-separated when it has a GLUE header (MRPC's msr_paraphrase_*.txt)
    if suffix == ".parquet":
        return "parquet"
    raise unknown_type(path)


def unknown_type(path: Path) -> GptkitError:
    return GptkitError(
        f"{path}: unknown task file type {path.suffix or '(no suffix)'!r}; expected .jsonl, .csv, .tsv, .parquet "
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
    elif kind in ("csv", "tsv", "txt"):
        rows = list(_read_delimited(path, "," if kind == "csv" else "\t", glue_only=kind == "txt"))
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


def invalid_utf8(path: Path, error: UnicodeDecodeError) -> GptkitError:
    """The error for a file that is not UTF-8, naming the line and byte offset of the first bad byte.

    The text reader decodes ahead in chunks (8 KB), so the decode error surfaces on the `readline()`
    (or the CSV record) of an earlier line, and `error.start` is an offset into a chunk: both say
    nothing about where the byte is. The file's bytes are decoded again here to find it (task files
    are small, and this runs once, on the way out)."""
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    return utf8_error(data, str(path), count_lines=True) or GptkitError(f"{path}: invalid UTF-8 ({error.reason})")


def _read_jsonl(path: Path) -> Iterator[Row]:
    with _open_text(path) as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise invalid_utf8(path, e) from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            obj = parse_json(line, f"{path}, line {lineno}")
            if not isinstance(obj, dict):
                raise GptkitError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
            bad = invalid_unicode_field(obj)
            if bad is not None:
                raise GptkitError(f"{path}, line {lineno}: field {bad!r} holds invalid Unicode (a lone surrogate "
                                  "such as \\ud800, which is not text in any encoding)")
            yield Row(obj, str(path), lineno)


def parse_json(text: str, where: str) -> Any:
    """json.loads with every failure as one line naming `where`: malformed JSON, a number longer than
    Python converts (4300 digits), or nesting deeper than the parser's recursion allows."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise GptkitError(f"{where}: malformed JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    except RecursionError:
        raise GptkitError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # int("...") beyond sys.get_int_max_str_digits()
        raise GptkitError(f"{where}: unreadable JSON value ({' '.join(str(e).split())[:120]})") from None


def invalid_unicode_field(obj: dict[str, Any]) -> str | None:
    """The first field whose name or any string inside it holds a lone surrogate (JSON's `\\ud800`
    escape decodes to one): no tokenizer or file can take it."""
    for key, value in obj.items():
        stack = [key, value]
        while stack:  # iterative: values may be nested as deep as the parser allowed
            item = stack.pop()
            if isinstance(item, str):
                if not is_valid_text(item):
                    return key.encode("utf-8", "backslashreplace").decode("utf-8")
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def is_valid_text(text: str) -> bool:
    """False for a string holding a lone surrogate (it cannot be encoded, so cannot be tokenized)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_delimited(path: Path, delimiter: str, *, glue_only: bool = False) -> Iterator[Row]:
    """CSV or TSV with a header line; a TSV whose first line is a CoLA record is CoLA's headerless
    layout (every line is then held to it); `glue_only` (a `.txt`) accepts only a GLUE header."""
    with _open_text(path) as f:
        # QUOTE_NONE for TSV: GLUE's TSV files contain bare quote characters inside sentences.
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            header = next(reader, None)
            if header is None:
                return
            cola = delimiter == "\t" and glue.is_cola_record(header)
            if cola:
                yield Row(dict(zip(glue.COLA_COLUMNS, header)), str(path), reader.line_num)
                header = list(glue.COLA_COLUMNS)
            header = [h.strip() for h in header]
            if glue_only and glue.layout_of(header) is None:
                raise unknown_type(path)
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
                if cola and not glue.is_cola_record(record):
                    raise GptkitError(f"{path}, line {start}: not a CoLA record (source, label 0 or 1, author's "
                                      "mark, sentence), but line 1 is: a headerless file must be CoLA's throughout")
                if len(record) != len(header):
                    raise GptkitError(
                        f"{path}, line {start}: ragged row: {len(record)} fields but the header has {len(header)}"
                    )
                yield Row(dict(zip(header, record)), str(path), start)
                start = reader.line_num + 1
        except csv.Error as e:
            raise GptkitError(f"{path}, line {reader.line_num}: malformed {'CSV' if delimiter == ',' else 'TSV'} ({e})") from None
        except UnicodeDecodeError as e:
            raise invalid_utf8(path, e) from None


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
    names = {col: tuple(f.names) for col, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    yield from _with_class_names(path, ds, names)


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
    yield from _with_class_names(path, table.to_pylist(), _parquet_class_names(table.schema.metadata))


def _parquet_class_names(metadata: dict[bytes, bytes] | None) -> dict[str, tuple[str, ...]]:
    """ClassLabel names from the features `datasets` writes into a parquet file's schema metadata
    (`Dataset.to_parquet`, and the Hub's parquet files); {} for any other parquet file."""
    try:
        features = json.loads((metadata or {})[b"huggingface"])["info"]["features"]
        return {col: tuple(str(n) for n in f["names"]) for col, f in features.items()
                if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)}
    except (KeyError, TypeError, ValueError, RecursionError):  # absent or not datasets' metadata
        return {}


def _with_class_names(path: Path, records, names: dict[str, tuple[str, ...]]) -> Iterator[Row]:
    """Rows with each ClassLabel id replaced by its name (-1, datasets' "no label" of test splits, by
    None); the names travel with the rows so the label set keeps their order."""
    for i, record in enumerate(records):
        record = dict(record)
        for col, labels in names.items():
            value = record.get(col)
            if isinstance(value, int) and not isinstance(value, bool):
                if value == -1:
                    record[col] = None
                elif 0 <= value < len(labels):
                    record[col] = labels[value]
                else:
                    raise GptkitError(f"{path}, line {i + 1}: label {value} in field {col!r} is not an id of its "
                                      f"ClassLabel {list(labels)}")
        yield Row(record, str(path), i + 1, names or None)
