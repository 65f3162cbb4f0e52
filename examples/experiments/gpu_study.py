"""The results at a GPU budget: the main job (dice and off) and the dice sweep, in one command.

On one GPU, from the repository root, with the packaged MiniLM (or its float16 copy from
``examples/experiments/export_half.py``, which is what travels to a machine with no network):

    python examples/experiments/gpu_study.py --model DIR --seeds 1 2 --archive OUT/gpu.tgz

1. The main job on its defaults for ``--main-epochs``, dice and ``--mode off``, each of
   ``--seeds``: accuracy, macro-F1, wall time and samples/s into ``main_job.md``/``.json``.
2. The sweep (:mod:`examples.experiments.sweep`) at ``--sweep-micro-steps`` micro-batches, each of
   ``--seeds``: its runs.csv, tables and figures under ``<out>/sweep``.
3. ``paired.md``: each arm minus the baseline, paired by seed, at this budget and at the CPU
   sweep's (``--cpu-runs``), the change of the gap; the main job's dice minus off.

The runs go ``--jobs`` at a time through :mod:`examples.experiments.runner`. A run that fails or
outlasts ``--run-timeout`` is reported and the study goes on; after ``--sweep-budget`` seconds no
run starts; at ``--stop-by`` seconds every run stops with a checkpoint. A second call resumes.
``--archive FILE`` packs the runs' records (no checkpoints) and the tables into one .tgz.
Nothing is fetched. ``--quick`` is a toy budget for a test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.bert.flags import opt
from examples.experiments import runner, sweep
from examples.experiments.runner import Job

PROG = "python examples/experiments/gpu_study.py"
#: The sweep's budget on the CPU (its default), which the GPU study multiplies.
CPU_SWEEP_MICRO_STEPS = 120
MAIN_ARMS = {"dice (default: DC 12, +2)": {}, "off": {"mode": "off"}}
#: What main_job.json keeps of a main-job run's summary.
SUMMARY_KEYS = (
    "status", "steps", "micro_steps", "eval_accuracy", "eval_macro_f1", "best_eval_accuracy",
    "majority_accuracy", "wall_time_s", "train_time_s", "steady_examples_per_s",
    "steady_steps_per_s", "first_step_s", "platform",
)  # fmt: skip
#: What the archive keeps of a run folder.
RECORDS = ("config.json", "metrics.jsonl", "summary.json", "run.png")


@dataclasses.dataclass(frozen=True)
class GpuStudyConfig:
    """The GPU study's settings."""

    out: str | None = opt(None, "tables and figures (default: <runs-dir>/results)")
    runs_dir: str = opt("runs/gpu_study", "the runs")
    model: str | None = opt(None, "a BERT folder")
    dataset: str | None = opt(None, "default: the tweets")
    main_epochs: float = opt(2.0, "the main job's budget")
    sweep_micro_steps: int = opt(10 * CPU_SWEEP_MICRO_STEPS, "micro-batches per sweep run")
    seeds: list[int] = opt([0, 1, 2], "seeds")  # noqa: RUF009
    arms: list[str] | None = opt(None, "sweep arms")  # noqa: RUF009
    jobs: int = opt(8, "runs at once")
    run_timeout: float = opt(300.0, "seconds per run")
    only: Literal["main", "sweep"] | None = opt(None, "one half of the study")
    sweep_budget: float | None = opt(None, "seconds after which no new run starts (default: none)")
    stop_by: float | None = opt(
        None, "seconds after which every run still going stops with a checkpoint and the "
        "tables are written (default: none)")  # fmt: skip
    cpu_runs: str = opt("benchmarks/results/rulesets/runs.csv",
                        "the CPU sweep's runs.csv, for the paired comparison")  # fmt: skip
    archive: str | None = opt(None, "a .tgz of it all")
    quick: bool = opt(False, "a toy budget, for the tests")

    def problems(self) -> list[str]:
        """Every reason these settings cannot make a study, found before anything runs."""
        out = []
        try:
            runner.select(sweep.ARMS, self.arms)
        except ValueError as err:
            out.append(f"--arms: {err}")
        if self.jobs < 1:
            out.append(f"--jobs must be positive, got {self.jobs}")
        if not self.main_epochs > 0 or self.sweep_micro_steps < 1 or not self.run_timeout > 0:
            out.append("--main-epochs, --sweep-micro-steps and --run-timeout must be positive")
        return out


