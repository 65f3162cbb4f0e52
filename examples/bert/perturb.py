"""Seeded text perturbations, for measuring how robust a fine-tuned model is.

Two kinds of noise, both deterministic given a seed and a text's index (so the perturbed
validation set is the same for every run that uses it):

* character drops: every letter or digit is deleted with probability ``char_drop``;
* word swaps: each pair of neighbouring words is swapped with probability ``word_swap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def perturb_text(text: str, rng: np.random.Generator, char_drop: float, word_swap: float) -> str:
    """Drops characters and swaps neighbouring words of one text.

    Args:
      text: the text.
      rng: the generator that draws the noise.
      char_drop: the probability that a letter or digit is dropped.
      word_swap: the probability that a word changes place with the next one.

    Returns:
      The perturbed text (never empty when ``text`` has a letter or digit: one is kept).

    Example:
      >>> import numpy as np
      >>> perturb_text("the cat sat on the mat", np.random.default_rng(0), 0.0, 1.0)
      'cat the on sat mat the'
    """
    kept = "".join(c for c in text if not (c.isalnum() and rng.random() < char_drop))
    if not any(c.isalnum() for c in kept):
        kept = text
    words = kept.split()
    i = 0
    while i + 1 < len(words):
        if rng.random() < word_swap:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return " ".join(words)


def perturb_texts(
    texts: Sequence[str], *, seed: int = 0, char_drop: float = 0.05, word_swap: float = 0.1
) -> list[str]:
    """Perturbs every text with its own seeded generator.

    Text ``i`` draws from ``np.random.default_rng([seed mod 2**64, i])``, so its noise does not
    depend on the other texts or their order (any int seed works).

    Args:
      texts: the texts.
      seed: the noise's seed.
      char_drop: the probability that a letter or digit is dropped.
      word_swap: the probability that a word changes place with the next one.

    Returns:
      The perturbed texts, in order.

    Raises:
      ValueError: for a probability outside [0, 1].

    Example:
      >>> perturb_texts(["great movie"], seed=1, char_drop=0.0, word_swap=0.0)
      ['great movie']
    """
    for name, p in (("char_drop", char_drop), ("word_swap", word_swap)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}.")
    return [
        perturb_text(t, np.random.default_rng([seed % 2**64, i]), char_drop, word_swap)
        for i, t in enumerate(texts)
    ]
