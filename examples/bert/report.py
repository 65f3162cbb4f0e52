"""What a run leaves behind: metrics.jsonl, summary.json, config.json and a PNG figure.

``metrics.jsonl`` holds one JSON object a line: ``{"kind": "train", ...}`` for every
micro-step (loss before the roll, the roll's natural, total and scale, the loss after it,
the learning rate) and ``{"kind": "eval", ...}`` for every evaluation (loss, accuracy,
macro-F1), and ``{"kind": "eval_perturbed", ...}`` for the final evaluation on perturbed
texts (``--perturbed-eval``). ``micro_step`` counts micro-batches done, ``step`` applied
updates done.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
FIGURE_FILE = "run.png"


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by None.

    Python's json writes them as bare ``NaN`` / ``Infinity``, which strict JSON readers
    refuse; a diverged run's loss is recorded as ``null`` instead.

    Example:
      >>> strict_json({"loss": float("nan"), "xs": [1.0, float("inf")], "n": 3})
      {'loss': None, 'xs': [1.0, None], 'n': 3}
    """
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` of ``value``: always valid, strict JSON."""
    return json.dumps(strict_json(value), allow_nan=False, default=_jsonable, **kwargs)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Writes ``data`` as indented, strict JSON (NaN and infinities as null), atomically
    (a temporary file, then a rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(dumps(data, indent=2, sort_keys=False))
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON file."""
    with open(path) as f:
        return json.load(f)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl`` (an incomplete last line, from a killed run, is skipped)."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl``.

    Args:
      path: the file.
      resume_micro_step: when resuming from the checkpoint at this micro-step, the records
        after it (written by the run that was stopped, and about to be made again) are
        dropped first, so that the file reads as if the run had never stopped.
    """

    def __init__(self, path: str | os.PathLike, *, resume_micro_step: int | None = None) -> None:
        self.path = os.fspath(path)
        if resume_micro_step is not None:
            kept = [r for r in read_metrics(self.path) if r["micro_step"] <= resume_micro_step]
            with open(self.path, "w") as f:
                f.writelines(dumps(r) + "\n" for r in kept)
        self._file = open(self.path, "a")

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records and flushes."""
        self._file.writelines(dumps(r) + "\n" for r in records)
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    if x.size == 0:
        return x
    window = max(1, min(window, x.size))
    c = np.cumsum(np.insert(x, 0, 0.0))
    out = np.empty_like(x, dtype=np.float64)
    out[window - 1 :] = (c[window:] - c[:-window]) / window
    out[: window - 1] = c[1:window] / np.arange(1, window)
    return out


def plot_run(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    face_probs: np.ndarray | None,
    expected_scale: float | None,
    title: str,
    majority_accuracy: float | None = None,
) -> None:
    """Draws the run into a PNG: four panels.

    1. training loss before the roll and after it (loss x scale), smoothed;
    2. validation loss and accuracy;
    3. the histogram of the rolled natural faces against the exact odds;
    4. the scale of every roll against E[scale].

    Args:
      records: the records of ``metrics.jsonl``.
      path: the PNG to write.
      face_probs: the exact probability of each natural face (None without dice).
      expected_scale: E[scale] (None without dice).
      title: the figure's title.
      majority_accuracy: the accuracy of always predicting the majority class, drawn for
        reference.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    rolls = [r for r in train if r.get("rolled")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle(title, fontsize=11)

    ax = axes[0, 0]
    if train:
        x = np.array([r["micro_step"] for r in train])
        loss = np.array([r["loss"] for r in train], np.float64)
        window = max(1, len(train) // 25)
        ax.plot(x, loss, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(x, _moving_average(loss, window), color="tab:blue", label="loss before the roll")
        if rolls:
            xr = np.array([r["micro_step"] for r in rolls])
            scaled = np.array([r["scaled_loss"] for r in rolls], np.float64)
            ax.plot(xr, scaled, color="tab:red", alpha=0.2, lw=0.8)
            ax.plot(
                xr,
                _moving_average(scaled, window),
                color="tab:red",
                label="loss after the roll (x scale)",
            )
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"training loss (moving average over {max(1, len(train) // 25)})", fontsize=10)
    ax.set_xlabel("micro-step")

    ax = axes[0, 1]
    if evals:
        x = [r["step"] for r in evals]
        ax.plot(x, [r["loss"] for r in evals], "o-", color="tab:blue", label="eval loss")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot(x, [r["accuracy"] for r in evals], "s-", color="tab:green", label="accuracy")
        ax2.plot(x, [r["macro_f1"] for r in evals], "^--", color="tab:olive", label="macro-F1")
        if majority_accuracy is not None:
            ax2.axhline(majority_accuracy, color="grey", ls=":", label="majority class")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("accuracy, macro-F1")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    ax.set_title("validation", fontsize=10)
    ax.set_xlabel("update")

    ax = axes[1, 0]
    if face_probs is not None and rolls:
        sides = len(face_probs)
        faces = np.arange(1, sides + 1)
        counts = np.bincount([int(r["natural"]) for r in rolls], minlength=sides + 1)[1:]
        ax.bar(faces, counts, color="tab:purple", alpha=0.6, label=f"rolled ({len(rolls)})")
        expected = face_probs * len(rolls)
        ax.plot(faces, expected, "k_", ms=14, mew=2, label="exact odds")
        ax.set_xticks(faces if sides <= 20 else faces[:: math.ceil(sides / 20)])
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no dice (--mode off)", ha="center", va="center")
    ax.set_title("natural faces rolled", fontsize=10)
    ax.set_xlabel("natural")

    ax = axes[1, 1]
    if rolls:
        xr = [r["micro_step"] for r in rolls]
        scales = np.array([r["scale"] for r in rolls], np.float64)
        ax.scatter(xr, scales, s=6, color="tab:purple", alpha=0.5, label="scale")
        ax.axhline(float(scales.mean()), color="tab:purple", lw=1, label="mean scale")
        if expected_scale is not None:
            ax.axhline(expected_scale, color="black", ls="--", lw=1, label="E[scale]")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no dice (--mode off)", ha="center", va="center")
    ax.set_title("scale of each roll", fontsize=10)
    ax.set_xlabel("micro-step")

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
