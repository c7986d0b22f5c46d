"""Hugging Face model directories as they are published: the paper's `openai-gpt` (vocab.json +
merges.txt, 40,478 entries, no special tokens at all) and GPT-2 (its only special, <|endoftext|>, the
last entry). gptkit's tokenizer appends the task specials it reserves, so it has more ids than the
model has embedding rows; the model must still generate, score and be inspected, and a prompt that
uses a special it was trained without must be refused in one line (it would index past the
embedding)."""

from __future__ import annotations

import json

import pytest
import torch

from gptkit.cli import main
from gptkit.generation.bundle import load_bundle
from gptkit.serve.prompts import PromptReader
from gptkit.serve.protocol import ApiError, CompletionRequest
from gptkit.tasks import zeroshot
from gptkit.tokenizer import GPTTokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

LETTERS = "abcdefghijklmnopqrstuvwxyz.,!'"
MERGES = ["t h", "th e</w>", "a n", "an d</w>", "h a", "ha t</w>", "c a", "ca t</w>"]
TEXT = "the cat and the hat"


def openai_gpt_dir(root):
    """A tiny `openai-gpt` directory: `</w>` vocabulary of the letters and some merges, no specials."""
    vocab = {c: i for i, c in enumerate(LETTERS)}
    vocab.update({c + "</w>": len(LETTERS) + i for i, c in enumerate(LETTERS)})
    for m in MERGES:
        vocab["".join(m.split())] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    torch.manual_seed(0)
    cfg = transformers.OpenAIGPTConfig(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=2, n_head=2)
    transformers.OpenAIGPTLMHeadModel(cfg).save_pretrained(root)
    return root


def gpt2_dir(root):
    """A tiny GPT-2 directory: a byte-level BPE with <|endoftext|> as its last entry, as GPT-2's own."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([TEXT] * 50, trainer)
    vocab = bpe.get_vocab()
    vocab["<|endoftext|>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    merges = json.loads(bpe.to_str())["model"]["merges"]
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(root)
    return root


@pytest.fixture(params=["openai-gpt", "gpt2"])
def hf_dir(request, tmp_path):
    return (openai_gpt_dir if request.param == "openai-gpt" else gpt2_dir)(tmp_path)


def hf_greedy(model_dir, ids, n):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


def test_generate_on_a_published_directory_matches_transformers(hf_dir, capsys):
    tok = GPTTokenizer.load(hf_dir)
    rows = json.loads((hf_dir / "config.json").read_text())["vocab_size"]
    assert tok.vocab_size > rows  # the case under test: specials past the model's rows
    assert main(["generate", str(hf_dir), TEXT, "--max-new-tokens", "6", "--temperature", "0", "--json"]) == 0
    sample = json.loads(capsys.readouterr().out)["samples"][0]
    prompt = tok.encode(TEXT)
    assert sample["ids"] and all(i < rows for i in sample["ids"])
    assert prompt + sample["ids"] == hf_greedy(hf_dir, prompt, 6)[: len(prompt) + len(sample["ids"])]


def test_specials_the_model_lacks_are_refused_where_they_are_used(tmp_path, capsys):
    d = openai_gpt_dir(tmp_path)
    capsys.readouterr()  # transformers' own progress output while saving
    for prompt, says in [("", "an empty prompt starts at the end-of-text token, which this model was trained without"),
                         ("the _start_ cat", "the prompt holds the special token _start_ (id 68), which this model "
                                             "was trained without: it embeds only ids 0..67"),
                         ("the 9 cat", "the prompt has a character the vocabulary cannot spell")]:
        assert main(["generate", str(d), prompt, "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["inspect", "attention", str(d), "the _start_ cat", "--out", str(tmp_path / "a.png")]) == 2
    assert "the text holds the special token _start_" in capsys.readouterr().err
    reader = PromptReader(load_bundle(d, device="cpu"))
    for prompt in ["", [[]], "the _delimiter_"]:
        with pytest.raises(ApiError) as e:
            reader.read(reader.items(CompletionRequest(prompt=prompt)), echo=False)
        assert e.value.status == 400 and "prompt[0]: " in str(e.value)


def test_a_tokenizer_whose_text_needs_more_rows_is_still_refused(tmp_path, capsys):
    d = openai_gpt_dir(tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["vocab_size"] -= 1  # the last merge now has no row
    (d / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    weights = {k: v[:-1] if v.shape[0] == config["vocab_size"] + 1 else v
               for k, v in load_file(d / "model.safetensors").items()}
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["generate", str(d), TEXT, "--max-new-tokens", "2"]) == 2
    assert "do not belong together" in capsys.readouterr().err


def test_zero_shot_without_an_end_of_text_row_scores_from_the_second_token(tmp_path):
    """The paper's vocabulary has no <|endoftext|> to condition on, so a text's first token is the
    condition and the rest is scored: the same numbers transformers gives for that split."""
    d = openai_gpt_dir(tmp_path)
    bundle = load_bundle(d, device="cpu")
    tok = bundle.tokenizer
    assert zeroshot.document_start(bundle.model, tok) == []
    got = zeroshot.mean_logprob(bundle.model, tok, [TEXT, "a hat"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    for text, score in zip([TEXT, "a hat"], got):
        ids = tok.encode(text)
        with torch.no_grad():
            logp = hf(torch.tensor([ids])).logits[0].log_softmax(-1)
        want = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean()
        assert abs(float(score) - float(want)) < 1e-5
    with pytest.raises(Exception, match="too few to score without an end-of-text token"):
        zeroshot.mean_logprob(bundle.model, tok, ["a"])
    data = tmp_path / "sst.jsonl"
    data.write_text("".join(json.dumps({"sentence": s, "label": y}) + "\n"
                            for s, y in [("the cat", 1), ("the hat", 0), ("and the cat", 1)]))
    result = zeroshot.sentiment(bundle.model, tok, data, label_words="hat,cat", cue="")
    assert result.details["examples"] == 3
