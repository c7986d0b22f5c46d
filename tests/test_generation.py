"""Generation on ids: cache exactness, batching, sampling filters, sliding window, stops, text layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gptkit import GPT
from gptkit.generation import (
    GenerationConfig,
    StopStrings,
    TextStream,
    apply_repetition_penalty,
    choose_tokens,
    filter_top_k,
    filter_top_p,
    generate,
    stream_generate,
    token_pieces,
)
from gptkit.generation.engine import FinishEvent, TokenEvent
from gptkit.model import preset

PROMPTS = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [4], [30, 31, 32, 33]]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def lively_model(block_order: str = "post_ln", n_ctx: int = 64, seed: int = 0) -> GPT:
    """A tiny random model with a wide init, so greedy decoding does not collapse onto one token
    (a collapsed output would let a broken cache pass)."""
    torch.manual_seed(seed)
    return GPT(preset("tiny", block_order=block_order, n_ctx=n_ctx, initializer_range=0.3)).eval()


def ids_of(model, prompts, **kw):
    return [c.ids for c in generate(model, prompts, GenerationConfig(**kw))]


@pytest.mark.parametrize("block_order", ["post_ln", "pre_ln"])
@pytest.mark.parametrize(
    "sampling",
    [dict(temperature=0.0), dict(temperature=0.9, top_k=40, top_p=0.95, seed=7, num_samples=2)],
    ids=["greedy", "seeded"],
)
def test_cached_equals_uncached(block_order, sampling):
    model = lively_model(block_order)
    cached = ids_of(model, PROMPTS, max_new_tokens=40, **sampling)
    uncached = ids_of(model, PROMPTS, max_new_tokens=40, use_cache=False, **sampling)
    assert cached == uncached
    assert all(len(set(ids)) > 3 for ids in cached), "degenerate output cannot test the cache"


@pytest.mark.parametrize("block_order", ["post_ln", "pre_ln"])
def test_batched_rows_equal_each_prompt_alone(block_order):
    model = lively_model(block_order)
    batched = ids_of(model, PROMPTS, max_new_tokens=30, temperature=0.0)
    alone = [ids_of(model, [p], max_new_tokens=30, temperature=0.0)[0] for p in PROMPTS]
    assert batched == alone


def reference_greedy(model: GPT, prompt: list[int], steps: int, stride: int) -> list[int]:
    """The documented semantics written plainly: condition on a window starting at position 0; when
    it would exceed n_ctx, keep its last n_ctx - stride tokens."""
    n_ctx = model.config.n_ctx
    tokens, start, out = list(prompt), max(0, len(prompt) - n_ctx), []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([tokens[start:]]))[0, -1].argmax())
            tokens.append(nxt)
            out.append(nxt)
            if len(tokens) - start > n_ctx:
                start = len(tokens) - (n_ctx - stride)
    return out


def test_temperature_zero_is_greedy_and_matches_reference():
    model = lively_model()
    got = ids_of(model, [PROMPTS[1]], max_new_tokens=25, temperature=0.0)[0]
    assert got == reference_greedy(model, PROMPTS[1], 25, stride=16)
    # top_k=1 is greedy too, whatever the temperature and seed
    assert ids_of(model, [PROMPTS[1]], max_new_tokens=25, temperature=1.5, top_k=1, seed=3)[0] == got


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_beyond_context_window(use_cache):
    model = lively_model(n_ctx=16)
    prompts = [[1, 2, 3, 4, 5], list(range(40, 60))]  # the second prompt is longer than n_ctx already
    got = ids_of(model, prompts, max_new_tokens=50, temperature=0.0, window_stride=5, use_cache=use_cache)
    assert [len(g) for g in got] == [50, 50]
    for p, g in zip(prompts, got):
        assert g == reference_greedy(model, p, 50, stride=5)


def test_sliding_window_sampled_cached_equals_uncached():
    model = lively_model(n_ctx=16, block_order="pre_ln")
    kw = dict(max_new_tokens=45, temperature=1.0, seed=11, num_samples=3)
    assert ids_of(model, [[7, 8], [9]], **kw) == ids_of(model, [[7, 8], [9]], use_cache=False, **kw)


def crafted_logits(batch: int) -> torch.Tensor:
    probs = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.02])
    return probs.log().expand(batch, -1).clone()


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = crafted_logits(64)
    seen = set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        seen |= set(choose_tokens(logits, temperature=1.3, top_k=3, generator=g).tolist())
    assert seen == {0, 1, 2}


def test_top_p_never_samples_outside_the_nucleus():
    logits = crafted_logits(64)
    seen = set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        seen |= set(choose_tokens(logits, temperature=1.0, top_p=0.72, generator=g).tolist())
    # 0.40 + 0.25 = 0.65 < 0.72, + 0.15 = 0.80 >= 0.72: the nucleus is the three most likely tokens
    assert seen == {0, 1, 2}
    g = torch.Generator().manual_seed(0)
    assert set(choose_tokens(logits, top_p=0.01, generator=g).tolist()) == {0}  # the top token always stays


def test_filters_and_sampling_frequencies():
    logits = crafted_logits(1)
    assert torch.isinf(filter_top_k(logits, 2)[0, 2:]).all() and torch.isfinite(filter_top_k(logits, 2)[0, :2]).all()
    assert torch.isinf(filter_top_p(logits, 0.5)[0, 2:]).all()
    g = torch.Generator().manual_seed(0)
    draws = choose_tokens(crafted_logits(20000), generator=g)
    freq = torch.bincount(draws, minlength=7).float() / 20000
    assert torch.allclose(freq, crafted_logits(1).exp()[0], atol=0.015)


def test_repetition_penalty_lowers_seen_tokens_whatever_the_sign():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    out = apply_repetition_penalty(logits, [[0, 1, 1]], 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]
    model = lively_model()
    plain = ids_of(model, [PROMPTS[0]], max_new_tokens=30, temperature=0.0)[0]
    penalised = ids_of(model, [PROMPTS[0]], max_new_tokens=30, temperature=0.0, repetition_penalty=5.0)[0]
    assert len(set(penalised)) > len(set(plain)) or penalised != plain


def test_seed_reproducible_and_samples_differ():
    model = lively_model()
    kw = dict(max_new_tokens=20, temperature=1.0, num_samples=3)
    a = ids_of(model, [PROMPTS[0]], seed=5, **kw)
    assert a == ids_of(model, [PROMPTS[0]], seed=5, **kw)
    assert a != ids_of(model, [PROMPTS[0]], seed=6, **kw)
    assert len({tuple(x) for x in a}) == 3  # the n samples of one prompt are not copies


def test_stop_ids_and_stop_callback():
    model = lively_model()
    free = ids_of(model, [PROMPTS[1]], max_new_tokens=20, temperature=0.0)[0]
    stop_token = free[5]
    first = free.index(stop_token)
    done = generate(model, [PROMPTS[1]], GenerationConfig(max_new_tokens=20, temperature=0.0, stop_ids=(stop_token,)))[0]
    assert done.ids == free[:first] and done.finish_reason == "stop"

    calls = []

    def after_three(row, generated):
        calls.append(row)
        return len(generated) >= 3

    done = generate(model, [PROMPTS[1]], GenerationConfig(max_new_tokens=20, temperature=0.0), should_stop=after_three)[0]
    assert done.ids == free[:3] and done.finish_reason == "stop" and calls == [0, 0, 0]
    length = generate(model, [PROMPTS[1]], GenerationConfig(max_new_tokens=4, temperature=0.0))[0]
    assert length.finish_reason == "length" and len(length.ids) == 4


def test_logprobs_are_the_models_and_top_alternatives_sorted():
    model = lively_model()
    c = generate(model, [PROMPTS[0]], GenerationConfig(max_new_tokens=6, temperature=0.0, top_logprobs=3))[0]
    with torch.no_grad():
        full = torch.log_softmax(model(torch.tensor([PROMPTS[0] + c.ids])), dim=-1)[0]
    for i, (tok, lp, top) in enumerate(zip(c.ids, c.logprobs, c.top_logprobs)):
        assert lp == pytest.approx(full[len(PROMPTS[0]) - 1 + i, tok].item(), abs=1e-5)
        assert len(top) == 3 and top[0][0] == tok  # greedy: the chosen token is the most likely
        assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)


def test_stream_yields_tokens_then_one_finish_per_row():
    model = lively_model()
    events = list(stream_generate(model, PROMPTS[:2], GenerationConfig(max_new_tokens=5, temperature=0.0, num_samples=2)))
    for row in range(4):
        mine = [e for e in events if e.row == row]
        assert all(isinstance(e, TokenEvent) for e in mine[:-1]) and len(mine) == 6
        assert isinstance(mine[-1], FinishEvent) and mine[-1].reason == "length"


@pytest.mark.parametrize(
    "bad",
    [dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0),
     dict(num_samples=0), dict(window_stride=64), dict(temperature=float("nan")), dict(temperature=float("inf")),
     dict(top_p=float("nan")), dict(repetition_penalty=float("nan")), dict(repetition_penalty=float("inf"))],
)
def test_bad_config_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate(lively_model(), [[1]], GenerationConfig(**bad))


@pytest.mark.parametrize("bad", [dict(temperature=float("nan")), dict(temperature=-0.5), dict(top_p=float("nan")),
                                 dict(top_p=0.0)])
def test_sampling_refuses_what_no_distribution_means(bad):
    """A NaN temperature would turn every probability into NaN, and argmax over NaN picks token 0."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        choose_tokens(torch.randn(2, 10), **bad)


