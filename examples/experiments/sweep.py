"""The rulesets sweep: what each dice ruleset does to fine-tuning, on real data.

Every arm fine-tunes the packaged all-MiniLM-L6-v2 on the tweets with the training script, the
same split, micro-batch budget and schedule, for several seeds; every final model is also
evaluated on a perturbed copy of the validation set. Under ``--results-dir`` (default
``<runs-dir>/results``; the published ones: benchmarks/results/rulesets) it writes
``results.md`` and ``results.csv`` (per arm, mean and std of each result, with the arm's exact
E[scale] and std from :func:`optax_dice.odds`), ``runs.csv`` (one row per run),
``accuracy_vs_expected_scale.png`` and ``loss_curves.png``.

The runs go through :mod:`examples.experiments.runner` (resumed, checked, ``--jobs`` at a time,
seed by seed). Run ``python examples/experiments/sweep.py``; any training flag (``--model DIR``,
``--dataset FILE``) goes to every run, as does everything after ``--train-args``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.bert import flags
from examples.bert.flags import opt
from examples.experiments import runner
from examples.experiments.runner import Job

PROG = "python examples/experiments/sweep.py"

#: name -> the arm's settings of the training run (fields of TrainConfig).
ARMS: dict[str, dict[str, Any]] = {
    "baseline (off)": {"mode": "off"},
    "DC 12, +2 (default)": {"threshold": 12, "modifier": 2},
    "DC 15, +0 (seed)": {"threshold": 15, "modifier": 0},
    "DC 10, +0": {"threshold": 10, "modifier": 0},
    "DC 15, advantage": {"threshold": 15, "modifier": 0, "advantage": True},
    "DC 15, disadvantage": {"threshold": 15, "modifier": 0, "disadvantage": True},
    "original rule, DC 15": {"threshold": 15, "modifier": 0, "rule": "original"},
    "DC 12, +2, per accumulation step x4": {"threshold": 12, "modifier": 2,
                                            "mode": "per_accumulation_step",
                                            "accumulation_steps": 4},
}  # fmt: skip
#: What runs.csv averages into results.csv.
KEYS = ("accuracy", "macro_f1", "train_loss", "perturbed_accuracy", "accuracy_drop")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The sweep's settings; any other flag goes to every training run."""

    runs_dir: str = opt("runs/sweep", "where the runs go")
    results_dir: str | None = opt(None, "tables and figures (default: <runs-dir>/results; the "
                                        "published ones: benchmarks/results/rulesets)")  # fmt: skip
    seeds: list[int] = opt([0, 1, 2], "seeds")  # noqa: RUF009
    jobs: int = opt(1, "training runs at once, each in its own process (1: one after another, "
                       "in this process)")  # fmt: skip
    arms: list[str] | None = opt(  # noqa: RUF009
        None, "a subset of the arms, by folder name: " + ", ".join(map(runner.slug, ARMS))
    )
    micro_steps: int = opt(120, "micro-batches per run, the same for every arm")
    batch_size: int = opt(16, "examples per micro-batch")
    max_length: int = opt(48, "tokens per example")
    lr: float = opt(1e-4, "peak learning rate")
    max_eval_samples: int = opt(1000, "validation examples")
    char_drop: float = opt(0.1, "perturbation: P(drop a char)")
    word_swap: float = opt(0.2, "perturbation: P(swap words)")

    def problems(self) -> list[str]:
        """Every reason these settings cannot make a sweep."""
        out = runner.arms_problems(ARMS, self.arms)
        if self.jobs < 1:
            out.append(f"--jobs must be positive, got {self.jobs}")
        for name in ("micro_steps", "batch_size", "max_eval_samples"):
            if getattr(self, name) < 1:
                out.append(f"{flags.flag_name(name)} must be positive")
        for arm in runner.select(ARMS, self.arms) if not out else []:
            k = ARMS[arm].get("accumulation_steps", 1)
            if self.micro_steps % k:
                out.append(f"--micro-steps {self.micro_steps} is not a multiple of {k} ({arm})")
        return out


def parse_args(argv: Sequence[str] | None) -> tuple[SweepConfig, dict[str, Any]]:
    """The sweep's settings and the training flags for every run (after ``--train-args`` too)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--train-args" in argv:  # kept: everything after it goes to every run as it is
        argv.remove("--train-args")
    cfg, extra = runner.parse(SweepConfig, argv, PROG, __doc__.split("\n\n")[0])
    runner.check_jobs(jobs(cfg, extra), PROG)
    return cfg, extra


def settings(cfg: SweepConfig, arm: str, seed: int, extra: Mapping[str, Any]) -> dict[str, Any]:
    """One run's TrainConfig fields: the arm's, the budget, the seed, then the flags given."""
    k = ARMS[arm].get("accumulation_steps", 1)
    budget = dict(
        steps=cfg.micro_steps // k, batch_size=cfg.batch_size, max_length=cfg.max_length,
        lr=cfg.lr, max_eval_samples=cfg.max_eval_samples, eval_every=0, save_every=0,
        perturbed_eval=True, char_drop=cfg.char_drop, word_swap=cfg.word_swap, no_progress=True,
    )  # fmt: skip
    return {**ARMS[arm], "seed": seed, **budget, **extra}


def jobs(cfg: SweepConfig, extra: Mapping[str, Any]) -> list[Job]:
    """Every (arm, seed) run, seed by seed: every arm's first run comes first."""
    return [
        Job(arm, seed, os.path.join(cfg.runs_dir, runner.slug(arm), f"seed{seed}"),
            settings(cfg, arm, seed, extra), (arm, seed))
        for seed in cfg.seeds
        for arm in runner.select(ARMS, cfg.arms)
    ]  # fmt: skip


