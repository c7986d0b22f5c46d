"""GLUE (Wang et al. 2018), the benchmark of the paper's Tables 2-4, in one table: for each of its nine
tasks, the exact headers of the files GLUE distributes (so they are read without `--column`), the
columns of its texts and label, and the preset `gptkit finetune --glue NAME` applies: the task type
(input transformation), the label set, and the metrics GLUE reports (the first picks the best
checkpoint). The fine-tuning hyper-parameters of the presets are FinetuneConfig's defaults, which
are the paper's (lr 6.25e-5, batch 32, 3 epochs, warmup 0.2%, lm_coef 0.5, classifier dropout 0.1).

Depends on nothing else in gptkit: the readers and the task types ask it about a file's header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

COLA_COLUMNS = ("source", "label", "author_mark", "sentence")
"""Names given to the four columns of CoLA's headerless train/dev files (CoLA's README: the source
code of the sentence, the 0/1 label, the judgment as the author marked it, the sentence)."""

_MNLI_PARSES = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
_STSB = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
_MRPC = ("#1 ID", "#2 ID", "#1 String", "#2 String")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: how its files are laid out and how gptkit fine-tunes and scores it."""

    name: str
    task: str
    """gptkit task type: the paper's input transformation for it (section 3.3)."""
    texts: tuple[str, ...]
    """The columns of the text fields in GLUE's files, in the transformation's order."""
    label: str
    headers: tuple[tuple[str, ...], ...]
    """The exact header of each kind of file GLUE ships (train/dev first, then test: no label)."""
    labels: tuple[str, ...] | None
    """Class names in `datasets`' ClassLabel order (GLUE's 0/1 files use the same ids); None: regression."""
    metrics: tuple[str, ...]

    def spec_fields(self) -> dict[str, Any]:
        """The TaskSpec fields the preset fixes: labels and their ids (GLUE's `0`/`1`, a ClassLabel's
        integers), regression, the reported metrics."""
        labels = list(self.labels) if self.labels else None
        return {"labels": labels, "regression": labels is None, "metrics": list(self.metrics),
                "label_aliases": {str(i): name for i, name in enumerate(labels or [])}}


TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "classification", ("sentence",), "label", (COLA_COLUMNS, ("index", "sentence")),
             ("unacceptable", "acceptable"), ("matthews",)),
    GlueTask("sst2", "classification", ("sentence",), "label", (("sentence", "label"), ("index", "sentence")),
             ("negative", "positive"), ("accuracy",)),
    GlueTask("mrpc", "similarity", ("#1 String", "#2 String"), "Quality", (("Quality", *_MRPC), ("index", *_MRPC)),
             ("not_equivalent", "equivalent"), ("f1", "accuracy")),
    GlueTask("qqp", "similarity", ("question1", "question2"), "is_duplicate",
             (("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), ("id", "question1", "question2")),
             ("not_duplicate", "duplicate"), ("f1", "accuracy")),
    GlueTask("stsb", "similarity", ("sentence1", "sentence2"), "score", ((*_STSB, "score"), _STSB),
             None, ("pearson", "spearman")),
    GlueTask("mnli", "entailment", ("sentence1", "sentence2"), "gold_label",
             ((*_MNLI_PARSES, "label1", "gold_label"),
              (*_MNLI_PARSES, "label1", "label2", "label3", "label4", "label5", "gold_label"), _MNLI_PARSES),
             ("entailment", "neutral", "contradiction"), ("accuracy",)),
    GlueTask("qnli", "entailment", ("question", "sentence"), "label",
             (("index", "question", "sentence", "label"), ("index", "question", "sentence")),
             ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("rte", "entailment", ("sentence1", "sentence2"), "label",
             (("index", "sentence1", "sentence2", "label"), ("index", "sentence1", "sentence2")),
             ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("wnli", "entailment", ("sentence1", "sentence2"), "label",
             (("index", "sentence1", "sentence2", "label"), ("index", "sentence1", "sentence2")),
             ("not_entailment", "entailment"), ("accuracy",)),
)}


def layout_of(header: tuple[str, ...] | list[str]) -> GlueTask | None:
    """The GLUE task whose file has exactly this header (tasks sharing a test header, e.g. RTE and
    WNLI, share its columns too), or None."""
    header = tuple(header)
    return next((t for t in TASKS.values() if header in t.headers), None)


def layout_columns(header: tuple[str, ...] | list[str], text_fields: tuple[str, ...]) -> dict[str, str]:
    """field -> column for a file in a GLUE layout read by a task type with these text fields; {} when
    the header is not GLUE's or has another number of texts."""
    task = layout_of(header)
    if task is None or len(task.texts) != len(text_fields):
        return {}
    out = dict(zip(text_fields, task.texts))
    if task.label in header:
        out["label"] = task.label
    return out


_COLA_SOURCE = re.compile(r"[A-Za-z0-9_-]+")
_COLA_MARK = re.compile(r"[*?#]*")


def is_cola_record(record: list[str]) -> bool:
    """A record of CoLA's headerless layout: a source code, a 0/1 label, the author's mark (empty,
    `*`, `?`, `??`, ...) and a sentence. Strict, so no file with a header is taken for it."""
    return (len(record) == 4 and bool(_COLA_SOURCE.fullmatch(record[0])) and record[1] in ("0", "1")
            and bool(_COLA_MARK.fullmatch(record[2])) and bool(record[3].strip()))
