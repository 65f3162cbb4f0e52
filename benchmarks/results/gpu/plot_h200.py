"""The figure of results.md: accuracy against E[scale] at the CPU budget and at 10x on an H200.

The H200 sweep's per-run files did not come back from the lent machine (its tool returns a
handful of files), so this reads the table the sweep printed into its log,
``h200-2026-11-26-call1/study-sweep.log``, and the CPU sweep's ``../rulesets/results.csv``.

Run:  python benchmarks/results/gpu/plot_h200.py
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
LOG = HERE / "h200-2026-11-26-call1" / "study-sweep.log"
CPU = HERE.parent / "rulesets" / "results.csv"
OUT = HERE / "accuracy_vs_expected_scale_h200.png"
#: Where the labels of crowded points go (points), so that none overlaps another.
LABEL_OFFSETS = {
    "original rule, DC 15": (-5, -10),
    "DC 15, advantage": (-6, 2),
    "DC 12, +2 (default)": (6, -5),
    "DC 12, +2, per accumulation step x4": (6, 3),
}
ROW = re.compile(r"^\| (?P<arm>[^|]+?) \| (?P<scale>off|[+-][\d.]+) \([^|]*\| (?P<acc>[\d.]+) ±")


def h200_rows() -> dict[str, tuple[float, float]]:
    """arm -> (E[scale], accuracy) from the last table in the sweep's log."""
    rows: dict[str, tuple[float, float]] = {}
    for line in LOG.read_text().splitlines():
        if line.startswith("| baseline (off) | off |"):
            rows = {}  # a later table replaces an earlier one
        off = re.match(r"^\| (baseline \(off\)) \| off \| ([\d.]+) ±", line)
        if off:
            rows[off.group(1)] = (1.0, float(off.group(2)))
            continue
        match = ROW.match(line)
        if match:
            rows[match["arm"]] = (float(match["scale"]), float(match["acc"]))
    return rows


def main() -> None:
    """Writes the figure."""
    with open(CPU) as f:
        cpu = {r["arm"]: r for r in csv.DictReader(f)}
    h200 = h200_rows()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.errorbar(
        [float(r["expected_scale"]) for r in cpu.values()],
        [float(r["accuracy_mean"]) for r in cpu.values()],
        yerr=[float(r["accuracy_std"]) for r in cpu.values()],
        fmt="o",
        color="tab:gray",
        capsize=3,
        label="CPU budget: 120 micro-batches, mean ± std of 3 seeds",
    )
    ax.scatter(
        [s for s, _ in h200.values()],
        [a for _, a in h200.values()],
        marker="D",
        color="tab:red",
        zorder=3,
        label="10x on one H200: 1,200 micro-batches, seed 0 only",
    )
    for arm, (scale, acc) in h200.items():
        dx, dy = LABEL_OFFSETS.get(arm, (5, 3))
        ax.annotate(
            arm, (scale, acc), fontsize=6, xytext=(dx, dy), textcoords="offset points",
            ha="left" if dx > 0 else "right",
        )  # fmt: skip
    ax.set_xlabel("E[scale] of the ruleset (baseline: 1, no dice)")
    ax.set_ylabel("validation accuracy (1,000 tweets)")
    ax.set_title("all-MiniLM-L6-v2 on the tweets: accuracy against E[scale], two budgets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT} ({len(h200)} H200 arms, {len(cpu)} CPU arms)")


if __name__ == "__main__":
    main()
