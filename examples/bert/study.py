"""Do the dice do anything a smaller learning rate does not? The controlled study.

Every run fine-tunes the packaged all-MiniLM-L6-v2 on the tweets with the training script
(:mod:`examples.bert.train`): the same split, tokens, schedule and budget; runs of one seed
share the classifier head's initialisation and the data order, so arms are compared seed by
seed (paired). The arms:

==========================  ===================================================================
baseline                    AdamW without dice, at lr/3, lr and 3 lr: the tuned reference
dice before                 the default DC 12, +2 (E[scale] = 0.37) on the gradient, before
                            AdamW, at the same three lrs
lr-matched control          AdamW without dice at lr x 0.37: the dice's mean step, no randomness
dice after                  DC 12, +2 on AdamW's final step (Adam cannot normalise it away)
fair die before / after     DC 12, +2 with ``normalize=True``: E[scale] = 1, only randomness
==========================  ===================================================================

The phases, in order (each run's folder is kept, so the study resumes where it stopped):

1. clean labels, ``--seeds`` seeds, every arm (the two tuned arms at every lr);
2. ``--extra-seeds`` more seeds for baseline, dice before and fair die before, each at its best
   lr (by mean final clean accuracy over phase 1's seeds);
3. weight noise (flatness, :func:`examples.bert.flatness.perturb_weights`) on the final model
   of every clean run at its arm's best lr: accuracy on a fixed validation subset for each
   sigma, ``--weight-noise-draws`` draws each, the same draws for every run;
4. the validation loss along the line between the baseline's and the dice's final
   parameters (seed 0, best lrs), ``alpha`` from -0.5 to 1.5;
5. ``--label-noise`` of the training labels flipped (seeded by the run's seed), every arm at
   its best lr, evaluated on clean validation labels.

Then it writes, under ``--results-dir``: ``runs.csv`` (one row per run), ``study.csv`` (per
arm, lr and label noise), ``study.md`` (the tables, the paired differences with their 95%
confidence intervals and what they support) and four figures. ``--quick`` shrinks everything
to a smoke test of seconds (with ``--model``/``--dataset`` pointing at something small).

Run ``python examples/bert/study.py``; any flag it does not know goes to every training run
(``--model DIR --dataset FILE``, for instance). ``--help`` lists its own.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import numpy as np
from scipy import stats
from transformers import HfArgumentParser

import optax_dice
from examples.bert import flatness, plots, rundir, steps, sweep, train, train_config
from examples.bert.train_config import TrainConfig

# ----------------------------------------------------------------------------- the arms

DICE = {"threshold": 12, "modifier": 2}  # the default ruleset, E[scale] = 0.37
DICE_MEAN = optax_dice.odds(**DICE).expected_scale

#: name -> the arm's TrainConfig fields (the learning rate comes from the plan).
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"mode": "off"},
    "dice before": dict(DICE),
    "lr-matched control": {"mode": "off"},
    "dice after": {**DICE, "dice_position": "after"},
    "fair die before": {**DICE, "normalize": True},
    "fair die after": {**DICE, "normalize": True, "dice_position": "after"},
}
TUNED = ("baseline", "dice before")  # run at every lr factor; the others at one lr
KEY_ARMS = ("baseline", "dice before", "fair die before")  # the ones with extra seeds
LR_FACTOR = {"lr-matched control": DICE_MEAN}  # the untuned arms' lr factor (else 1)
NO_DIFFERENCE = 0.01  # |paired difference| bound, in accuracy, under which "no difference"
MIN_SEEDS = 3  # paired seeds a verdict needs


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The study's settings; any other flag goes to every training run."""

    runs_dir: str = dataclasses.field(default="runs/study", metadata={"help": "the runs"})
    results_dir: str = dataclasses.field(
        default="benchmarks/results", metadata={"help": "the tables and figures"}
    )
    quick: bool = dataclasses.field(
        default=False, metadata={"help": "a smoke test of seconds: tiny budget, grids and seeds"}
    )
    steps: int = dataclasses.field(default=150, metadata={"help": "updates per run"})
    batch_size: int = dataclasses.field(default=16, metadata={"help": "examples per update"})
    max_length: int = dataclasses.field(default=48, metadata={"help": "tokens per example"})
    lr: float = dataclasses.field(default=1e-4, metadata={"help": "the middle learning rate"})
    lr_factors: list[float] = dataclasses.field(
        default_factory=lambda: [1 / 3, 1.0, 3.0],
        metadata={"help": "the tuned arms' learning rates, as multiples of --lr"},
    )
    evals: int = dataclasses.field(
        default=3, metadata={"help": "evaluations per run, evenly spaced (best = their max)"}
    )
    seeds: int = dataclasses.field(default=3, metadata={"help": "seeds 0 .. n-1 for every arm"})
    extra_seeds: int = dataclasses.field(
        default=2, metadata={"help": "more seeds for baseline, dice before, fair die before"}
    )
    label_noise: float = dataclasses.field(
        default=0.2, metadata={"help": "share of training labels flipped in phase 5 (0: skip)"}
    )
    max_eval_samples: int = dataclasses.field(
        default=1000, metadata={"help": "validation examples (a fixed stratified subsample)"}
    )
    weight_noise_sigmas: list[float] = dataclasses.field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5],
        metadata={"help": "relative weight-noise sizes (each row moves by sigma x its norm)"},
    )
    weight_noise_draws: int = dataclasses.field(default=5, metadata={"help": "draws per sigma"})
    weight_noise_samples: int = dataclasses.field(
        default=300, metadata={"help": "validation examples per weight-noise evaluation"}
    )
    arms: list[str] = dataclasses.field(
        default_factory=lambda: [sweep.slug(arm) for arm in ARMS],
        metadata={"help": "a subset of the arms, by folder name (all six)"},
    )
    report_only: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "train and evaluate nothing: write the tables and figures from what is "
            "finished (a study in progress, or spread over several sittings)"
        },
    )
    alphas: int = dataclasses.field(
        default=17, metadata={"help": "points on the line from alpha -0.5 to 1.5"}
    )

    def shrunk(self) -> StudyConfig:
        """The ``--quick`` settings: every phase, at a size that runs in seconds (a setting
        given with another value than its default keeps that value)."""
        if not self.quick:
            return self
        quick = dict(
            steps=4, batch_size=8, max_length=16, evals=2, seeds=1, extra_seeds=1,
            lr_factors=[1.0, 3.0], max_eval_samples=32, weight_noise_sigmas=[0.1, 1.0],
            weight_noise_draws=2, weight_noise_samples=16, alphas=5,
        )  # fmt: skip
        defaults = StudyConfig()
        return dataclasses.replace(
            self,
            **{k: v for k, v in quick.items() if getattr(self, k) == getattr(defaults, k)},
        )


