"""Seeded noise for robustness checks: character drops and word swaps in texts (deterministic
given a seed and a text's index), and flipped labels."""

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

    Text ``i`` draws from ``default_rng([seed mod 2**64, i])``: independent of the others.

    Args:
      texts: the texts.
      seed: the noise's seed.
      char_drop: as :func:`perturb_text`.
      word_swap: as :func:`perturb_text`.

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


def flip_labels(labels: np.ndarray, fraction: float, num_labels: int, seed: int) -> np.ndarray:
    """Label noise: a copy of ``labels`` with a share of them changed to another class.

    Exactly ``round(fraction * n)`` examples get a label drawn uniformly from the other
    classes (symmetric noise: always wrong), from ``default_rng([seed mod 2**64, 0x1abe1])``.

    Args:
      labels: the integer labels, ``[n]``, in ``[0, num_labels)``.
      fraction: the share of labels to flip, in [0, 1].
      num_labels: the number of classes (at least 2).
      seed: the noise's seed (any int).

    Returns:
      The noisy labels, same shape and dtype; ``labels`` is left as it is.

    Raises:
      ValueError: for a fraction outside [0, 1] or fewer than two classes.

    Example:
      >>> noisy = flip_labels(np.zeros(10, np.int32), 0.3, num_labels=3, seed=0)
      >>> int((noisy != 0).sum())
      3
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the label-noise fraction must lie in [0, 1], got {fraction}.")
    if num_labels < 2:
        raise ValueError(f"label noise needs at least two classes, got {num_labels}.")
    rng = np.random.default_rng([seed % 2**64, 0x1ABE1])
    flipped = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    shift = rng.integers(1, num_labels, size=len(flipped))
    noisy = np.array(labels, copy=True)
    noisy[flipped] = (noisy[flipped] + shift) % num_labels
    return noisy
