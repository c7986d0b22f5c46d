"""Derived tasks: pair, similarity, multiple-choice and word-order tasks built from the Wikipedia leads.

The built-in labelled data is single-text classification only. To exercise the paper's other input
transformations on real text, these tasks are DERIVED from the lead sections of the `wikipedia`
dataset. They are named as derived everywhere; they are not SNLI, MRPC, Story Cloze or CoLA, and their
numbers are not comparable with those benchmarks'.

    derived_continuation   entailment-style: does sentence B continue passage A (the article's first
                           sentence), or is it the second sentence of another article? (continues /
                           other_article)
    derived_same_article   similarity-style: are two sentences (an article's second and third) from the
                           same article, or from two articles of different topics (the second of one, the
                           third of the other)? The label is a property of the unordered pair (symmetric by
                           construction); the order of the two is drawn from a hash (same_article /
                           different_topic)
    derived_next_sentence  multiple choice: the article's first sentence as context; its true second
                           sentence among 4, the 3 distractors being second sentences of other articles
    derived_word_order     acceptability-style (zero-shot heuristic): a second sentence as written, or with
                           a span of 4 consecutive words reversed (original / scrambled)

Splits: an example takes the split of its article, the topic task's (sha256(title) mod 10, see
builders.SPLIT_RULE); distractors come from articles of the same split, so no text crosses splits. The
'Uncategorized' articles (no topic split) are never used. Every choice (which examples are positive,
which article gives a distractor, where the right answer sits) is a function of sha256 of the article
titles, so the files do not depend on the order of the source or on the Python hash seed.

Test passages and pre-training text: the demo withholds the topic task's validation and test
articles from pre-training, so a test example is built from held-out articles only. `build_derived` also drops every
validation or test example that contains a sentence found in another split's articles, and every test
example with a sentence of the `exclude` set (the caller passes the sentences of the real pre-training text), so a test sentence the LM
has read verbatim (a sentence shared by two articles, say) never enters a test set.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SPLITS = ("train", "validation", "test")
N_CHOICES = 4
SCRAMBLE_SPAN = 4
MIN_WORDS = 4
"""Sentences shorter than this (in words) are not used: too little to decide anything on."""

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) before whitespace and an
# upper-case letter or digit, unless the word ending there is an initial or a short abbreviation.
_BOUNDARY = re.compile(r"(?<=[.!?])([\"')\]]?)\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-Z]|[A-Z][a-z]{1,2}|(?:[A-Za-z]\.)+[A-Za-z]|e\.g|i\.e|etc|vs|c|ca|no)\.$")


def split_sentences(text: str) -> list[str]:
    """Sentences of a lead section (a rule, not a parser: initials such as 'J. S. Bach' and short
    abbreviations such as 'St.' or 'U.S.' do not end a sentence)."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end = m.start() + len(m.group(1))
        if _ABBREVIATION.search(text[start:end]):
            continue
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [" ".join(s.split()) for s in out]


def normalize(sentence: str) -> str:
    """The form sentences are compared in for overlap (case and spacing do not make a sentence new)."""
    return " ".join(sentence.lower().split())


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class Article:
    title: str
    topic: str
    split: str
    sentences: tuple[str, ...]


def articles_from_documents(documents: Iterable[dict[str, Any]]) -> list[Article]:
    """The usable articles of the `wikipedia` dataset's documents.jsonl: those with a topic split (the
    'Uncategorized' ones have none) and at least two sentences of MIN_WORDS words, sorted by title."""
    out = []
    for d in documents:
        split = d.get("topic_split")
        if split not in SPLITS:
            continue
        sentences = tuple(s for s in split_sentences(str(d.get("text") or "")) if len(s.split()) >= MIN_WORDS)
        if len(sentences) >= 2:
            out.append(Article(str(d["title"]), str(d.get("topic")), split, sentences))
    return sorted(out, key=lambda a: a.title)


def _other(pool: list[Article], article: Article, salt: str, *, avoid: set[str] = frozenset(),
           different_topic: bool = False, min_sentences: int = 2) -> Article | None:
    """A deterministic other article of `pool` (same split): a hash picks the start, the first one
    that fits wins."""
    if not pool:
        return None
    start = _h(article.title, salt) % len(pool)
    for k in range(len(pool)):
        other = pool[(start + k) % len(pool)]
        if other.title == article.title or other.title in avoid:
            continue
        if (different_topic and other.topic == article.topic) or len(other.sentences) < min_sentences:
            continue
        return other
    return None


def _scrambled(sentence: str, key: str) -> str | None:
    words = sentence.split()
    if len(words) < SCRAMBLE_SPAN + 1:
        return None
    start = _h(key, "span") % (len(words) - SCRAMBLE_SPAN + 1)
    span = words[start: start + SCRAMBLE_SPAN]
    if span == span[::-1]:
        return None
    return " ".join(words[:start] + span[::-1] + words[start + SCRAMBLE_SPAN:])


def _continuation(a: Article, pool: list[Article]) -> dict[str, Any] | None:
    if _h(a.title, "continuation") % 2 == 0:
        return {"premise": a.sentences[0], "hypothesis": a.sentences[1], "label": "continues", "article": a.title}
    other = _other(pool, a, "continuation-distractor")
    if other is None:
        return None
    return {"premise": a.sentences[0], "hypothesis": other.sentences[1], "label": "other_article",
            "article": a.title, "distractor_article": other.title}