def main_jobs(cfg: GpuStudyConfig, flags: Mapping[str, Any]) -> list[Job]:
    """The main job, dice and off, for every seed."""
    budget: dict[str, Any] = {"epochs": cfg.main_epochs}
    if cfg.quick:
        budget = dict(steps=4, batch_size=8, max_eval_samples=32, max_length=16, lr=3e-3)
    return [
        Job(label, seed, os.path.join(cfg.runs_dir, f"main-{'off' if arm else 'dice'}",
                                      f"seed{seed}"),
            {**arm, **budget, "seed": seed, "no_progress": True, **flags})
        for seed in cfg.seeds
        for label, arm in MAIN_ARMS.items()
    ]  # fmt: skip


def sweep_config(cfg: GpuStudyConfig) -> sweep.SweepConfig:
    """The sweep at the GPU budget (or the toy one)."""
    quick = dict(micro_steps=8, max_length=16, max_eval_samples=32, lr=3e-3) if cfg.quick else {}
    return sweep.SweepConfig(
        runs_dir=os.path.join(cfg.runs_dir, "sweep"), seeds=cfg.seeds, arms=cfg.arms,
        jobs=cfg.jobs, **{"micro_steps": cfg.sweep_micro_steps, **quick},
    )  # fmt: skip


def main_row(job: Job, outcome: str | None) -> dict[str, Any]:
    """A main-job run's row: its summary's figures, or what happened to it."""
    row: dict[str, Any] = {"run": job.arm, "seed": job.seed, "command": job.command()}
    if runner.run_status(job.workdir) in runner.FINAL:
        summary = runner.read_summary(job.workdir)
        return row | {key: summary.get(key) for key in SUMMARY_KEYS}
    return row | {"status": outcome or runner.run_status(job.workdir)}


def main_job_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The main job's rows in Markdown."""

    def f(row: Mapping[str, Any], key: str, spec: str) -> str:
        value = row.get(key)
        return "n/a" if value is None else format(value, spec)

    header = ["run", "seed", "status", "updates", "accuracy", "best accuracy", "macro-F1",
              "wall time s", "train samples/s (after compiling)"]  # fmt: skip
    body = [
        [r["run"], r["seed"], r["status"], r.get("steps", "n/a"), f(r, "eval_accuracy", ".4f"),
         f(r, "best_eval_accuracy", ".4f"), f(r, "eval_macro_f1", ".4f"),
         f(r, "wall_time_s", ".1f"), f(r, "steady_examples_per_s", ".0f")]
        for r in rows
    ]  # fmt: skip
    return runner.markdown_table(header, body)


