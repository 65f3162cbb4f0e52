"""One run's figure (``run.png``): four panels, and a fifth with the game."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from examples.bert import records
from optax_dice import game


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    if x.size == 0:
        return x
    window = max(1, min(window, x.size))
    c = np.cumsum(np.insert(x, 0, 0.0))
    out = np.empty_like(x, dtype=np.float64)
    out[window - 1 :] = (c[window:] - c[:-window]) / window
    out[: window - 1] = c[1:window] / np.arange(1, window)
    return out


def plot_run(
    run_records: Sequence[records.Record],
    path: str | os.PathLike,
    *,
    face_probs: np.ndarray | None,
    expected_scale: float | None,
    title: str,
    majority_accuracy: float | None = None,
    expected_scale_exact: bool = True,
) -> None:
    """Draws the run into a PNG: four panels, and a fifth with game mechanics.

    1. training loss before the roll and after it (loss x scale), smoothed;
    2. validation loss and accuracy;
    3. the histogram of the rolled natural faces against the exact odds;
    4. the scale of every roll against E[scale];
    5. when the records carry levels (``--character``, ``--encounter-chance`` or
       ``--experience``): level and XP after each roll, with the steps where a monster
       acted shaded, one colour per monster.

    Args:
      run_records: the records of ``metrics.jsonl`` (:func:`examples.bert.records.read_metrics`).
      path: the PNG to write.
      face_probs: the exact probability of each natural face (None without dice).
      expected_scale: E[scale] (None without dice).
      title: the figure's title.
      majority_accuracy: the accuracy of always predicting the majority class, drawn for
        reference.
      expected_scale_exact: False when ``expected_scale`` is an estimate (game mechanics
        with memory); the line is labelled so.
    """
    rolls = records.rolls(run_records)
    game_rolls = [r for r in rolls if r.has_game]
    fig = plt.figure(figsize=(12, 12.5 if game_rolls else 8.5))
    grid = fig.add_gridspec(3 if game_rolls else 2, 2)
    axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(2)] for i in range(2)])
    fig.suptitle(title, fontsize=11)
    _plot_loss(axes[0, 0], records.train_records(run_records), rolls)
    _plot_evals(axes[0, 1], records.evals(run_records), majority_accuracy)
    _plot_faces(axes[1, 0], rolls, face_probs)
    _plot_scales(axes[1, 1], rolls, expected_scale, expected_scale_exact)
    if game_rolls:
        _plot_game(fig.add_subplot(grid[2, :]), game_rolls)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _values(rs: Sequence[Any], name: str) -> np.ndarray:
    """A field of records as float64 (None, a non-finite loss, as NaN)."""
    return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rs], float)


def _plot_loss(ax: Any, train: list[records.TrainRecord], rolls: list[records.TrainRecord]) -> None:
    """Training loss before the roll and after it (x scale), smoothed."""
    window = max(1, len(train) // 25)
    if train:
        x = np.array([r.micro_step for r in train])
        loss = _values(train, "loss")
        ax.plot(x, loss, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(x, moving_average(loss, window), color="tab:blue", label="loss before the roll")
        if rolls:
            xr = np.array([r.micro_step for r in rolls])
            scaled = _values(rolls, "scaled_loss")
            ax.plot(xr, scaled, color="tab:red", alpha=0.2, lw=0.8)
            ax.plot(
                xr,
                moving_average(scaled, window),
                color="tab:red",
                label="loss after the roll (x scale)",
            )
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"training loss (moving average over {window})", fontsize=10)
    ax.set_xlabel("micro-step")


def _plot_evals(ax: Any, evals: list[records.EvalRecord], majority: float | None) -> None:
    """Validation loss, accuracy and macro-F1 by update."""
    if evals:
        x = [r.step for r in evals]
        ax.plot(x, _values(evals, "loss"), "o-", color="tab:blue", label="eval loss")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot(x, [r.accuracy for r in evals], "s-", color="tab:green", label="accuracy")
        ax2.plot(x, [r.macro_f1 for r in evals], "^--", color="tab:olive", label="macro-F1")
        if majority is not None:
            ax2.axhline(majority, color="grey", ls=":", label="majority class")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("accuracy, macro-F1")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    ax.set_title("validation", fontsize=10)
    ax.set_xlabel("update")


def _plot_faces(ax: Any, rolls: list[records.TrainRecord], face_probs: np.ndarray | None) -> None:
    """The histogram of the natural faces rolled, against the exact odds."""
    if face_probs is not None and rolls:
        sides = len(face_probs)
        faces = np.arange(1, sides + 1)
        counts = np.bincount([r.natural for r in rolls], minlength=sides + 1)[1:]
        ax.bar(faces, counts, color="tab:purple", alpha=0.6, label=f"rolled ({len(rolls)})")
        ax.plot(faces, face_probs * len(rolls), "k_", ms=14, mew=2, label="exact odds")
        ax.set_xticks(faces if sides <= 20 else faces[:: math.ceil(sides / 20)])
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no dice (--mode off)", ha="center", va="center")
    ax.set_title("natural faces rolled", fontsize=10)
    ax.set_xlabel("natural")


def _plot_scales(
    ax: Any, rolls: list[records.TrainRecord], expected: float | None, exact: bool
) -> None:
    """The scale of every roll against E[scale]."""
    if rolls:
        scales = _values(rolls, "scale")
        xr = [r.micro_step for r in rolls]
        ax.scatter(xr, scales, s=6, color="tab:purple", alpha=0.5, label="scale")
        ax.axhline(float(scales.mean()), color="tab:purple", lw=1, label="mean scale")
        if expected is not None:
            label = "E[scale]" if exact else "E[scale] (estimated)"
            ax.axhline(expected, color="black", ls="--", lw=1, label=label)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no dice (--mode off)", ha="center", va="center")
    ax.set_title("scale of each roll", fontsize=10)
    ax.set_xlabel("micro-step")


def encounter_spans(rolls: Sequence[records.TrainRecord]) -> list[tuple[int, int, int]]:
    """The encounters in rolled train records, as ``(monster, first, last)`` micro-steps.

    An encounter starts at a record whose ``encounter_step`` is 1 (the monster appeared on
    that roll) and lasts while the following records show the same monster acting on.

    Example:
      >>> recs = [records.TrainRecord(i + 1, i + 1, 0.5, 1.0, 1e-3, True, True, monster=m,
      ...                             encounter_step=e)
      ...         for i, (m, e) in enumerate([(-1, 0), (2, 1), (2, 2), (2, 3), (2, 1), (-1, 0)])]
      >>> encounter_spans(recs)
      [(2, 2, 4), (2, 5, 5)]
    """
    spans: list[tuple[int, int, int]] = []
    for r in rolls:
        if r.monster is None or r.monster < 0:
            continue
        if r.encounter_step == 1 or not spans or spans[-1][0] != r.monster:
            spans.append((r.monster, r.micro_step, r.micro_step))
        else:
            spans[-1] = (spans[-1][0], spans[-1][1], r.micro_step)
    return spans


def _plot_game(ax: Any, rolls: Sequence[records.TrainRecord]) -> None:
    """Level and XP after each roll; the spans where a monster acted, shaded per monster."""
    x = np.array([r.micro_step for r in rolls])
    gap = float(np.median(np.diff(x))) if x.size > 1 else 1.0  # micro-steps between rolls
    colors = {code: plt.cm.Set2(code) for code in range(len(game.MONSTERS))}
    shaded = set()
    for monster, first, last in encounter_spans(rolls):
        ax.axvspan(  # a white edge parts two encounters in a row
            first - gap / 2,
            last + gap / 2,
            facecolor=colors[monster],
            edgecolor="white",
            alpha=0.35,
            lw=1.5,
            label=None if monster in shaded else game.MONSTERS[monster],
        )
        shaded.add(monster)
    ax.step(x, [r.level for r in rolls], where="post", color="tab:blue", label="level")
    ax.set_ylabel("level")
    ax.set_xlabel("micro-step")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax2 = ax.twinx()
    ax2.plot(x, [r.xp for r in rolls], color="tab:orange", lw=1, label="XP towards next level")
    ax2.set_ylabel("XP")
    lines, lines2 = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("level and XP after each roll; shaded: a monster acted", fontsize=10)
