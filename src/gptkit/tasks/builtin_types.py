"""The paper's four task types (section 3.3, Figure 1), each with the column names of the common
benchmarks it reads by default (first found wins; `--column FIELD=COLUMN` overrides)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GptkitError
from ..interop.heads import double_heads
from ..model import MultipleChoiceHead, SimilarityHead
from .columns import ColumnPicker, ResolvedColumns, missing
from .examples import Example, candidate_index, row_label, text_of
from .readers import Row, is_valid_text
from .tasktype import TaskType, register


class Classification(TaskType):
    """<s> text <e>"""

    name = "classification"
    text_fields = ("text",)
    n_special = 2
    columns = ("text", "sentence")  # generic; SST-2, CoLA

    def text_columns(self, pick: ColumnPicker) -> dict[str, list[str]]:
        return {"text": pick.require("text", self.columns)}

    def encode(self, transform, example):
        seq, cut = transform.single(transform.tok.encode(example.texts[0]))
        return [seq], cut


class PairTask(TaskType):
    """Two texts read as a pair of columns (so QNLI's (question, sentence) is not SST-2's `sentence`)."""

    pairs: tuple[tuple[str, str], ...] = ()

    def text_columns(self, pick: ColumnPicker) -> dict[str, list[str]]:
        a, b = self.text_fields
        cols = pick.pair(a, b, self.pairs)
        return {a: cols[0], b: cols[1]}


class Entailment(PairTask):
    """<s> premise $ hypothesis <e>"""

    name = "entailment"
    text_fields = ("premise", "hypothesis")
    pairs = (("premise", "hypothesis"), ("sentence1", "sentence2"), ("question", "sentence"))
    infer_regression = False  # entailment labels are classes even when written as numbers

    def encode(self, transform, example):
        enc = transform.tok.encode
        seq, cut = transform.pair(enc(example.texts[0]), enc(example.texts[1]))
        return [seq], cut


class Similarity(PairTask):
    """<s> A $ B <e> and <s> B $ A <e>: both orders run, their <e> states are added before W_y."""

    name = "similarity"
    text_fields = ("sentence1", "sentence2")
    pairs = (("sentence1", "sentence2"), ("question1", "question2"), ("text_a", "text_b"))

    def encode(self, transform, example):
        a, b = transform.tok.encode(example.texts[0]), transform.tok.encode(example.texts[1])
        ab, cut_ab = transform.pair(a, b)
        ba, cut_ba = transform.pair(b, a)
        return [ab, ba], cut_ab or cut_ba

    def batch_sequences(self, sequences):
        # all A$B rows first, then all B$A rows, so the trunk runs once on (2B, T)
        return [s[0] for s in sequences] + [s[1] for s in sequences]

    def make_head(self, spec, n_embd, pdrop, init_std) -> nn.Module:
        return SimilarityHead(n_embd, self.n_outputs(spec), pdrop, init_std)

    hf_missing = "transformers has no head that adds the <e> states of both orders (A$B + B$A)"

    def hf_head(self, spec, head, config, pad_id):
        return None

    def logits(self, spec, head, hidden, batch):
        B = batch.n_examples
        out = head(hidden[:B], batch.extract[:B], hidden[B:], batch.extract[B:])
        return out.squeeze(-1) if spec.regression else out


MC_CONTEXT_COLUMNS = ("context", "article", "story", "sent1", "ctx", "premise", "text")
MC_QUESTION_COLUMNS = ("question", "sent2")
MC_LIST_COLUMNS = ("choices", "options", "endings", "answers", "candidates")
MC_NUMBERED_PREFIXES = ("ending", "answer", "option", "choice", "candidate")


class MultipleChoice(TaskType):
    """<s> context question $ answer_k <e>: one sequence per candidate, a softmax over their scores."""

    name = "multiple_choice"
    text_fields = ("context", "question")
    optional_fields = frozenset({"question"})
    extra_fields = ("choices",)
    label_columns = ("label", "answer", "labels")
    infer_regression = False

    def resolve(self, spec, rows: list[Row], *, need_label: bool) -> ResolvedColumns:
        pick = ColumnPicker(rows, spec.columns)
        out = {"context": pick.require("context", MC_CONTEXT_COLUMNS),
               "question": pick.first("question", MC_QUESTION_COLUMNS) or []}
        choices, is_list = pick.override("choices"), False
        if choices is None:
            choices = next(([c] for c in MC_LIST_COLUMNS if c in pick.present), None)
            is_list = choices is not None
        if choices is None:
            choices = next((n for n in map(pick.numbered, MC_NUMBERED_PREFIXES) if len(n) >= 2), None)
        if choices is None:
            raise missing(rows, "choices (a JSON list column, or ending0..N / answer1..N columns)",
                          list(MC_LIST_COLUMNS) + [f"{p}0..N" for p in MC_NUMBERED_PREFIXES])
        out["choices"] = choices
        out["label"] = pick.label(self.label_columns, out, need_label)
        return ResolvedColumns(out, choices_is_list=is_list or len(choices) == 1)

    def learn(self, spec, rows, columns):
        """The number of candidates, from the first row (`parse` holds every file to it)."""
        return dataclasses.replace(spec, n_choices=len(self.choices(rows[0], columns)))

    def choices(self, row: Row, columns: ResolvedColumns) -> tuple[str, ...]:
        cols = columns.by_field["choices"]
        if columns.choices_is_list:
            value = row.fields.get(cols[0])
            if isinstance(value, str):
                try:
                    value = json.loads(value)  # a JSON list inside a CSV cell
                except (ValueError, RecursionError):  # malformed, a 4300+ digit number, or nested too deep
                    raise GptkitError(f"{row.where()}: field {cols[0]!r} (choices) is not a JSON list") from None
            if not isinstance(value, list | tuple) or len(value) < 2:
                raise GptkitError(f"{row.where()}: field {cols[0]!r} (choices) must be a list of at least 2 answers")
            if any(isinstance(v, list | dict) for v in value):
                raise GptkitError(f"{row.where()}: field {cols[0]!r} (choices) must be a list of texts")
            items = [str(v).strip() if v is not None else "" for v in value]
        else:
            items = [text_of(row, [c], "choices", allow_empty=True) for c in cols]
        for i, item in enumerate(items):
            if not is_valid_text(item):
                raise GptkitError(f"{row.where()}: candidate {i} of field {'+'.join(cols)!r} (choices) holds invalid "
                                  "Unicode (a lone surrogate)")
            if not item:
                raise GptkitError(f"{row.where()}: empty text in candidate {i} of field {'+'.join(cols)!r} (choices)")
        return tuple(items)

    def example(self, spec, row, columns):
        choices = self.choices(row, columns)
        label_cols = columns.by_field["label"]
        label = None
        if label_cols:
            value = row_label(row, label_cols[0])
            names = (row.class_names or {}).get(label_cols[0])
            if names and value in names:  # a ClassLabel (COPA's choice1, choice2): its id is the candidate
                value = names.index(value)
            label = candidate_index(row, label_cols[0], value, len(choices), spec.label_base)
        return Example(self.texts(row, columns), label, row.where(), choices)

    def parse(self, spec, rows, *, need_label):
        examples = super().parse(spec, rows, need_label=need_label)
        n = spec.n_choices or len(examples[0].choices)
        for x in examples:
            if len(x.choices) != n:
                raise GptkitError(f"{x.where}: {len(x.choices)} candidates, but this task has {n} per example")
        return examples

    def encode(self, transform, example):
        enc = transform.tok.encode
        context = enc(example.texts[0])
        # " " + question: a byte-level BPE encodes a word after a space differently ("atoms. What",
        # not "atoms.What"); a `</w>` BPE ignores the space, so its ids are unchanged
        question = enc(" " + example.texts[1]) if example.texts[1] else []
        seqs, cut = [], False
        for answer in example.choices:
            seq, c = transform.choice(context, question, enc(answer))
            seqs.append(seq)
            cut = cut or c
        return seqs, cut

    def choices_per_example(self, sequences):
        return len(sequences[0])

    def n_outputs(self, spec) -> int:
        return 1

    def make_head(self, spec, n_embd, pdrop, init_std) -> nn.Module:
        return MultipleChoiceHead(n_embd, pdrop, init_std)

    def hf_head(self, spec, head, config, pad_id):
        return double_heads(head.linear.weight, config, pdrop=head.dropout.p, pad_id=pad_id)

    def logits(self, spec, head, hidden, batch):
        return head(hidden, batch.extract, batch.n_choices)  # (B, K)

    def loss(self, spec, logits, labels):
        return F.cross_entropy(logits.float(), labels)

    def probabilities(self, spec, logits):
        return logits.float().softmax(dim=-1)

    def predictions(self, spec, probs):
        return probs.argmax(-1)

    def label_dtype(self, spec):
        return torch.long

    def metric_names(self, spec):
        return ("accuracy",)

    def gold(self, spec, label):
        return int(label) + spec.label_base

    def record(self, spec, pred, prob) -> dict[str, Any]:
        return {"prediction": int(pred) + spec.label_base,
                **{f"p_{i + spec.label_base}": float(p) for i, p in enumerate(prob)}}

    def response(self, spec, prob):
        return {"choice": int(prob.argmax()) + spec.label_base, "probabilities": prob.tolist()}


for _type in (Classification(), Entailment(), Similarity(), MultipleChoice()):
    register(_type)
