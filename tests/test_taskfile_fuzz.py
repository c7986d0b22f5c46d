"""The task-file reader on hostile input (issue 17): only success or gptkit's own one-line error.

The defects fuzzing found, each pinned by a test, then a bounded property test (hypothesis) over
JSONL and CSV files of every built-in task type, read, learned and encoded as `finetune` does.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from gptkit.errors import GptkitError
from gptkit.tasks import InputTransform, TaskSpec, load_examples, load_training_examples, task_type_names
from gptkit.tokenizer import train_from_texts

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@pytest.fixture(scope="module")
def tok():
    return train_from_texts(["the cat sat on a mat good bad which story ends well"] * 10, vocab_size=200,
                            min_frequency=1)


def one_line_error(fn, *args) -> str:
    with pytest.raises(GptkitError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_integer_beyond_pythons_digit_limit(tmp_path):
    f = tmp_path / "big.jsonl"
    f.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1' + "0" * 5000 + "}\n", encoding="utf-8")
    msg = one_line_error(load_training_examples, TaskSpec("classification"), f)
    assert msg.startswith(f"{f}, line 2: unreadable JSON value")


def test_huge_numeric_labels_in_a_csv_sort_and_range_check(tmp_path):
    f = tmp_path / "big.csv"
    f.write_text(f"text,label\na,{'9' * 5000}\nb,1\n", encoding="utf-8")
    spec, xs = load_training_examples(TaskSpec("classification"), f)
    assert spec.labels == ["1", "9" * 5000] and [x.label for x in xs] == [1, 0]
    g = tmp_path / "mc.csv"
    g.write_text(f"context,ending0,ending1,label\nc,x,y,{'1' * 5000}\n", encoding="utf-8")
    assert "is out of range for 2 candidates" in one_line_error(load_examples, TaskSpec("multiple_choice"), g)


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path):
    f = tmp_path / "deep.jsonl"
    f.write_text('{"text": "a", "label": ' + "[" * 3000 + "]" * 3000 + "}\n", encoding="utf-8")
    assert one_line_error(load_training_examples, TaskSpec("classification"), f) == f"{f}, line 1: JSON nested too deeply"
    g = tmp_path / "deep.csv"  # a JSON list of choices inside a CSV cell
    g.write_text('context,choices,label\nc,"' + "[" * 3000 + '",0\n', encoding="utf-8")
    assert "line 2: field 'choices' (choices) is not a JSON list" in one_line_error(load_examples, TaskSpec("multiple_choice"), g)


def test_lone_surrogate_names_file_line_and_field(tmp_path, tok):
    f = tmp_path / "s.jsonl"
    f.write_text('{"text": "fine", "label": 0}\n{"text": "\\ud800", "label": 1}\n', encoding="utf-8")
    msg = one_line_error(load_training_examples, TaskSpec("classification"), f)
    assert msg.startswith(f"{f}, line 2: field 'text' holds invalid Unicode")
    g = tmp_path / "deep_surrogate.jsonl"
    g.write_text('{"context": "c", "choices": ["x", ["\\udfff"]], "label": 0}\n', encoding="utf-8")
    assert "line 1: field 'choices' holds invalid Unicode" in one_line_error(load_examples, TaskSpec("multiple_choice"), g)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv", "csv-bom-crlf"])
def test_invalid_utf8_names_the_line_the_byte_is_on(tmp_path, kind):
    """The text reader decodes 8 KB ahead, so its decode error came up on an earlier line (a bad byte
    on line 500 of a JSONL file was reported on line 482, on line 12 of a CSV on line 1)."""
    bad = "caf\xe9".encode("latin-1")
    if kind == "jsonl":
        lines = [b'{"sentence": "good apple river stone", "label": 1}'] * 499
        lines += [b'{"sentence": "' + bad + b'", "label": 1}'] + [b'{"sentence": "bad", "label": 0}'] * 20
        want, end = 500, b"\n"
    else:
        sep = b"\t" if kind == "tsv" else b","
        lines = [b"sentence" + sep + b"label"] + [b"good apple river" + sep + b"1"] * 10
        lines += [bad + b" bad" + sep + b"0", b"bad stone" + sep + b"0"]
        want, end = 12, (b"\r\n" if kind == "csv-bom-crlf" else b"\n")
    data = (b"\xef\xbb\xbf" if kind == "csv-bom-crlf" else b"") + end.join(lines) + end
    f = tmp_path / f"f.{kind.split('-')[0]}"
    f.write_bytes(data)
    msg = one_line_error(load_training_examples, TaskSpec("classification"), f)
    assert msg == (f"{f}, line {want}: invalid UTF-8 at byte offset {data.index(bad) + 3} "
                   "(byte 0xe9: invalid continuation byte); convert it to UTF-8")


def test_byte_level_multiple_choice_joins_context_and_question_with_a_space(tmp_path):
    """A byte-level BPE encodes "atoms. What" and "atoms.What" differently: the context and the
    question must be joined as text (with a space), not as two separately encoded id lists."""
    bl = train_from_texts(["Matter is made of atoms. What comes next? atoms protons"] * 10, vocab_size=400,
                          style="bytelevel", min_frequency=1)
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps({"context": "Matter is made of atoms.", "question": "What comes next?",
                             "choices": ["protons", "atoms"], "label": 0}) + "\n", encoding="utf-8")
    spec = TaskSpec("multiple_choice")
    (x,) = load_examples(spec, f)
    seq = InputTransform(spec, bl, 64).encode(x).sequences[0]
    body = seq[1: seq.index(bl.delim_id)]
    assert body == bl.encode("Matter is made of atoms. What comes next?")
    assert bl.decode(body) == "Matter is made of atoms. What comes next?"


# --- property test ----------------------------------------------------------------------------------

FIELDS = ["text", "sentence", "label", "premise", "hypothesis", "sentence1", "sentence2", "question", "context",
          "choices", "ending0", "ending1", "answer", "score", "x"]
surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00"])
texts = st.one_of(st.text(max_size=30), surrogates, st.sampled_from(["", " ", "1" * 5000, "A", "-3", "0.5", "nan"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=8)
rows = st.lists(st.dictionaries(st.sampled_from(FIELDS) | texts, values, min_size=1, max_size=6), min_size=1, max_size=5)


def _read_as_finetune_does(kind: str, path, tok) -> None:
    spec, xs = load_training_examples(TaskSpec(kind), path)
    InputTransform(spec, tok, 32).encode_all(xs)  # tokenization is where a lone surrogate used to crash
    load_examples(spec, path, need_label=False)


@hypothesis.settings(max_examples=60, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(records=rows, raw=st.lists(st.one_of(texts, st.binary(max_size=20).map(repr)), max_size=2))
def test_jsonl_reader_succeeds_or_raises_gptkit_error(records, raw, tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("fuzz") / "f.jsonl"
    lines = [json.dumps(r) for r in records] + raw  # json.dumps escapes surrogates as \ud800: the attack
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    for kind in task_type_names():
        try:
            _read_as_finetune_does(kind, path, tok)
        except GptkitError as e:
            assert "\n" not in str(e)


@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(header=st.lists(st.sampled_from(FIELDS) | st.text(max_size=8), min_size=1, max_size=5),
                  cells=st.lists(st.lists(st.text(max_size=20) | st.sampled_from(["[", '["a","b"]', "9" * 5000]),
                                          max_size=6), max_size=5))
def test_csv_reader_succeeds_or_raises_gptkit_error(header, cells, tmp_path_factory, tok):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(cells)
    path = tmp_path_factory.mktemp("fuzz") / "f.csv"
    path.write_text(buf.getvalue(), encoding="utf-8", errors="surrogatepass")
    for kind in task_type_names():
        try:
            _read_as_finetune_does(kind, path, tok)
        except GptkitError as e:
            assert "\n" not in str(e)