def parse_args(argv: Sequence[str] | None) -> tuple[StudyConfig, dict[str, Any]]:
    """The study's settings and the training flags given (checked by the training parser)."""
    parser = HfArgumentParser(
        StudyConfig,
        prog="python examples/bert/study.py",
        description="Do the dice do anything a smaller learning rate does not? Fair controls.",
    )
    study, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if study.steps < 1 or study.seeds < 1 or study.evals < 1 or study.extra_seeds < 0:
        parser.error("--steps, --seeds and --evals must be positive, --extra-seeds >= 0")
    unknown = sorted(set(study.arms) - {sweep.slug(arm) for arm in ARMS})
    if unknown:
        parser.error(f"unknown arm(s) {unknown}: choose from {[sweep.slug(a) for a in ARMS]}")
    if not 0 <= study.label_noise < 1:
        parser.error(f"--label-noise must lie in [0, 1), got {study.label_noise}")
    return study.shrunk(), train_config.typed_flags(rest)


# ----------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the study."""

    arm: str
    lr_factor: float
    seed: int
    label_noise: float = 0.0

    def out(self, runs_dir: str) -> str:
        """The run's folder."""
        return os.path.join(
            runs_dir,
            sweep.slug(self.arm),
            f"lr-x{self.lr_factor:.4g}",
            f"label-noise-{self.label_noise:g}",
            f"seed{self.seed}",
        )


def arms(cfg: StudyConfig) -> list[str]:
    """The arms the study runs (``--arms``), in ARMS's order."""
    return [arm for arm in ARMS if sweep.slug(arm) in cfg.arms]


def clean_runs(cfg: StudyConfig) -> list[Run]:
    """Phase 1: every arm, every lr of the tuned arms, seeds 0 .. n-1."""
    return [
        Run(arm, factor, seed)
        for seed in range(cfg.seeds)
        for arm in arms(cfg)
        for factor in (cfg.lr_factors if arm in TUNED else [LR_FACTOR.get(arm, 1.0)])
    ]


