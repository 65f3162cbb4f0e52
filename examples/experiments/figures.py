"""The experiments' figures: the sweep's two comparisons and the study's five."""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from examples.bert.plots import moving_average
from examples.experiments import runner, study_design


def plot_sweep(rows: list[dict[str, Any]], results_dir: str) -> None:
    """Accuracy against E[scale], one point per run; mean loss curves per arm."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    colors = {arm: plt.cm.tab10(i % 10) for i, arm in enumerate(arms)}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        ax.scatter([r["expected_scale"] for r in mine], [r["accuracy"] for r in mine],
                   color=colors[arm], label=arm, s=36, alpha=0.85)  # fmt: skip
    _finish(fig, ax, results_dir, "accuracy_vs_expected_scale.png",
            "E[scale] of the ruleset (baseline: 1, no dice)", "validation accuracy",
            "Final accuracy against the ruleset's expected scale (one point per run)",
            title_size=None)  # fmt: skip
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for arm in arms:
        curves = [
            np.asarray([m["loss"] for m in runner.read_metrics(r["run_dir"])
                        if m["kind"] == "train"], dtype=np.float64)
            for r in rows if r["arm"] == arm
        ]  # fmt: skip
        n = min(len(c) for c in curves)
        if n == 0:
            continue
        mean = np.mean([c[:n] for c in curves], axis=0)
        ax.plot(np.arange(1, n + 1), moving_average(mean, max(1, n // 15)), color=colors[arm],
                label=arm)  # fmt: skip
    _finish(fig, ax, results_dir, "loss_curves.png", "micro-batch",
            "training loss before the roll (mean over seeds, moving average)",
            "Training loss per arm", title_size=None)  # fmt: skip


#: The study's figures, each drawn where its data is measured.
STUDY_FIGURES = ("accuracy_vs_lr.png", "budget.png", "weight_noise.png", "interpolation.png",
                 "label_noise.png")  # fmt: skip


def plot_study(v: Any, results_dir: str) -> None:
    """The study's figures: accuracy against lr, the budget curve, weight noise, the line
    between baseline and dice per seed, and what noisy labels cost each arm.

    Args:
      v: the study's :class:`~examples.experiments.study_report.View` (its settings, rows, lines,
        best lrs).
      results_dir: where the PNGs go.
    """

    arms = [arm for arm in study_design.ARMS if any(r["arm"] == arm for r in v.rows)]
    colors = {arm: plt.cm.tab10(i % 10) for i, arm in enumerate(study_design.ARMS)}
    for name in STUDY_FIGURES:  # one with nothing to draw must not leave an old report's behind
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(results_dir, name))
    _accuracy_vs_lr(v, arms, colors, results_dir)
    _budget_curve(v, colors, results_dir)
    _weight_noise(v, arms, colors, results_dir)
    _interpolation(v, results_dir)
    _label_noise(v, colors, results_dir)


def _mean_std(values: Any) -> tuple[float, float]:
    v = runner.finite(values)  # None, NaN and missing values left out
    return (float(v.mean()) if v.size else math.nan), (float(v.std()) if v.size else 0.0)


def _accuracy_vs_lr(v: Any, arms: list[str], colors: dict, results_dir: str) -> None:
    clean = [r for r in v.rows if r["steps"] == v.cfg.steps and not r["label_noise"]]
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        lrs = sorted({r["lr"] for r in clean if r["arm"] == arm})
        stats = [_mean_std(r["accuracy"] for r in clean if r["arm"] == arm and r["lr"] == lr)
                 for lr in lrs]  # fmt: skip
        ax.errorbar(lrs, [m for m, _ in stats], yerr=[s for _, s in stats], color=colors[arm],
                    marker="o", capsize=3, label=arm)  # fmt: skip
    ax.set_xscale("log")
    _finish(fig, ax, results_dir, "accuracy_vs_lr.png", "peak learning rate",
            "final accuracy (mean ± std over seeds)",
            f"Clean accuracy against the learning rate ({v.cfg.steps} updates)")  # fmt: skip


def _budget_curve(v: Any, colors: dict, results_dir: str) -> None:

    budgets = [v.cfg.steps, *v.cfg.budgets]
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for arm in study_design.BUDGET_ARMS:
        points = [(b, _mean_std(r["accuracy"] for r in study_design.at_best_rows(v.rows, v.best, b)
                                if r["arm"] == arm)) for b in budgets]  # fmt: skip
        points = [(b, m, s) for b, (m, s) in points if math.isfinite(m)]
        if points:
            drawn = True
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=[p[2] for p in points], color=colors[arm], marker="o", capsize=3,
                        label=arm)  # fmt: skip
    if not drawn:
        plt.close(fig)
        return
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    _finish(fig, ax, results_dir, "budget.png", "updates", "final accuracy (mean ± std)",
            "The budget curve, each arm at its best lr")  # fmt: skip


def _weight_noise(v: Any, arms: list[str], colors: dict, results_dir: str) -> None:

    rows = [r for r in v.at_best if "flat_sigma" in r and math.isfinite(float(r["flat_sigma"]))]
    sigmas = study_design.sigmas_in(rows)
    if not sigmas:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        if mine:
            stats = [_mean_std(r.get(f"weight_noise_change_{s:g}") for r in mine) for s in sigmas]
            ax.errorbar([0.0, *sigmas], [0.0, *(m for m, _ in stats)],
                        yerr=[0.0, *(s for _, s in stats)], color=colors[arm], marker="o",
                        capsize=3, label=f"{arm} ({len(mine)} runs)")  # fmt: skip
    ax.axhline(-study_design.FLAT_LOSS, color="grey", lw=0.8, ls="--")
    _finish(fig, ax, results_dir, "weight_noise.png", "sigma (each row moved by sigma x its norm)",
            "accuracy change / headroom", "Weight noise at each arm's best lr "
            "(-1: down to the majority class)")  # fmt: skip


def _interpolation(v: Any, results_dir: str) -> None:
    lines = v.per_seed_lines()
    if not lines:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (seed, line) in enumerate(lines.items()):
        color = plt.cm.tab10(i % 10)
        ax.plot(line["alphas"], line["loss"], marker="o", ms=3, color=color, label=f"seed {seed}")
        ends = [line["loss"][line["alphas"].index(a)] for a in (0.0, 1.0)]
        ax.plot([0.0, 1.0], ends, color=color, ls=":", lw=1)
    for x, name in ((0.0, "baseline"), (1.0, "dice before")):
        ax.axvline(x, color="grey", lw=0.8, ls="--")
        ax.annotate(name, (x, ax.get_ylim()[1]), ha="center", va="top", fontsize=8)
    _finish(fig, ax, results_dir, "interpolation.png", "alpha", "validation loss",
            "(1 - alpha) baseline + alpha dice, same seed; dotted: the chord")  # fmt: skip


def _label_noise(v: Any, colors: dict, results_dir: str) -> None:

    noisy = study_design.at_best_rows(v.rows, v.best, v.cfg.steps, v.cfg.label_noise)
    shown = [arm for arm in study_design.ORIGINAL_ARMS if any(r["arm"] == arm for r in noisy)]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for x, arm in enumerate(shown):
        clean = {r["seed"]: r["accuracy"] for r in v.at_best if r["arm"] == arm}
        cost = [r["accuracy"] - clean[r["seed"]] for r in noisy
                if r["arm"] == arm and r["seed"] in clean]  # fmt: skip
        ax.scatter([x] * len(cost), cost, color=colors[arm], alpha=0.7)
        mean, std = _mean_std(cost)
        ax.errorbar([x + 0.15], [mean], yerr=[std], color="black", marker="_", capsize=4)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(shown)), shown, rotation=20, ha="right", fontsize=8)
    _finish(fig, ax, results_dir, "label_noise.png", "",
            "noisy minus clean final accuracy, per seed",
            f"What {v.cfg.label_noise:.0%} flipped labels cost each arm (paired by seed)",
            legend=False)  # fmt: skip


def _finish(fig: Any, ax: Any, results_dir: str, name: str, x: str, y: str, title: str,
            legend: bool = True, title_size: int | None = 10) -> None:  # fmt: skip
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(results_dir, name), dpi=120)
    plt.close(fig)
