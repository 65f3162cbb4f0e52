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


MIXED = [
    f"order {i:06d} of 2026 shipped to room {7 * i:05d} on day {i % 31:02d}" for i in range(400)
]


def _count(texts, kind):
    return sum(sum(getattr(c, kind)() for c in t) for t in texts)


def test_rates_are_what_they_say_for_letters_and_digits_alike():
    dropped = perturb_texts(MIXED, seed=0, char_drop=0.1, word_swap=0.0)
    # Letters and digits are counted apart, so a letters-only (or digits-only) drop fails:
    # ~10,000 letters and ~7,200 digits, each Bernoulli(0.1): standard errors ~0.003 and
    # ~0.0035; allow 4 of them.
    for kind, tolerance in (("isalpha", 0.012), ("isdigit", 0.014)):
        rate = 1 - _count(dropped, kind) / _count(MIXED, kind)
        assert abs(rate - 0.1) < tolerance, (kind, rate)


def test_word_swap_one_swaps_every_pair():
    swapped = perturb_texts(TEXTS, seed=0, char_drop=0.0, word_swap=1.0)
    for s, t in zip(swapped, TEXTS, strict=True):
        words = t.split()
        want = []
        for i in range(0, len(words) - 1, 2):
            want += [words[i + 1], words[i]]
        if len(words) % 2:
            want.append(words[-1])
        assert s.split() == want


def test_word_swap_rate():
    # Scanning left to right, a swap at rate p skips the next word: the share of words that
    # moved is 2p / (1 + p) for long texts (2/11 for p = 0.1, within a few per cent here).
    words = " ".join(f"w{i}" for i in range(2000))
    moved = [
        sum(a != b for a, b in zip(s.split(), words.split(), strict=True))
        for s in perturb_texts([words] * 5, seed=0, char_drop=0.0, word_swap=0.1)
    ]
    share = sum(moved) / (5 * 2000)
    assert abs(share - 2 * 0.1 / 1.1) < 0.02, share


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