def best_factors(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each arm's lr factor of highest mean final clean accuracy (a diverged run counts 0;
    ties go to the factor nearest 1)."""
    best: dict[str, float] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm and not r["label_noise"]]
        means = {
            factor: float(
                np.mean([np.nan_to_num(r["accuracy"]) for r in mine if r["lr_factor"] == factor])
            )
            for factor in dict.fromkeys(r["lr_factor"] for r in mine)
        }
        if means:
            best[arm] = max(means, key=lambda f: (means[f], -abs(math.log(f))))
    return best


def extra_runs(cfg: StudyConfig, best: dict[str, float]) -> list[Run]:
    """Phase 2: more seeds for the key arms at their best lr."""
    seeds = range(cfg.seeds, cfg.seeds + cfg.extra_seeds)
    return [Run(arm, best[arm], seed) for seed in seeds for arm in KEY_ARMS if arm in best]


def noisy_runs(cfg: StudyConfig, best: dict[str, float]) -> list[Run]:
    """Phase 5: every arm at its best lr, on noisy training labels."""
    if not cfg.label_noise:
        return []
    return [Run(arm, best[arm], seed, cfg.label_noise) for seed in range(cfg.seeds) for arm in best]


# ----------------------------------------------------------------------------- training


def settings(cfg: StudyConfig, run: Run, extra: dict[str, Any], runs_dir: str) -> dict[str, Any]:
    """The run's TrainConfig fields: the study's budget, the arm, then the passed-on flags."""
    return {
        **ARMS[run.arm],
        "lr": cfg.lr * run.lr_factor,
        "seed": run.seed,
        "label_noise": run.label_noise,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "max_eval_samples": cfg.max_eval_samples,
        "eval_batch_size": cfg.batch_size * 8,
        "eval_every": max(1, cfg.steps // cfg.evals),
        "save_every": 0,
        "keep_checkpoints": 1,
        "perturbed_eval": True,
        "char_drop": 0.1,
        "word_swap": 0.2,
        "no_progress": True,
        **extra,
        "output_dir": run.out(runs_dir),
    }


def check_saved(out: str, fields: dict[str, Any]) -> None:
    """Refuses a finished run made with other settings than the study's (say, another
    ``--steps``): its results would be mixed with the new ones unnoticed."""
    saved = rundir.read_json(os.path.join(out, rundir.CONFIG_FILE))["args"]
    changed = [
        f"{k} {saved[k]!r} (not {v!r})"
        for k, v in fields.items()
        if k not in ("output_dir", "no_progress") and k in saved and saved[k] != v
    ]
    if changed:
        raise SystemExit(
            f"{out} was made with other settings: {', '.join(changed)}. Give the study the "
            "settings it was made with, or another --runs-dir."
        )


def finished(cfg: StudyConfig, runs: list[Run]) -> list[Run]:
    """The runs that have a summary."""
    return [
        r for r in runs if os.path.exists(os.path.join(r.out(cfg.runs_dir), rundir.SUMMARY_FILE))
    ]


def train_all(cfg: StudyConfig, runs: list[Run], extra: dict[str, Any]) -> None:
    """Trains every run that has no summary yet (an unfinished one starts again); checks that
    the finished ones were made with the same settings. Trains nothing with --report-only."""
    for i, run in enumerate(runs, 1):
        out = run.out(cfg.runs_dir)
        if os.path.exists(os.path.join(out, rundir.SUMMARY_FILE)):
            check_saved(out, settings(cfg, run, extra, cfg.runs_dir))
            continue
        if cfg.report_only:
            continue
        if os.path.isdir(out):  # killed mid-run (runs save only at the end): start afresh
            shutil.rmtree(out)
        fields = settings(cfg, run, extra, cfg.runs_dir)
        config = TrainConfig(**fields)
        argv = " ".join(train_config.to_argv(fields))
        print(f"[study] run {i}/{len(runs)}: python examples/bert/train.py {argv}", flush=True)
        train.train(config)


def row(cfg: StudyConfig, run: Run) -> dict[str, Any]:
    """The run's row of runs.csv (weight-noise columns are added by :func:`add_flatness`)."""
    out = run.out(cfg.runs_dir)
    summary = rundir.read_json(os.path.join(out, rundir.SUMMARY_FILE))
    accuracy = summary["eval_accuracy"]
    accuracy = math.nan if accuracy is None else accuracy  # diverged: no final model
    perturbed = summary["perturbed_accuracy"]
    evals = [
        r
        for r in rundir.read_metrics(os.path.join(out, rundir.METRICS_FILE))
        if r["kind"] == "eval"
    ]
    return {
        "arm": run.arm,
        "seed": run.seed,
        "lr": cfg.lr * run.lr_factor,
        "lr_factor": run.lr_factor,
        "label_noise": run.label_noise,
        "accuracy": accuracy,
        "best_accuracy": summary["best_eval_accuracy"],
        "macro_f1": summary["eval_macro_f1"],
        "best_macro_f1": max((r["macro_f1"] for r in evals), default=math.nan),
        "perturbed_accuracy": math.nan if perturbed is None else perturbed,
        # What the character drops and word swaps cost this model.
        "perturbation_drop": accuracy - (math.nan if perturbed is None else perturbed),
        "majority_accuracy": summary["majority_accuracy"],
        # A failed run ends within 2 points of always predicting the majority class.
        "failed": not accuracy >= summary["majority_accuracy"] + 0.02,
        "status": summary["status"],
        "mean_scale": summary["mean_scale"],
        "run_dir": out,
    }


# ------------------------------------------------------------------- weight-space probes


