"""Held-out examples stay out of pre-training text (data/overlap.py)."""

from __future__ import annotations

from gptkit.data.overlap import NGRAM_WORDS, drop_overlapping

HELD_OUT = ["The acting is wooden , the plot is thin and the jokes fall flat .", "a masterpiece ."]


def test_a_document_quoting_eight_words_of_a_held_out_example_is_dropped():
    quoting = "I agree with the critic: THE PLOT IS THIN, AND THE JOKES FALL FLAT! Skip it."
    seven = "the plot is thin and the jokes were fine"  # 7 words of a run, then it departs
    kept, dropped = drop_overlapping([quoting, seven, "Nothing like it."], HELD_OUT)
    assert NGRAM_WORDS == 8
    assert kept == [seven, "Nothing like it."] and dropped == 1


def test_a_short_held_out_example_only_matches_a_document_of_exactly_its_words():
    kept, dropped = drop_overlapping(["Truly a masterpiece of its kind.", "A masterpiece!"], HELD_OUT)
    assert kept == ["Truly a masterpiece of its kind."] and dropped == 1


def test_a_held_out_example_of_exactly_eight_words_is_a_run_not_a_whole_text():
    """The boundary: eight words are enough to count as a quotation wherever they appear."""
    eight = "the jokes fall flat and the plot drags"
    assert len(eight.split()) == NGRAM_WORDS
    quoting = "Worse still, The jokes fall flat and the plot drags on for two hours."
    kept, dropped = drop_overlapping([quoting, "The jokes land."], [eight])
    assert kept == ["The jokes land."] and dropped == 1