def test_bad_prompts_rejected():
    with pytest.raises(ValueError, match="empty"):
        generate(lively_model(), [[1], []], GenerationConfig())
    with pytest.raises(ValueError, match="outside"):
        generate(lively_model(), [[1, 9999]], GenerationConfig())


def test_config_is_hashable_for_batching():
    a = GenerationConfig(temperature=0.0)
    assert hash(a) == hash(dataclasses.replace(a)) and a == GenerationConfig(temperature=0.0)


# --- text layer -------------------------------------------------------------------------------


def byte_decode(ids: list[int]) -> str:
    """A byte-level 'tokenizer': one token per byte, so characters can split across tokens."""
    return bytes(ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_incomplete_utf8():
    s = TextStream(byte_decode)
    pieces = [s.push(b)[0] for b in "é€x".encode()]
    assert pieces == ["", "é", "", "", "€", "x"]
    assert s.finish() == "" and s.text == "é€x"


def test_text_stream_stop_string_across_tokens_never_shown():
    s = TextStream(byte_decode, stops=["END", "\n\n"])
    shown, stopped = "", False
    for b in b"hello ENxEND tail":
        delta, stopped = s.push(b)
        shown += delta
        if stopped:
            break
    assert stopped and shown == "hello ENx" and s.text == "hello ENx"
    assert s.n_tokens_at_stop == len(b"hello ENxEND")


def test_stop_strings_safe_length():
    st = StopStrings(["abc", "xy"])
    assert st.safe_length("zzab") == 2 and st.safe_length("zzx") == 2 and st.safe_length("zz") == 2
    assert st.find("..xy..abc") == 2 and st.find("none") is None


def test_token_pieces_join_to_the_text():
    ids = list("aé€".encode())
    assert token_pieces(byte_decode, ids) == ["a", "", "é", "", "", "€"]
    assert "".join(token_pieces(byte_decode, ids, context=list(b"xy"))) == "aé€"


class NaiveTextStream:
    """The reference for TextStream: every step decodes the whole row (after the prompt context),
    emits what extends the shown text and holds back a possible stop string's start and a trailing
    replacement character. Quadratic, and obviously what the text should be."""

    def __init__(self, decode, stops=(), context=()):
        self.stops, self.ids, self.shown, self.stopped = StopStrings(stops), [], "", False
        self.context = list(context)[-TextStream.CONTEXT_TOKENS:]
        self.context_text, self.raw = (decode(self.context) if self.context else ""), decode

    def decode(self, ids):
        full = self.raw(self.context + ids)
        return full[len(self.context_text):] if full.startswith(self.context_text) else self.raw(ids)

    def advance(self, visible):
        delta = visible[len(self.shown):] if len(visible) > len(self.shown) else ""
        self.shown = visible if delta else self.shown
        return delta

    def push(self, token):
        if self.stopped:
            return "", True
        self.ids.append(token)
        full = self.decode(self.ids)
        cut = self.stops.find(full)
        if cut is not None:
            self.stopped = True
            return self.advance(full[:cut]), True
        safe = self.stops.safe_length(full)
        while safe > 0 and full[safe - 1] == "\ufffd":
            safe -= 1
        return self.advance(full[:safe]), False

    @property
    def text(self):
        full = self.decode(self.ids)
        cut = self.stops.find(full)
        return full if cut is None else full[:cut]


def _decoders():
    from gptkit.tokenizer import train_from_texts

    texts = ["the cat sat on the mat. the dog sat on the log, a bird sang!", "héllo wörld, café crème — naïve 日本語"] * 20
    gpt1 = train_from_texts(texts, vocab_size=300, style="gpt1")
    bytelevel = train_from_texts(texts, vocab_size=300, style="bytelevel")
    return {"bytes": (byte_decode, 256), "gpt1": (gpt1.decode, gpt1.vocab_size),
            "bytelevel": (bytelevel.decode, bytelevel.vocab_size)}


@pytest.mark.parametrize("name", ["bytes", "gpt1", "bytelevel"])
def test_text_stream_equals_decoding_the_whole_row_every_step(name):
    """Past many commits (rows of 600 tokens, commits every 16 past 64), with stop strings short and
    long and with a prompt context, every delta, the stop, the text and the held-back tail are what
    decoding the whole row at every step gives."""
    decode, vocab = _decoders()[name]
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        ids = torch.randint(5, vocab, (600,), generator=g).tolist()
        probe = NaiveTextStream(decode).decode(ids)
        # a stop string the row really holds late (without U+FFFD: a partial character's stand-in is
        # not text the row keeps), and one it never holds, longer than many tokens' text
        k = 2 + trial % 5
        late = next((probe[i:i + k] for i in range(400, len(probe) - k) if "\ufffd" not in probe[i:i + k]), "the")
        stops = [] if trial % 3 == 0 else [late, "zq\u00e9" * trial]
        context = [] if trial % 2 else torch.randint(5, vocab, (6,), generator=g).tolist()
        fast, slow = TextStream(decode, stops, context), NaiveTextStream(decode, stops, context)
        for i, token in enumerate(ids):
            assert fast.push(token) == slow.push(token), (name, trial, i)
        assert fast.text == slow.text and fast.emitted == slow.shown
        assert fast.finish() == slow.advance(slow.text)
        assert "".join(token_pieces(decode, ids, context)) == NaiveTextStream(decode, (), context).decode(ids)


def test_text_stream_work_per_token_is_bounded():
    """Each token decodes a bounded tail, not the whole row: 4,000 tokens decode well under what
    re-decoding the row every step (8 million ids) would."""
    decoded = []

    def counting_decode(ids):
        decoded.append(len(ids))
        return byte_decode(ids)

    stream = TextStream(counting_decode, stops=["\n\n"])
    for i in range(4000):
        stream.push(97 + i % 26)
    assert sum(decoded) < 100 * 4000
    assert stream.text == "".join(chr(97 + i % 26) for i in range(4000))


def test_inference_mode_does_not_leak_into_the_caller():
    seen = [torch.is_inference_mode_enabled() for _ in stream_generate(lively_model(), [[1, 2]], GenerationConfig(max_new_tokens=3))]
    assert seen and not any(seen)


def test_training_mode_is_restored():
    model = lively_model().train()
    generate(model, [[1]], GenerationConfig(max_new_tokens=2))
    assert model.training
    model.eval()
    generate(model, [[1]], GenerationConfig(max_new_tokens=2))
    assert not model.training


def test_a_tiny_temperature_acts_greedy_instead_of_overflowing():
    """logits / 1e-40 overflows fp32: the softmax was NaN and argmax returned token 0 whatever the
    logits said (the server answered an empty completion)."""
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0], [-5.0, -7.0, -2.0, -9.0]])
    for t in (1e-40, 1e-300, 5e-324):
        assert choose_tokens(logits, temperature=t).tolist() == [1, 2]
        assert choose_tokens(logits, temperature=t, top_k=3, top_p=0.9).tolist() == [1, 2]
    g = torch.Generator().manual_seed(0)  # an ordinary temperature still samples (not silently greedy)
    drawn = {choose_tokens(torch.zeros(1, 4), temperature=1.0, generator=g).item() for _ in range(50)}
    assert len(drawn) > 1


def test_an_extreme_repetition_penalty_keeps_logits_finite():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    encouraged = apply_repetition_penalty(logits, [[0, 3]], 1e-300)  # < 1 favours seen tokens
    assert torch.isfinite(encouraged).all() and choose_tokens(encouraged, temperature=0.7).item() == 0
    punished = apply_repetition_penalty(logits, [[1, 3]], 1e300)
    assert torch.isfinite(punished).all() and choose_tokens(punished, temperature=0.0).item() == 2
