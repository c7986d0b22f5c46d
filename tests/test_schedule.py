"""Learning-rate schedules equal their formulas at the steps that define them."""

import math

import pytest

from gptkit.errors import GptkitError
from gptkit.training import constant, warmup_cosine, warmup_linear


def test_warmup_cosine_known_steps():
    s = warmup_cosine(2.5e-4, warmup=2000, total=10000)
    assert s(0) == pytest.approx(2.5e-4 / 2000, abs=1e-18)  # the ramp from 0, but no update at lr 0
    assert s(999) == pytest.approx(1.25e-4, rel=0, abs=1e-15)  # mid-warmup: half
    assert s(1999) == pytest.approx(2.5e-4, rel=0, abs=1e-15)  # the last warmup update: the maximum
    assert s(2000) == pytest.approx(2.5e-4, rel=0, abs=1e-15)  # end of warmup: the maximum
    mid = 2000 + (10000 - 2000) // 2
    assert s(mid) == pytest.approx(2.5e-4 * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=1e-15)
    assert s(7000) == pytest.approx(2.5e-4 * 0.5 * (1 + math.cos(math.pi * 5000 / 8000)), abs=1e-15)
    assert s(10000) == 0.0 and s(12000) == 0.0  # annealed to 0 at the end, stays there
    values = [s(i) for i in range(2000, 10001, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after warmup


def test_warmup_linear_known_steps():
    s = warmup_linear(6.25e-5, warmup=6, total=3000)  # 0.2% warmup, fine-tuning defaults
    assert s(0) == pytest.approx(6.25e-5 / 6, abs=1e-18)
    assert s(2) == pytest.approx(6.25e-5 / 2, abs=1e-18)
    assert s(6) == pytest.approx(6.25e-5, abs=1e-18)
    assert s(1503) == pytest.approx(6.25e-5 * (3000 - 1503) / (3000 - 6), abs=1e-18)
    assert s(3000) == 0.0


def test_zero_warmup_and_constant():
    assert warmup_cosine(1.0, 0, 10)(0) == 1.0
    assert warmup_linear(1.0, 0, 10)(5) == pytest.approx(0.5)
    assert constant(3e-4)(123456) == 3e-4
    assert warmup_cosine(1.0, 2, 10).to_dict() == {"name": "warmup_cosine", "max_lr": 1.0, "warmup": 2, "total": 10}


def test_bad_schedule_refused():
    with pytest.raises(GptkitError):
        warmup_cosine(-1.0, 10, 100)
    with pytest.raises(GptkitError):
        warmup_linear(1.0, 10, 0)