class FinalModel:
    """A finished run's final model, restored from its checkpoint, with its eval step."""

    def __init__(self, run_dir: str) -> None:
        config = train_config.resumed({"resume": run_dir, "no_progress": True})
        with train.allow_transfers():
            loaded = train.load(config)
            _, eval_graphdef, params, model_state = steps.split_model(loaded.model)
            like = steps.init_train_state(params, model_state, loaded.tx, loaded.mesh)
            ckpt = rundir.Checkpointer(run_dir, max_to_keep=None)
            state, _ = ckpt.restore(ckpt.latest_step(), like)
            ckpt.close()
        self.params, self.model_state = state.params, state.model_state
        self.validation = loaded.dataset.validation
        self.num_labels, self.mesh = loaded.dataset.num_labels, loaded.mesh
        self.batch_size = config.eval_batch_size or config.batch_size * 8
        self.eval_step = steps.make_eval_step(eval_graphdef, self.num_labels, self.mesh)

    def evaluate(self, params: Any, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Loss, accuracy and macro-F1 of ``params`` on the validation split (or ``arrays``)."""
        state = steps.TrainState(None, params, self.model_state, None)
        with train.allow_transfers():
            return train.evaluate(
                self.eval_step, state, self.validation if arrays is None else arrays,
                self.batch_size, self.num_labels, self.mesh,
            )  # fmt: skip


def subset(arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """A fixed random subset of ``n`` examples (seed 0), the same for every run."""
    total = len(arrays["labels"])
    pick = np.sort(np.random.default_rng(0).choice(total, size=min(n, total), replace=False))
    return {k: v[pick] for k, v in arrays.items()}


def weight_noise(cfg: StudyConfig, run_dir: str) -> dict[str, Any] | None:
    """Accuracy under relative weight noise, per sigma and draw (cached in the run folder;
    None with --report-only where it is not cached)."""
    path = os.path.join(run_dir, "weight_noise.json")
    if os.path.exists(path):
        cached = rundir.read_json(path)
        if (
            cached["sigmas"] == cfg.weight_noise_sigmas
            and cached["draws"] == cfg.weight_noise_draws
            and cached.get("samples", cached["examples"]) == cfg.weight_noise_samples
        ):
            return cached
    if cfg.report_only:
        return None
    print(f"[study] weight noise: {run_dir}", flush=True)
    model = FinalModel(run_dir)
    arrays = subset(model.validation, cfg.weight_noise_samples)
    result: dict[str, Any] = {
        "sigmas": cfg.weight_noise_sigmas,
        "draws": cfg.weight_noise_draws,
        "samples": cfg.weight_noise_samples,
        "examples": len(arrays["labels"]),
        "clean": model.evaluate(model.params, arrays)["accuracy"],
        "accuracy": {},
    }
    for i, sigma in enumerate(cfg.weight_noise_sigmas):
        result["accuracy"][f"{sigma:g}"] = [
            model.evaluate(
                flatness.perturb_weights(model.params, sigma, jax.random.key(1000 * i + draw)),
                arrays,
            )["accuracy"]
            for draw in range(cfg.weight_noise_draws)
        ]
    rundir.write_json(path, result)
    return result


def add_flatness(row: dict[str, Any], result: dict[str, Any]) -> None:
    """Adds ``weight_noise_<sigma>`` (mean accuracy over draws), ``weight_noise_clean`` (the
    unperturbed accuracy on the same examples) and ``flat_sigma``: the largest sigma of the
    grid up to which every mean stays within 1 point of the unperturbed accuracy (0: none)."""
    row["weight_noise_clean"] = result["clean"]
    row["flat_sigma"], flat = 0.0, True
    for sigma in result["sigmas"]:
        mean = float(np.mean(result["accuracy"][f"{sigma:g}"]))
        row[f"weight_noise_{sigma:g}"] = mean
        row[f"weight_noise_change_{sigma:g}"] = mean - result["clean"]
        flat = flat and mean >= result["clean"] - 0.01
        if flat:
            row["flat_sigma"] = sigma


def interpolation(cfg: StudyConfig, a_dir: str, b_dir: str) -> dict[str, Any] | None:
    """Validation loss and accuracy along ``(1 - alpha) a + alpha b`` (cached; None with
    --report-only where it is not cached)."""
    path = os.path.join(cfg.runs_dir, "interpolation.json")
    alphas = sorted({*np.linspace(-0.5, 1.5, cfg.alphas).round(6).tolist(), 0.0, 1.0})
    if os.path.exists(path):
        cached = rundir.read_json(path)
        if cached["alphas"] == alphas and [cached["a"], cached["b"]] == [a_dir, b_dir]:
            return cached
    if cfg.report_only:
        return None
    a, b = FinalModel(a_dir), FinalModel(b_dir)
    points = [a.evaluate(flatness.interpolate(a.params, b.params, alpha)) for alpha in alphas]
    result = {
        "a": a_dir,
        "b": b_dir,
        "alphas": alphas,
        "loss": [p["loss"] for p in points],
        "accuracy": [p["accuracy"] for p in points],
    }
    rundir.write_json(path, result)
    return result


# ------------------------------------------------------------------------------ statistics


def paired(rows: list[dict[str, Any]], arm: str, ref: str, key: str) -> dict[str, Any] | None:
    """Mean paired difference ``arm - ref`` in ``key`` over the seeds both have, with its 95%
    confidence interval (Student's t over the per-seed differences), and what it supports."""
    mine = {r["seed"]: r.get(key, math.nan) for r in rows if r["arm"] == arm}
    theirs = {r["seed"]: r.get(key, math.nan) for r in rows if r["arm"] == ref}
    seeds = sorted(set(mine) & set(theirs))
    diffs = np.array([mine[s] - theirs[s] for s in seeds], np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return None
    mean = float(diffs.mean())
    if diffs.size < 2:
        lo = hi = math.nan
    else:
        half = stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size)
        lo, hi = mean - half, mean + half
    return {
        "n": int(diffs.size),
        "mean": mean,
        "lo": lo,
        "hi": hi,
        "verdict": verdict(lo, hi, diffs.size),
    }


def verdict(lo: float, hi: float, n: int) -> str:
    """What a 95% interval of a difference supports: "helps", "hurts", "no difference" (inside
    +-NO_DIFFERENCE), or "not resolved at n seeds". Fewer than MIN_SEEDS paired seeds resolve
    nothing: two seeds whose differences happen to agree (accuracy moves in steps of 1/n
    examples) give an interval of width 0."""
    if n < MIN_SEEDS or math.isnan(lo):
        return f"not resolved at {n} seed(s)"
    if lo > 0:
        return "helps"
    if hi < 0:
        return "hurts"
    if -NO_DIFFERENCE <= lo and hi <= NO_DIFFERENCE:
        return "no difference"
    return f"not resolved at {n} seeds"


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm, lr and label noise: the runs, mean and std (ddof=1) of each result, and the
    failed-run rate."""
    table = []
    groups = dict.fromkeys((r["arm"], r["lr"], r["label_noise"]) for r in rows)
    keys = ["accuracy", "best_accuracy", "macro_f1", "best_macro_f1", "perturbed_accuracy"]
    keys.append("flat_sigma")
    keys += list(dict.fromkeys(k for r in rows for k in r if k.startswith("weight_noise_")))
    for arm, lr, noise in groups:
        mine = [r for r in rows if (r["arm"], r["lr"], r["label_noise"]) == (arm, lr, noise)]
        entry: dict[str, Any] = {"arm": arm, "lr": lr, "label_noise": noise, "runs": len(mine)}
        for key in keys:
            values = np.array([r.get(key, math.nan) for r in mine], np.float64)
            values = values[np.isfinite(values)]
            entry[f"{key}_mean"] = float(values.mean()) if values.size else math.nan
            entry[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
        entry["failed_rate"] = float(np.mean([r["failed"] for r in mine]))
        table.append(entry)
    return table


# ------------------------------------------------------------------------------ the report


def _pm(entry: dict[str, Any], key: str) -> str:
    mean, std = entry[f"{key}_mean"], entry[f"{key}_std"]
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")


def _diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    ci = "" if math.isnan(d["lo"]) else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return f"{d['mean']:+.3f}{ci} (n={d['n']}): {d['verdict']}"


def _said(d: dict[str, Any] | None, unit: str = "") -> str:
    """A paired difference in words: ``-0.107 [-0.15, -0.06] (5 seeds): hurts``."""
    if d is None:
        return "not measured yet"
    ci = "" if math.isnan(d["lo"]) else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return f"{d['mean']:+.3f}{unit}{ci} over {d['n']} paired seed(s): **{d['verdict']}**"


def answers(
    cfg: StudyConfig,
    rows: list[dict[str, Any]],
    best: dict[str, float],
    line: dict[str, Any] | None,
) -> list[str]:
    """The study's questions, each answered in one sentence from the measurements, with the
    paired 95% interval and what it supports (README's Results quote them)."""
    clean = [r for r in rows if not r["label_noise"]]
    at_best = [r for r in clean if r["lr_factor"] == best.get(r["arm"])]
    noisy = [r for r in rows if r["label_noise"]]

    def mean(arm: str, key: str, pool: list[dict[str, Any]]) -> str:
        v = np.array([r.get(key, math.nan) for r in pool if r["arm"] == arm], np.float64)
        v = v[np.isfinite(v)]
        return (
            "-"
            if not v.size
            else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if v.size > 1 else "")
        )

    def lr(arm: str) -> str:
        return "-" if arm not in best else f"{cfg.lr * best[arm]:.3g}"

    out = [
        f"1. **Tuned alike, do the dice lose?** The baseline is best at lr {lr('baseline')} "
        f"(accuracy {mean('baseline', 'accuracy', at_best)}), the dice before AdamW at "
        f"{lr('dice before')} ({mean('dice before', 'accuracy', at_best)}); dice minus "
        f"baseline: {_said(paired(at_best, 'dice before', 'baseline', 'accuracy'))}.",
        "2. **Are the dice a smaller learning rate?** Against AdamW at lr x "
        f"{DICE_MEAN:.2f} without dice ({mean('lr-matched control', 'accuracy', at_best)}), "
        "the dice before AdamW at their best lr: "
        f"{_said(paired(at_best, 'dice before', 'lr-matched control', 'accuracy'))}.",
        "3. **Where Adam cannot undo them (dice after AdamW)**: "
        f"{mean('dice after', 'accuracy', at_best)}; minus the lr-matched control: "
        f"{_said(paired(at_best, 'dice after', 'lr-matched control', 'accuracy'))}; minus "
        f"the baseline: {_said(paired(at_best, 'dice after', 'baseline', 'accuracy'))}.",
        "4. **Randomness alone (the fair die, E[scale] = 1)**: before AdamW "
        f"{mean('fair die before', 'accuracy', at_best)}, minus the baseline "
        f"{_said(paired(at_best, 'fair die before', 'baseline', 'accuracy'))}; after AdamW "
        f"{mean('fair die after', 'accuracy', at_best)}, minus the baseline "
        f"{_said(paired(at_best, 'fair die after', 'baseline', 'accuracy'))}.",
        f"5. **Noisy labels ({cfg.label_noise:.0%} flipped)**: the baseline ends at "
        f"{mean('baseline', 'accuracy', noisy)}; dice before minus baseline "
        f"{_said(paired(noisy, 'dice before', 'baseline', 'accuracy'))}; fair die before "
        f"minus baseline {_said(paired(noisy, 'fair die before', 'baseline', 'accuracy'))}; "
        "best accuracy over the run, dice before minus baseline "
        f"{_said(paired(noisy, 'dice before', 'baseline', 'best_accuracy'))}.",
    ]
    sigma = cfg.weight_noise_sigmas[len(cfg.weight_noise_sigmas) // 2]
    change = f"weight_noise_change_{sigma:g}"
    out.append(
        "6. **Flatness (weight noise)**: the flat sigma is "
        f"{mean('baseline', 'flat_sigma', at_best)} for the baseline and "
        f"{mean('dice before', 'flat_sigma', at_best)} for the dice and "
        f"{mean('lr-matched control', 'flat_sigma', at_best)} for the lr-matched control; the "
        "accuracy change at "
        f"sigma {sigma:g}, dice minus baseline: "
        f"{_said(paired(at_best, 'dice before', 'baseline', change))}; dice minus the "
        "lr-matched control (as undertrained as the dice, without randomness): "
        f"{_said(paired(at_best, 'dice before', 'lr-matched control', change))}; fair die "
        f"before minus baseline: {_said(paired(at_best, 'fair die before', 'baseline', change))}."
    )
    out.append(
        "7. **Input perturbation (character drops, word swaps)**: the accuracy it costs is "
        f"{mean('baseline', 'perturbation_drop', at_best)} for the baseline; dice minus "
        f"baseline {_said(paired(at_best, 'dice before', 'baseline', 'perturbation_drop'))}; "
        "dice minus the lr-matched control "
        f"{_said(paired(at_best, 'dice before', 'lr-matched control', 'perturbation_drop'))}; "
        "fair die before minus baseline "
        f"{_said(paired(at_best, 'fair die before', 'baseline', 'perturbation_drop'))}."
    )
    stability = []
    for arm in KEY_ARMS:
        mine = [r for r in at_best if r["arm"] == arm]
        if mine:
            acc = np.array([r["accuracy"] for r in mine], np.float64)
            std = f"{np.nanstd(acc, ddof=1):.3f}" if acc.size > 1 else "-"
            failed = sum(r["failed"] for r in mine)
            stability.append(f"{arm} {std} ({failed} of {len(mine)} failed)")
    out.append(
        "8. **Seed stability**: the standard deviation of final accuracy over seeds at the best "
        "lr is " + "; ".join(stability) + " (a run fails if it ends within 2 points of the "
        "majority class)."
    )
    if line is not None:
        loss = dict(zip(line["alphas"], line["loss"], strict=True))
        ends = max(loss[0.0], loss[1.0])
        ridge = max(v for a, v in loss.items() if 0 <= a <= 1)
        shape = (
            "no barrier: the two ends lie in one basin"
            if ridge <= ends + 1e-6
            else f"a barrier {ridge - ends:.3f} above the higher end"
        )
        out.append(
            "9. **The landscape between them**: along the straight line from the baseline's "
            "final parameters to the dice's (seed 0, same start, best lrs), the validation "
            f"loss goes from {loss[0.0]:.3f} to {loss[1.0]:.3f}, at most {ridge:.3f} in "
            f"between: {shape}."
        )
    return out


def report(
    cfg: StudyConfig,
    rows: list[dict[str, Any]],
    best: dict[str, float],
    line: dict[str, Any] | None,
    command: str,
) -> str:
    """study.md: the set-up, the tables and the paired comparisons."""
    table = aggregate(rows)
    present = [arm for arm in ARMS if any(r["arm"] == arm for r in rows)]
    clean = [r for r in rows if not r["label_noise"]]
    at_best = [r for r in clean if r["lr_factor"] == best.get(r["arm"])]
    noisy = [r for r in rows if r["label_noise"]]
    sigmas = cfg.weight_noise_sigmas
    out = [
        "# Do the dice do anything a smaller learning rate does not?\n",
        f"Command: `{command}`. Each run: {cfg.steps} updates of {cfg.batch_size} tweets, "
        f"{cfg.max_length} tokens, AdamW (warm-up 10%, linear decay), lr {cfg.lr:g} x "
        f"{[round(f, 4) for f in cfg.lr_factors]} for the tuned arms; {cfg.max_eval_samples} "
        f"validation examples, evaluated {cfg.evals} times (best = the highest of those). "
        f"The lr-matched control runs at lr x {DICE_MEAN:.2f}, the dice's E[scale]. Runs of "
        "one seed share the head's initialisation and the data order.\n",
        "## Answers\n",
        *answers(cfg, rows, best, line),
        "",
        "## Clean labels, every lr\n",
        "| arm | lr | runs | accuracy | best accuracy | macro-F1 | best macro-F1 "
        "| perturbed accuracy | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in (e for e in table if not e["label_noise"]):
        out.append(
            f"| {e['arm']} | {e['lr']:.3g} | {e['runs']} | {_pm(e, 'accuracy')} "
            f"| {_pm(e, 'best_accuracy')} | {_pm(e, 'macro_f1')} | {_pm(e, 'best_macro_f1')} "
            f"| {_pm(e, 'perturbed_accuracy')} | {e['failed_rate']:.0%} |"
        )
    out += [
        "",
        "Best lr (highest mean final accuracy over seeds 0-"
        f"{cfg.seeds - 1}): "
        + ", ".join(f"{arm} {cfg.lr * f:.3g}" for arm, f in best.items())
        + ". Mean ± std over seeds; failed = final accuracy within 2 points of the majority "
        "class.\n",
        "## Paired differences at each arm's best lr (95% CI over seeds)\n",
        f'"No difference" only where the whole interval lies within ±{NO_DIFFERENCE}; no '
        f"verdict from fewer than {MIN_SEEDS} seeds.\n",
        "| arm | vs | accuracy | best accuracy | macro-F1 | perturbed accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for arm in present:
        for ref in ("baseline", "lr-matched control"):
            if arm in (ref, "baseline"):
                continue
            cells = [
                _diff(paired(at_best, arm, ref, k))
                for k in ("accuracy", "best_accuracy", "macro_f1", "perturbed_accuracy")
            ]
            out.append(f"| {arm} | {ref} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Seed stability at the best lr\n",
        "| arm | runs | accuracy mean | std | failed runs |",
        "|---|---|---|---|---|",
    ]
    for arm in present:
        acc = np.array([r["accuracy"] for r in at_best if r["arm"] == arm], np.float64)
        if acc.size:
            failed = sum(r["failed"] for r in at_best if r["arm"] == arm)
            std = f"{np.nanstd(acc, ddof=1):.3f}" if acc.size > 1 else "-"
            out.append(f"| {arm} | {acc.size} | {np.nanmean(acc):.3f} | {std} | {failed} |")
    if any("flat_sigma" in r for r in at_best):
        out += [
            "",
            "## Weight noise (flatness)\n",
            f"Accuracy on {cfg.weight_noise_samples} validation examples when every row of "
            "every weight matrix moves by sigma x its norm in a random direction (biases and "
            f"LayerNorm kept), mean over {cfg.weight_noise_draws} draws and the seeds; flat "
            "sigma = the largest sigma of the grid up to which the mean stays within 1 point "
            "of the unperturbed accuracy.\n",
            "| arm | runs | unperturbed | "
            + " | ".join(f"sigma {s:g}" for s in sigmas)
            + " | flat sigma |",
            "|---|---|---|" + "---|" * len(sigmas) + "---|",
        ]
        for arm in present:
            mine = [r for r in at_best if r["arm"] == arm and "flat_sigma" in r]
            if mine:
                cells = [np.mean([r[f"weight_noise_{s:g}"] for r in mine]) for s in sigmas]
                unperturbed = np.mean([r["weight_noise_clean"] for r in mine])
                flat = np.mean([r["flat_sigma"] for r in mine])
                out.append(
                    f"| {arm} | {len(mine)} | {unperturbed:.3f} | "
                    + " | ".join(f"{c:.3f}" for c in cells)
                    + f" | {flat:.3g} |"
                )
        out += [
            "",
            "Paired differences from the baseline: the accuracy change (perturbed minus "
            "unperturbed) at each sigma, and the flat sigma.\n",
            "| arm | " + " | ".join(f"change at sigma {s:g}" for s in sigmas) + " | flat sigma |",
            "|---|" + "---|" * len(sigmas) + "---|",
        ]
        for arm in present:
            if arm != "baseline":
                cells = [_diff(paired(at_best, arm, "baseline", f"weight_noise_change_{s:g}"))
                         for s in sigmas]  # fmt: skip
                flat = _diff(paired(at_best, arm, "baseline", "flat_sigma"))
                out.append(f"| {arm} | " + " | ".join(cells) + f" | {flat} |")
    if noisy:
        out += [
            "",
            f"## {cfg.label_noise:.0%} of the training labels flipped (each arm at its best lr)\n",
            "| arm | runs | accuracy | best accuracy | macro-F1 | failed | vs baseline (accuracy) "
            "| vs baseline (best accuracy) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in (e for e in table if e["label_noise"]):
            d = paired(noisy, e["arm"], "baseline", "accuracy")
            b = paired(noisy, e["arm"], "baseline", "best_accuracy")
            same = e["arm"] == "baseline"
            out.append(
                f"| {e['arm']} | {e['runs']} | {_pm(e, 'accuracy')} | {_pm(e, 'best_accuracy')} "
                f"| {_pm(e, 'macro_f1')} | {e['failed_rate']:.0%} | {'' if same else _diff(d)} "
                f"| {'' if same else _diff(b)} |"
            )
    if line is not None:
        loss = dict(zip(line["alphas"], line["loss"], strict=True))
        lowest = min(loss, key=loss.__getitem__)
        ridge = max(v for a, v in loss.items() if 0 <= a <= 1)
        out += [
            "",
            "## The line between the baseline and the dice\n",
            "Validation loss along (1 - alpha) baseline + alpha dice (seed 0, best lrs): "
            f"{loss[0.0]:.4f} at alpha 0, {loss[1.0]:.4f} at alpha 1, lowest {loss[lowest]:.4f} "
            f"at alpha {lowest:g}; the highest between the two: {ridge:.4f}.\n",
        ]
    out += [
        "",
        "Per-run rows: runs.csv; per arm: study.csv. Figures: accuracy_vs_lr.png, "
        "weight_noise.png, interpolation.png, label_noise.png.",
    ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ the study


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs (or resumes) the study and writes its results; returns the per-run rows."""
    cfg, extra = parse_args(argv)
    os.makedirs(cfg.results_dir, exist_ok=True)
    command = "python examples/bert/study.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    # Phases 1 and 2: clean labels; then more seeds for the key arms at their best lr.
    runs = clean_runs(cfg)
    train_all(cfg, runs, extra)
    best = best_factors([row(cfg, r) for r in finished(cfg, runs)])
    runs += extra_runs(cfg, best)
    train_all(cfg, runs, extra)
    rows = [row(cfg, r) for r in finished(cfg, runs)]

    # Phase 3: weight noise on every clean run at its arm's best lr.
    for r in rows:
        if r["lr_factor"] == best[r["arm"]] and r["status"] == "completed":
            result = weight_noise(cfg, r["run_dir"])
            if result is not None:
                add_flatness(r, result)

    # Phase 4: the line between the baseline and the dice, from the same start.
    line = None
    if "baseline" in best and "dice before" in best:
        ends = [Run(arm, best[arm], 0) for arm in ("baseline", "dice before")]
        if len(finished(cfg, ends)) == 2:
            line = interpolation(cfg, *(end.out(cfg.runs_dir) for end in ends))

    # Phase 5: noisy labels, every arm at its best lr.
    noisy = noisy_runs(cfg, best)
    train_all(cfg, noisy, extra)
    rows += [row(cfg, r) for r in finished(cfg, noisy)]
    if not rows:
        raise SystemExit(f"no finished run in {cfg.runs_dir}: nothing to report")

    # The report.
    sweep.write_csv(os.path.join(cfg.results_dir, "runs.csv"), rows)
    sweep.write_csv(os.path.join(cfg.results_dir, "study.csv"), aggregate(rows))
    plots.plot_study(rows, best, line, cfg.weight_noise_sigmas, cfg.results_dir)
    text = report(cfg, rows, best, line, command.strip())
    with open(os.path.join(cfg.results_dir, "study.md"), "w") as f:
        f.write(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
