"""Seeded text perturbations for the robustness evaluation."""

import numpy as np
import pytest

from examples.bert.perturb import perturb_text, perturb_texts

TEXTS = [f"tweet number {i} says the weather is lovely today #{i}" for i in range(200)]


def test_deterministic_and_independent_of_order():
    a = perturb_texts(TEXTS, seed=3)
    assert a == perturb_texts(TEXTS, seed=3)
    # Text i's noise depends only on (seed, i): perturbing a prefix gives a prefix.
    assert perturb_texts(TEXTS[:50], seed=3) == a[:50]
    assert a != perturb_texts(TEXTS, seed=4)


def test_rates_are_what_they_say():
    n_chars = sum(sum(c.isalnum() for c in t) for t in TEXTS)
    dropped = perturb_texts(TEXTS, seed=0, char_drop=0.1, word_swap=0.0)
    kept = sum(sum(c.isalnum() for c in t) for t in dropped)
    rate = 1 - kept / n_chars
    # ~8,000 Bernoulli(0.1) draws: the standard error is ~0.0034; allow 4 of them.
    assert abs(rate - 0.1) < 0.014, rate
    swapped = perturb_texts(TEXTS, seed=0, char_drop=0.0, word_swap=1.0)
    assert all(sorted(s.split()) == sorted(t.split()) for s, t in zip(swapped, TEXTS, strict=True))
    assert all(s.split()[:2] == t.split()[1::-1] for s, t in zip(swapped, TEXTS, strict=True))


def test_no_noise_is_identity_and_text_never_vanishes():
    assert perturb_texts(TEXTS, char_drop=0.0, word_swap=0.0) == TEXTS
    assert perturb_text("ok", np.random.default_rng(0), 1.0, 0.0) == "ok"


@pytest.mark.parametrize("kwargs", [{"char_drop": -0.1}, {"word_swap": 1.5}])
def test_bad_probabilities(kwargs):
    with pytest.raises(ValueError, match="must be a probability"):
        perturb_texts(TEXTS, **kwargs)


def test_docstring_examples():
    import doctest

    from examples.bert import perturb

    assert doctest.testmod(perturb).failed == 0