def _same_article(a: Article, pool: list[Article]) -> dict[str, Any] | None:
    # Only articles with 3+ sentences take part, and both kinds of pair use the same positions (a
    # second and a third sentence), so position in the lead tells nothing about the label.
    if len(a.sentences) < 3:
        return None
    if _h(a.title, "same") % 2 == 0:
        pair, row = (a.sentences[1], a.sentences[2]), {"label": "same_article", "article": a.title}
    else:
        other = _other(pool, a, "same-distractor", different_topic=True, min_sentences=3)
        if other is None:
            return None
        pair = (a.sentences[1], other.sentences[2])
        row = {"label": "different_topic", "article": a.title, "distractor_article": other.title}
    if _h(a.title, "order") % 2:
        pair = pair[::-1]
    return {"sentence1": pair[0], "sentence2": pair[1], **row}


def _next_sentence(a: Article, pool: list[Article]) -> dict[str, Any] | None:
    distractors: list[Article] = []
    for k in range(N_CHOICES - 1):
        other = _other(pool, a, f"choice-{k}", avoid={d.title for d in distractors})
        if other is None:
            return None
        distractors.append(other)
    answer = _h(a.title, "answer") % N_CHOICES
    choices = [d.sentences[1] for d in distractors]
    choices.insert(answer, a.sentences[1])
    if len({normalize(c) for c in choices}) < N_CHOICES:
        return None
    return {"context": a.sentences[0], "choices": choices, "label": answer, "article": a.title,
            "distractor_articles": [d.title for d in distractors]}


def _word_order(a: Article, pool: list[Article]) -> dict[str, Any] | None:
    sentence = a.sentences[1]
    if _h(a.title, "word-order") % 2 == 0:
        return {"text": sentence, "label": "original", "article": a.title}
    scrambled = _scrambled(sentence, a.title)
    if scrambled is None:
        return None
    return {"text": scrambled, "label": "scrambled", "article": a.title}


@dataclass(frozen=True)
class DerivedTask:
    name: str
    task_type: str
    """The gptkit task type (`gptkit finetune --task`), i.e. the input transformation it uses."""
    description: str
    build: Any
    text_fields: tuple[str, ...]


DERIVED_TASKS: dict[str, DerivedTask] = {t.name: t for t in (
    DerivedTask("derived_continuation", "entailment",
                "does sentence B continue passage A (a Wikipedia lead's first sentence), or come from another "
                "article? (derived from the Wikipedia leads, not SNLI/MNLI)", _continuation, ("premise", "hypothesis")),
    DerivedTask("derived_same_article", "similarity",
                "are two sentences from the same article, or from articles of different topics? (derived, "
                "symmetric by construction; not MRPC/QQP)", _same_article, ("sentence1", "sentence2")),
    DerivedTask("derived_next_sentence", "multiple_choice",
                "the true next sentence of a lead's first sentence among 4, distractors from other articles "
                "(derived; not Story Cloze/RACE)", _next_sentence, ("context", "choices")),
    DerivedTask("derived_word_order", "classification",
                "a sentence as written, or with 4 consecutive words reversed (derived acceptability-style task; "
                "not CoLA)", _word_order, ("text",)),
)}


def example_sentences(row: dict[str, Any], task: DerivedTask) -> list[str]:
    """Every sentence of text in a derived row (for the overlap checks)."""
    out: list[str] = []
    for f in task.text_fields:
        value = row[f]
        out.extend(value if isinstance(value, list) else [value])
    return out


def build_derived(documents: Iterable[dict[str, Any]], names: Iterable[str] | None = None, *,
                  exclude: Iterable[str] = ()) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Any]]:
    """The derived tasks' rows, {task: {split: [row, ...]}}, and statistics for meta.json.

    `exclude`: sentences (any case or spacing) a test example must not contain, e.g. the sentences of
    the pre-training text (the demo withholds validation and test articles). For a scrambled word-order example, the sentence it was made
    from is what is checked."""
    articles = articles_from_documents(documents)
    by_split: dict[str, list[Article]] = defaultdict(list)
    seen_in: dict[str, set[str]] = defaultdict(set)
    for a in articles:
        by_split[a.split].append(a)
        for s in a.sentences:
            seen_in[normalize(s)].add(a.split)
    excluded = {normalize(s) for s in exclude}
    tasks = [DERIVED_TASKS[n] for n in (names or DERIVED_TASKS)]
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    stats: dict[str, Any] = {"articles": {s: len(by_split[s]) for s in SPLITS}, "tasks": {}}
    for task in tasks:
        rows_by_split: dict[str, list[dict[str, Any]]] = {}
        dropped = 0
        for split in SPLITS:
            rows = []
            for a in by_split[split]:
                row = task.build(a, by_split[split])
                if row is None:
                    continue
                sources = [a.sentences[1]] if task.name == "derived_word_order" else example_sentences(row, task)
                if split != "train" and any(seen_in[normalize(s)] - {split} or (split == "test" and normalize(s) in excluded)
                                            for s in sources):
                    dropped += 1
                    continue
                rows.append(row)
            rows_by_split[split] = rows
        out[task.name] = rows_by_split
        labels: dict[str, int] = defaultdict(int)
        for rows in rows_by_split.values():
            for r in rows:
                labels[str(r["label"])] += 1
        stats["tasks"][task.name] = {"task_type": task.task_type, "description": task.description,
                                     "sizes": {s: len(r) for s, r in rows_by_split.items()},
                                     "labels": dict(sorted(labels.items())),
                                     "dropped_overlapping": dropped}
    return out, stats