def row(job: Job) -> dict[str, Any]:
    """A finished run's row of runs.csv (the columns of every sweep, CPU or GPU)."""
    import optax_dice

    summary = runner.read_summary(job.workdir)
    dice = summary.get("dice")
    odds = None if dice is None else optax_dice.odds(**dice)  # the run's own ruleset
    accuracy, perturbed = summary.get("eval_accuracy"), summary.get("perturbed_accuracy")
    drop = math.nan if accuracy is None or perturbed is None else accuracy - perturbed
    metrics = runner.read_metrics(job.workdir)
    losses = runner.finite(r["loss"] for r in metrics if r["kind"] == "train")[-20:]
    return {
        "arm": job.arm, "seed": job.seed,
        "expected_scale": 1.0 if odds is None else odds.expected_scale,
        "std_scale": 0.0 if odds is None else odds.std_scale,
        "accuracy": accuracy, "macro_f1": summary.get("eval_macro_f1"),
        "train_loss": float(losses.mean()) if losses.size else math.nan,  # the last 20
        "perturbed_accuracy": perturbed, "accuracy_drop": drop,
        "mean_scale": summary.get("mean_scale"), "run_dir": job.workdir,
    }  # fmt: skip


def markdown(entries: Sequence[Mapping[str, Any]]) -> str:
    """The per-arm table in Markdown."""

    def pm(e: Mapping[str, Any], key: str) -> str:
        mean, std = e[key + "_mean"], e[key + "_std"]
        return "-" if math.isnan(mean) else f"{mean:.3f} ± {0.0 if math.isnan(std) else std:.3f}"

    def scale(e: Mapping[str, Any]) -> str:
        if e["std_scale"] == 0.0 and e["expected_scale"] == 1.0:
            return "off"
        return f"{e['expected_scale']:+.4f} ({e['std_scale']:.3f})"

    header = ["arm", "E[scale] (std)", "accuracy", "macro-F1", "final train loss",
              "perturbed accuracy", "drop", "runs"]  # fmt: skip
    body = [[e["arm"], scale(e), *(pm(e, k) for k in KEYS), e["runs"]] for e in entries]
    return runner.markdown_table(header, body)


def write_report(cfg: SweepConfig, extra: Mapping[str, Any], rows: list, out: str, command: str):
    """runs.csv, results.csv, the figures and results.md; returns the per-arm table."""
    from examples.experiments import figures

    os.makedirs(out, exist_ok=True)
    entries = runner.aggregate(rows, ["arm"], KEYS, same=["expected_scale", "std_scale"])
    runner.write_csv(os.path.join(out, "runs.csv"), rows)
    runner.write_csv(os.path.join(out, "results.csv"), entries)
    figures.plot_sweep(rows, out)
    example = Job("", 0, "OUT", settings(cfg, "DC 12, +2 (default)", 0, extra)).command()
    model = extra.get("model", "all-MiniLM-L6-v2")
    dataset = extra.get("dataset", "the tweets")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(
            f"# Results: dice rulesets fine-tuning {model} on {dataset}\n\n"
            f"Command: `{command}`\n\n"
            f"Each run: `{example}` with the arm's dice flags; seeds {cfg.seeds}; "
            f"{cfg.micro_steps} micro-batches of {cfg.batch_size}; robustness on the validation "
            f"set with characters dropped (p={cfg.char_drop}) and neighbouring words swapped "
            f"(p={cfg.word_swap}).\n\n" + markdown(entries) + "\n\nMean ± standard deviation "
            "over seeds. `drop` = accuracy - perturbed accuracy. Per-run rows: runs.csv.\n\n"
            "![accuracy against E[scale]](accuracy_vs_expected_scale.png)\n\n"
            "![loss curves](loss_curves.png)\n"
        )
    return entries


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs (or resumes) the sweep and writes the results; returns the per-arm table."""
    cfg, extra = parse_args(argv)
    plan = jobs(cfg, extra)
    try:
        runner.run_jobs(plan, at_once=cfg.jobs, say=lambda s: print(f"[sweep] {s}", flush=True))
    except KeyboardInterrupt as err:
        runner.interrupted_exit(err)
    rows = [row(job) for job in plan]
    command = " ".join([PROG, *(sys.argv[1:] if argv is None else argv)])
    entries = write_report(cfg, extra, rows, runner.results_dir(cfg.results_dir, cfg.runs_dir),
                           command)  # fmt: skip
    print(markdown(entries))
    return entries


if __name__ == "__main__":
    main()
