"""The Results experiment: what each dice ruleset does to fine-tuning, on real data.

Every arm fine-tunes the packaged all-MiniLM-L6-v2 on the tweets corpus with the training
script (:mod:`examples.bert.train`), the same split, the same micro-batch budget and the
same learning-rate schedule, for several seeds; every final model is also evaluated on a
perturbed copy of the validation set (seeded character drops and word swaps), to measure
robustness. Then it writes, under ``--results-dir``:

* ``results.md`` and ``results.csv``: per arm, mean and standard deviation of validation
  accuracy, macro-F1, final training loss, perturbed accuracy and the drop, with the arm's
  exact E[scale] and std from :func:`optax_dice.odds`;
* ``runs.csv``: one row per run;
* ``accuracy_vs_expected_scale.png`` and ``loss_curves.png``.

The sweep resumes: a run whose ``summary.json`` exists is not run again, so it can be spread
over several sittings, and it runs unchanged on a GPU (pass a bigger ``--micro-steps``).
``--jobs N`` runs N training processes at once (a GPU that one small run leaves mostly idle
is shared by several; each child process gets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless
set, so that none takes most of the device's memory), launching seed by seed so that
the later seeds of an arm find its compiled step in JAX's persistent cache where one is set
(``JAX_COMPILATION_CACHE_DIR``).

Run ``python examples/bert/sweep.py`` (``--help`` for the budget flags).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

import optax_dice
from examples.bert import plots, rundir, train, train_config
from examples.bert.train_config import TrainConfig

#: name -> the arm's settings of the training run (fields of TrainConfig).
ARMS: dict[str, dict[str, Any]] = {
    "baseline (off)": {"mode": "off"},
    "DC 12, +2 (default)": {"threshold": 12, "modifier": 2},
    "DC 15, +0 (seed)": {"threshold": 15, "modifier": 0},
    "DC 10, +0": {"threshold": 10, "modifier": 0},
    "DC 15, advantage": {"threshold": 15, "modifier": 0, "advantage": True},
    "DC 15, disadvantage": {"threshold": 15, "modifier": 0, "disadvantage": True},
    "original rule, DC 15": {"threshold": 15, "modifier": 0, "rule": "original"},
    "DC 12, +2, per accumulation step x4": {
        "threshold": 12,
        "modifier": 2,
        "mode": "per_accumulation_step",
        "accumulation_steps": 4,
    },
}


def slug(name: str) -> str:
    """A folder name for an arm."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the sweep."""
    p = argparse.ArgumentParser(
        prog="python examples/bert/sweep.py",
        description="Fine-tune with every dice ruleset and several seeds; tabulate and plot.",
    )
    p.add_argument("--runs-dir", default="runs/sweep", help="where the runs go (runs/sweep)")
    p.add_argument(
        "--results-dir",
        default="benchmarks/results/rulesets",
        help="tables and figures (benchmarks/results/rulesets)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (0 1 2)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="training runs at once, each in its own process (1: one after another, in this "
        "process)",
    )
    p.add_argument(
        "--arms",
        nargs="+",
        default=None,
        metavar="ARM",
        help=f"a subset of the arms, by folder name: {', '.join(slug(a) for a in ARMS)}",
    )
    p.add_argument(
        "--micro-steps",
        type=int,
        default=120,
        help="micro-batches per run, the same for every arm (120)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-eval-samples", type=int, default=1000)
    p.add_argument("--char-drop", type=float, default=0.1, help="perturbation: P(drop a char)")
    p.add_argument("--word-swap", type=float, default=0.2, help="perturbation: P(swap words)")
    p.add_argument(
        "--train-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="anything after this goes to every run of the training script as it is",
    )
    return p


def _arms(selected: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    if not selected:
        return ARMS
    by_slug = {slug(name): name for name in ARMS}
    unknown = [s for s in selected if s not in by_slug]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}: choose from {sorted(by_slug)}")
    return {by_slug[s]: ARMS[by_slug[s]] for s in selected}


def run_settings(
    args: argparse.Namespace, arm: dict[str, Any], seed: int, out: str
) -> dict[str, Any]:
    """The settings (TrainConfig fields) of one run: the sweep's budget, the arm's dice, the
    seed, then whatever ``--train-args`` says."""
    k = arm.get("accumulation_steps", 1)
    if args.micro_steps % k:
        raise SystemExit(f"--micro-steps {args.micro_steps} is not a multiple of {k}")
    budget = dict(
        steps=args.micro_steps // k,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lr=args.lr,
        max_eval_samples=args.max_eval_samples,
        eval_every=0,
        save_every=0,
        perturbed_eval=True,
        char_drop=args.char_drop,
        word_swap=args.word_swap,
        no_progress=True,
        output_dir=out,
    )
    return {**arm, "seed": seed, **budget, **train_config.typed_flags(args.train_args)}


def final_train_loss(run_dir: str, last: int = 20) -> float:
    """The mean training loss (before the roll) of a run's last ``last`` micro-batches."""
    records = rundir.read_metrics(os.path.join(run_dir, rundir.METRICS_FILE))
    losses = [r["loss"] for r in records if r["kind"] == "train"][-last:]
    return float(np.mean(losses))


def _run_in_process(todo: list[tuple[str, dict[str, Any]]]) -> None:
    """Trains each run here, one after another, from its settings."""
    for out, settings in todo:
        try:
            if "resume" in settings:
                config = train_config.resumed(settings)
            else:
                config = TrainConfig(**settings)
            train.train(config)
        except ValueError as err:  # bad settings, or train.UsageError
            raise SystemExit(f"{out}: {err}") from err


def _run_in_subprocesses(todo: list[tuple[str, dict[str, Any]]], jobs: int) -> None:
    """Runs the training script once per run, ``jobs`` at a time, each logging to
    ``out + ".log"``; raises if any run fails, naming its log."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    def one(out: str, settings: dict[str, Any]) -> tuple[str, int]:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out + ".log", "w") as log:
            proc = subprocess.run(
                [sys.executable, script, *train_config.to_argv(settings)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        print(f"[sweep] {out}: exit {proc.returncode}", flush=True)
        return out, proc.returncode

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda job: one(*job), todo))
    failed = [out for out, rc in results if rc != 0]
    if failed:
        raise SystemExit(
            f"{len(failed)} run(s) failed; see their logs: "
            + ", ".join(out + ".log" for out in failed)
        )


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs (or, where summary.json exists, reads) every run; returns their rows."""
    arms = _arms(args.arms)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be positive, got {args.jobs}")
    todo: list[tuple[str, dict[str, Any]]] = []
    for seed in args.seeds:  # seed by seed: every arm's first run comes first
        for name, arm in arms.items():
            out = os.path.join(args.runs_dir, slug(name), f"seed{seed}")
            if os.path.exists(os.path.join(out, rundir.SUMMARY_FILE)):
                print(f"[sweep] {name}, seed {seed}: done already, skipped")
                continue
            # An unfinished run continues where it stopped.
            if os.path.isdir(out):
                settings = {"resume": out, "no_progress": True}
            else:
                settings = run_settings(args, arm, seed, out)
            argv = " ".join(train_config.to_argv(settings))
            print(f"[sweep] {name}, seed {seed}: python examples/bert/train.py {argv}")
            todo.append((out, settings))
    if args.jobs == 1:
        _run_in_process(todo)
    elif todo:
        _run_in_subprocesses(todo, args.jobs)

    rows = []
    for name in arms:
        for seed in args.seeds:
            out = os.path.join(args.runs_dir, slug(name), f"seed{seed}")
            summary = rundir.read_json(os.path.join(out, rundir.SUMMARY_FILE))
            # The run's own ruleset, as the training script saw it.
            odds = None if summary["dice"] is None else optax_dice.odds(**summary["dice"])
            rows.append(
                {
                    "arm": name,
                    "seed": seed,
                    "expected_scale": 1.0 if odds is None else odds.expected_scale,
                    "std_scale": 0.0 if odds is None else odds.std_scale,
                    "accuracy": summary["eval_accuracy"],
                    "macro_f1": summary["eval_macro_f1"],
                    "train_loss": final_train_loss(out),
                    "perturbed_accuracy": summary["perturbed_accuracy"],
                    "accuracy_drop": summary["eval_accuracy"] - summary["perturbed_accuracy"],
                    "mean_scale": summary["mean_scale"],
                    "run_dir": out,
                }
            )
    return rows


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm: mean and standard deviation (ddof=1) over seeds."""
    table = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        entry: dict[str, Any] = {
            "arm": arm,
            "runs": len(mine),
            "expected_scale": mine[0]["expected_scale"],
            "std_scale": mine[0]["std_scale"],
        }
        for key in ("accuracy", "macro_f1", "train_loss", "perturbed_accuracy", "accuracy_drop"):
            values = np.array([r[key] for r in mine], dtype=np.float64)
            entry[f"{key}_mean"] = float(values.mean())
            entry[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        table.append(entry)
    return table


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """Writes dict rows under the union of their keys (a missing value is left empty)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(table: list[dict[str, Any]]) -> str:
    """The per-arm table in markdown."""

    def pm(entry: dict[str, Any], key: str) -> str:
        return f"{entry[key + '_mean']:.3f} ± {entry[key + '_std']:.3f}"

    lines = [
        "| arm | E[scale] (std) | accuracy | macro-F1 | final train loss "
        "| perturbed accuracy | drop | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        scale = (
            "off"
            if e["std_scale"] == 0.0 and e["expected_scale"] == 1.0
            else f"{e['expected_scale']:+.4f} ({e['std_scale']:.3f})"
        )
        lines.append(
            f"| {e['arm']} | {scale} | {pm(e, 'accuracy')} | {pm(e, 'macro_f1')} "
            f"| {pm(e, 'train_loss')} | {pm(e, 'perturbed_accuracy')} "
            f"| {pm(e, 'accuracy_drop')} | {e['runs']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs the sweep and writes the results; returns the per-arm table."""
    args = build_parser().parse_args(argv)
    os.makedirs(args.results_dir, exist_ok=True)
    rows = run_all(args)
    table = aggregate(rows)
    write_csv(os.path.join(args.results_dir, "runs.csv"), rows)
    write_csv(os.path.join(args.results_dir, "results.csv"), table)
    plots.plot_sweep(rows, args.results_dir)
    command = "python examples/bert/sweep.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    example = train_config.to_argv(run_settings(args, ARMS["DC 12, +2 (default)"], 0, "OUT"))
    with open(os.path.join(args.results_dir, "results.md"), "w") as f:
        f.write(
            "# Results: dice rulesets fine-tuning all-MiniLM-L6-v2 on the tweets\n\n"
            f"Command: `{command.strip()}`\n\n"
            f"Each run: `python examples/bert/train.py {' '.join(example)}` with the arm's "
            f"dice flags; seeds {args.seeds}; {args.micro_steps} micro-batches of "
            f"{args.batch_size}; robustness on the validation set with characters dropped "
            f"(p={args.char_drop}) and neighbouring words swapped (p={args.word_swap}).\n\n"
            + markdown_table(table)
            + "\n\nMean ± standard deviation over seeds. `drop` = accuracy - perturbed "
            "accuracy. Per-run rows: runs.csv.\n\n"
            "![accuracy against E[scale]](accuracy_vs_expected_scale.png)\n\n"
            "![loss curves](loss_curves.png)\n"
        )
    print(markdown_table(table))
    return table


if __name__ == "__main__":
    main()