def paired_table(gpu: Sequence[Mapping], cpu: Sequence[Mapping], main: Sequence[Mapping]) -> str:
    """Each arm minus the baseline at both budgets, the change of its gap, and the main job."""
    base = "baseline (off)"
    body = []
    for arm in dict.fromkeys(r["arm"] for r in gpu):
        if arm == base:
            continue
        gaps = {}
        for name, rows in (("gpu", gpu), ("cpu", cpu)):
            ref = {b["seed"]: b["accuracy"] for b in rows if b["arm"] == base}
            gaps[name] = {r["seed"]: r["accuracy"] - ref[r["seed"]] for r in rows
                          if r["arm"] == arm and r["seed"] in ref}  # fmt: skip
        seeds = sorted(set(gaps["gpu"]) & set(gaps["cpu"]))
        change = runner.difference(runner.finite(gaps["gpu"][s] - gaps["cpu"][s] for s in seeds))
        body.append([arm, runner.cell(runner.paired(gpu, arm, base, "accuracy")),
                     runner.cell(runner.paired(cpu, arm, base, "accuracy")),
                     runner.cell(change)])  # fmt: skip
    rows = [{"arm": r["run"], "seed": r["seed"], "accuracy": r.get("eval_accuracy")} for r in main]
    dice = runner.paired(rows, "dice (default: DC 12, +2)", "off", "accuracy")
    header = ["arm", "minus baseline, this budget", "minus baseline, CPU budget",
              "gap here - gap on the CPU (paired by seed; > 0: narrower)"]  # fmt: skip
    return (
        "# Paired differences against the baseline (95% intervals over seeds)\n\n"
        + runner.markdown_table(header, body)
        + f"\n\nThe main job, dice minus off: {runner.said(dice)}.\n"
    )


def pack(cfg: GpuStudyConfig, out: str) -> None:
    """Writes ``--archive``: every run's records (no checkpoints) and the results."""
    os.makedirs(os.path.dirname(os.path.abspath(cfg.archive)), exist_ok=True)
    with tarfile.open(cfg.archive, "w:gz") as tar:
        tar.add(out, arcname="results")
        for folder, _, files in os.walk(cfg.runs_dir):
            if os.path.abspath(folder).startswith(os.path.abspath(out)):
                continue
            for name in files:
                if name in RECORDS or name.endswith(".log"):
                    path = os.path.join(folder, name)
                    tar.add(path, arcname=os.path.join("runs", os.path.relpath(path, cfg.runs_dir)))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the study; returns 0 when every main-job run completed."""
    start = time.monotonic()
    cfg, overrides = runner.parse(GpuStudyConfig, argv, PROG, __doc__.split("\n\n")[0])
    given = {k: v for k, v in (("model", cfg.model), ("dataset", cfg.dataset)) if v}
    scfg, flags = sweep_config(cfg), {**overrides, **given}  # --model, --dataset: every run
    mains = main_jobs(cfg, flags) if cfg.only != "sweep" else []
    sweeps = sweep.jobs(scfg, flags) if cfg.only != "main" else []
    runner.check_jobs(mains + sweeps, PROG)  # --arms, --lr, ... before anything runs
    deadline = None if cfg.sweep_budget is None else start + cfg.sweep_budget
    stop_by = None if cfg.stop_by is None else start + cfg.stop_by
    limits = runner.Limits(deadline, cfg.run_timeout, keep_going=True, stop_by=stop_by)
    try:
        say = lambda s: print(f"[gpu_study] {s}", flush=True)  # noqa: E731
        outcomes = runner.run_jobs(mains + sweeps, at_once=cfg.jobs, limits=limits, say=say)
    except KeyboardInterrupt as err:
        runner.interrupted_exit(err)
    out = runner.results_dir(cfg.out, cfg.runs_dir)
    os.makedirs(out, exist_ok=True)
    rows = [main_row(job, outcomes.get(job.workdir)) for job in mains]
    with open(os.path.join(out, "main_job.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out, "main_job.md"), "w") as f:
        f.write("# The main job at a GPU budget\n\n" + main_job_table(rows) + "\n")
    done = [j for j in sweeps if runner.run_status(j.workdir) in runner.FINAL]
    sweep_rows = [sweep.row(j) for j in done]
    if sweep_rows:
        command = " ".join([PROG, *(sys.argv[1:] if argv is None else argv)])
        sweep.write_report(scfg, flags, sweep_rows, os.path.join(out, "sweep"), command)
    with open(os.path.join(out, "paired.md"), "w") as f:
        f.write(paired_table(sweep_rows, runner.read_csv(cfg.cpu_runs), rows))
    print(main_job_table(rows), flush=True)
    if cfg.archive:
        pack(cfg, out)
    return 0 if all(r["status"] == "completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
