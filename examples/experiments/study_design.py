"""The study's design: its arms, questions and settings, the rows its runs give and what is
read off them (flatness, the barrier, the label-noise interaction), and the plan of runs
(:mod:`examples.experiments.study` runs it; :mod:`examples.experiments.study_report`
reports it). Importing this module starts no JAX."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from examples.bert import flags
from examples.bert.flags import opt
from examples.experiments import runner
from examples.experiments.runner import Job, finite, paired

Row = dict[str, Any]

# ----------------------------------------------------------------------------- the arms

DICE = {"threshold": 12, "modifier": 2}  # the default ruleset
DICE_MEAN = 0.37  # its exact E[scale] (DESIGN.md; tests check it against optax_dice.odds)
CLIP_MATCHED = round(1 / DICE_MEAN, 3)  # the clip a die before AdamW with clip 1 amounts to


@dataclasses.dataclass(frozen=True)
class Arm:
    """An arm: TrainConfig overrides, and the multiple of each grid lr it runs at."""

    overrides: Mapping[str, Any]
    lr_scale: float = 1.0


ARMS: dict[str, Arm] = {
    "baseline": Arm({"mode": "off"}),
    "dice before": Arm(DICE),
    "lr-matched control": Arm({"mode": "off"}, DICE_MEAN),
    "dice after": Arm({**DICE, "dice_position": "after"}),
    "fair die before": Arm({**DICE, "normalize": True}),
    "fair die after": Arm({**DICE, "normalize": True, "dice_position": "after"}),
    "baseline, clip 2.7": Arm({"mode": "off", "clip_norm": CLIP_MATCHED}),
    "baseline, no clip": Arm({"mode": "off", "clip_norm": 0.0}),
    "dice before, no clip": Arm({**DICE, "clip_norm": 0.0}),
}
ORIGINAL_ARMS = tuple(list(ARMS)[:6])  # round 1's arms: label noise runs these
#: The budget curve's arms: the dice and the control of each.
BUDGET_ARMS = ("baseline", "dice before", "baseline, clip 2.7", "dice after", "lr-matched control")
#: The weight-noise probe's arms: the dice before AdamW, the baseline and the clip matched to it.
PROBE_ARMS = ("baseline", "dice before", "baseline, clip 2.7")
ROUND1_STEPS = 150  # the budget of rows written before runs.csv had a steps column
#: The phases, as ``--phases`` names them (study.py's docstring says what each runs).
PHASES = ("tuning", "budgets", "seeds", "noise", "line", "weight-noise")
FAILED_MARGIN = 0.02  # a run fails if it ends within 2 points of the majority class
FLAT_LOSS = 0.05  # flat while the mean loses at most 5% of the headroom above the majority
BARRIER = 0.01  # a loss this far above the chord counts as a barrier


@dataclasses.dataclass(frozen=True)
class Question:
    """A headline answer's contrast: ``arm - ref`` in final accuracy, each at its best lr."""

    number: int
    arm: str
    ref: str


#: The headline contrasts (Holm's family; their arms get the power estimate's seeds).
HEADLINE = (
    Question(1, "dice before", "baseline"),
    Question(2, "dice before", "baseline, clip 2.7"),
    Question(3, "dice after", "lr-matched control"),
    Question(4, "fair die after", "baseline"),
    Question(5, "fair die before", "baseline"),
)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The study's settings; any other flag goes to every training run."""

    runs_dir: str = opt("runs/study", "the runs")
    results_dir: str | None = opt(None, "the report (default: <runs-dir>/results)")
    committed: str | None = opt(
        None, "runs.csv of finished runs not to run again (default: benchmarks/results/"
        "runs.csv, none with --quick; '' for none)")  # fmt: skip
    quick: bool = opt(False, "a smoke test of seconds")
    report_only: bool = opt(False, "train and measure nothing: report what is finished")
    phases: list[str] = opt(  # noqa: RUF009
        list(PHASES), "the phases that run (default: all); the others' finished rows are read: "
        + ", ".join(PHASES),
    )  # fmt: skip
    jobs: int = opt(1, "training runs at once")
    steps: int = opt(150, "updates per tuning run")
    budgets: list[int] = opt([600, 2000], "the budget curve's longer runs")  # noqa: RUF009
    batch_size: int = opt(16, "examples per update")
    max_length: int = opt(48, "tokens per example")
    lr: float = opt(1e-4, "the grid's middle lr")
    lr_factors: list[float] = opt(  # noqa: RUF009
        [0.25, 0.5, 1.0, 2.0, 4.0], "the grid, as multiples of --lr (the same for every arm)"
    )
    widen: int = opt(2, "factor-2 steps an arm is tuned past the grid's end where its best "
                     "lr lies (0: never)")  # fmt: skip
    evals: int = opt(3, "evaluations per run")
    seeds: int = opt(3, "tuning seeds 0 .. n-1")
    max_seeds: int = opt(10, "most seeds for a question")
    min_seeds: int = opt(5, "fewest for a headline arm")
    budget_seeds: int = opt(5, "seeds of the budget curve")
    label_noise: float = opt(0.2, "share of training labels flipped (0: skip)")
    max_eval_samples: int = opt(1000, "validation examples")
    weight_noise_sigmas: list[float] = opt(  # noqa: RUF009
        [round(0.05 * i, 2) for i in range(2, 11)], "relative weight-noise sizes"
    )
    weight_noise_draws: int = opt(20, "draws per sigma")
    probe_seeds: int = opt(5, "seeds of the weight-noise probe (the line: every seed)")
    alphas: int = opt(21, "points from alpha -0.5 to 1.5")
    readme: str | None = opt(None, "a README.md whose Results section quotes the answers: "
                             "rewrite them from this report")  # fmt: skip
    arms: list[str] | None = opt(  # noqa: RUF009
        None,
        "a subset of the arms, by folder name (default: all): " + ", ".join(map(runner.slug, ARMS)),
    )

    def problems(self) -> list[str]:
        """Every reason these settings cannot make a study (one line each)."""
        out = runner.arms_problems(ARMS, self.arms)
        for name in ("steps", "seeds", "evals", "jobs", "weight_noise_draws", "max_seeds",
                     "budget_seeds", "probe_seeds", "batch_size", "max_length"):  # fmt: skip
            if getattr(self, name) < 1:
                out.append(f"{flags.flag_name(name)} must be positive")
        if self.widen < 0:
            out.append(f"--widen must be 0 or more, got {self.widen}")
        for name in ("lr", "lr_factors", "budgets", "weight_noise_sigmas"):
            values = np.atleast_1d(np.asarray(getattr(self, name), np.float64))
            if not (np.isfinite(values).all() and (values > 0).all()):
                out.append(f"{flags.flag_name(name)} must be positive and finite")
        if not 0 <= self.label_noise < 1:
            out.append(f"--label-noise must lie in [0, 1), got {self.label_noise}")
        if self.alphas < 3:
            out.append("--alphas must be at least 3")
        if unknown := [p for p in self.phases if p not in PHASES]:
            out.append(f"--phases: no phase {', '.join(unknown)}; choose from {', '.join(PHASES)}")
        return out

    def measures(self, phase: str) -> bool:
        """Whether ``phase`` trains or measures in this call."""
        return not self.report_only and phase in self.phases

    def shrunk(self) -> StudyConfig:
        """The ``--quick`` settings (a setting given other than its default keeps its value)."""
        if not self.quick:
            return self
        quick = dict(
            steps=4, budgets=[8], batch_size=8, max_length=16, evals=2, seeds=1, max_seeds=2,
            min_seeds=2, budget_seeds=1, lr_factors=[1.0, 2.0], widen=0, max_eval_samples=32,
            weight_noise_sigmas=[0.1, 1.0], weight_noise_draws=2, alphas=5,
        )  # fmt: skip
        defaults = StudyConfig()
        return dataclasses.replace(
            self, **{k: v for k, v in quick.items() if getattr(self, k) == getattr(defaults, k)}
        )

    def committed_rows(self) -> str:
        """The committed runs.csv to read ('' for none)."""
        if self.committed is not None:
            return self.committed
        return "" if self.quick else os.path.join("benchmarks", "results", "runs.csv")


# ----------------------------------------------------------------------------- the rows


def is_nan(x: Any) -> bool:
    """Whether ``x`` is a float NaN (a column a row has no value in)."""
    return isinstance(x, float) and math.isnan(x)


def row(job: Job) -> Row:
    """A finished run's row of runs.csv (weight-noise columns come from :func:`add_flatness`)."""
    s = job.settings
    summary = runner.read_summary(job.workdir)
    evals = [r for r in runner.read_metrics(job.workdir) if r["kind"] == "eval"]
    r: Row = {"arm": job.arm, "seed": job.seed, "steps": s["steps"], "lr": s["lr"],
              "clip_norm": s.get("clip_norm", 1.0), "label_noise": s["label_noise"]}  # fmt: skip
    r |= {
        "accuracy": summary.get("eval_accuracy"),
        "best_accuracy": summary.get("best_eval_accuracy"),
        "macro_f1": summary.get("eval_macro_f1"),
        "best_macro_f1": max((e["macro_f1"] for e in evals), default=None),
        **{k: summary.get(k) for k in ("perturbed_accuracy", "majority_accuracy", "status",
                                       "mean_scale", "platform")},
        "run_dir": job.workdir,
    }  # fmt: skip
    return complete(r)


def complete(r: Row) -> Row:
    """A row with ``perturbation_drop``, ``failed`` and the weight-noise columns derived, and
    the defaults of old rows (before the budget and the clip were columns)."""
    r = {k: (math.nan if v is None else v) for k, v in r.items()}
    r.setdefault("steps", ROUND1_STEPS)
    if not isinstance(r.get("platform"), str):  # rows from before the column: all on the CPU
        r["platform"] = "cpu"
    if not isinstance(r.get("clip_norm"), int | float) or math.isnan(r["clip_norm"]):
        r["clip_norm"] = ARMS[r["arm"]].overrides.get("clip_norm", 1.0) if r["arm"] in ARMS else 1.0
    r["perturbation_drop"] = r["accuracy"] - r["perturbed_accuracy"]
    r["failed"] = not r["accuracy"] >= r["majority_accuracy"] + FAILED_MARGIN
    clean = r.get("weight_noise_clean", math.nan)
    measured = {k.rsplit("_", 1)[1]: v for k, v in r.items()
                if re.fullmatch(r"weight_noise_[0-9.e+-]+", k) and not is_nan(v)}  # fmt: skip
    if measured and not is_nan(clean):  # the derived columns, from their definition
        accuracy = {sigma: [value] for sigma, value in measured.items()}
        sigmas = sorted(float(sigma) for sigma in measured)
        result = {"clean": clean, "sigmas": sigmas, "accuracy": accuracy}
        if not is_nan(r.get("weight_noise_majority", math.nan)):  # the probe's, not the run's
            result["majority"] = r["weight_noise_majority"]
        r = add_flatness(r, result)
        if is_nan(r.get("weight_noise_run_accuracy", math.nan)):  # probed before the column:
            r["weight_noise_run_accuracy"] = r["accuracy"]  # only the row's own run was probed
    return r


def add_flatness(r: Row, result: Mapping[str, Any]) -> Row:
    """The row with ``weight_noise_clean``, ``weight_noise_<sigma>`` (mean over draws), its
    ``_change_<sigma>`` (over the headroom above the majority: -1 is down to it), ``flat_sigma``
    and how it was measured (``weight_noise_majority``: the probe's split's majority share,
    ``weight_noise_draws``, ``weight_noise_examples``). ``weight_noise_run_accuracy``, the final
    accuracy of the run probed, the caller sets: the row's ``accuracy`` unless that run was
    trained again on another machine and ended elsewhere."""
    clean, majority = result["clean"], result.get("majority", r["majority_accuracy"])
    r = {**r, "weight_noise_clean": clean, "weight_noise_majority": majority}
    r |= {f"weight_noise_{k}": result[k] for k in ("draws", "examples") if k in result}
    for sigma in result["sigmas"]:
        mean = float(np.mean(result["accuracy"][f"{sigma:g}"]))
        r[f"weight_noise_{sigma:g}"] = mean
        r[f"weight_noise_change_{sigma:g}"] = (mean - clean) / max(clean - majority, 1e-9)
    r["flat_sigma"] = flat_sigma([r], result["sigmas"])
    return r


def sigmas_in(rows: Sequence[Row]) -> list[float]:
    """The weight-noise sigmas the rows have columns for, in order."""
    found = {float(k.rsplit("_", 1)[1]) for r in rows for k, v in r.items()
             if k.startswith("weight_noise_change_") and not is_nan(v)}  # fmt: skip
    return sorted(found)


def flat_sigma(rows: Sequence[Row], sigmas: Sequence[float]) -> float:
    """The largest sigma up to which the mean curve over ``rows`` loses at most FLAT_LOSS of
    the headroom (0: not even the first sigma; NaN: not measured at the first sigma)."""
    first = finite(r.get(f"weight_noise_change_{sigmas[0]:g}") for r in rows) if sigmas else []
    if not len(first):
        return math.nan
    flat = 0.0
    for sigma in sigmas:
        change = finite(r.get(f"weight_noise_change_{sigma:g}") for r in rows)
        if not change.size or change.mean() < -FLAT_LOSS - 1e-9:  # -5% itself is flat
            break
        flat = sigma
    return flat


def barrier(line: Mapping[str, Sequence[float]]) -> float:
    """The largest loss above the chord between the ends, alpha in [0, 1] (at least 0)."""
    loss = dict(zip(line["alphas"], line["loss"], strict=True))
    a, b = loss[0.0], loss[1.0]
    return max(0.0, *(v - ((1 - t) * a + t * b) for t, v in loss.items() if 0 <= t <= 1))


def at_best_rows(rows: Sequence[Row], best: Mapping[str, float], steps: int,
                 noise: float = 0.0) -> list[Row]:  # fmt: skip
    """The rows of each arm at its best lr, at ``steps`` updates and this label noise."""
    return [
        r for r in rows
        if r["arm"] in best and f"{r['lr']:.6g}" == f"{best[r['arm']]:.6g}"
        and r["steps"] == steps and r["label_noise"] == noise
    ]  # fmt: skip


def interaction(rows: Sequence[Row], best: Mapping[str, float], steps: int, noise: float,
                arm: str, ref: str = "baseline") -> dict[str, Any] | None:  # fmt: skip
    """(noisy - clean) of ``arm`` minus that of ``ref``, paired (> 0: the arm loses less)."""
    clean, noisy = at_best_rows(rows, best, steps), at_best_rows(rows, best, steps, noise)
    loss = {}
    for name in (arm, ref):
        c = {r["seed"]: r["accuracy"] for r in clean if r["arm"] == name}
        n = {r["seed"]: r["accuracy"] for r in noisy if r["arm"] == name}
        loss[name] = {s: n[s] - c[s] for s in set(c) & set(n)}
    seeds = sorted(set(loss[arm]) & set(loss[ref]))
    diffs = finite(loss[arm][s] - loss[ref][s] for s in seeds)
    return runner.difference(diffs)


# ----------------------------------------------------------------------------- the plan


def lr_of(cfg: StudyConfig, arm: str, factor: float) -> float:
    """The arm's lr at a grid factor."""
    return cfg.lr * ARMS[arm].lr_scale * factor


def key(arm: str, steps: int, lr: float, label_noise: float, seed: int) -> tuple[Any, ...]:
    """What identifies a run among the rows (its lr to 6 significant digits)."""
    return (arm, int(steps), f"{lr:.6g}", float(label_noise), int(seed))


def row_key(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """The key of a row."""
    return key(r["arm"], r["steps"], r["lr"], r["label_noise"], r["seed"])


def job(cfg: StudyConfig, extra: Mapping[str, Any], arm: str, lr: float, seed: int,
        steps: int | None = None, label_noise: float = 0.0) -> Job:  # fmt: skip
    """One run of the study: the arm's overrides, the study's budget, then the flags given."""
    steps = steps or cfg.steps
    folder = (runner.slug(arm), f"steps-{steps}", f"lr-{lr:.4g}", f"noise-{label_noise:g}")
    workdir = os.path.join(cfg.runs_dir, *folder, f"seed{seed}")
    settings = {
        **ARMS[arm].overrides, "lr": lr, "seed": seed, "label_noise": label_noise,
        "steps": steps, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
        "max_eval_samples": cfg.max_eval_samples, "eval_batch_size": cfg.batch_size * 8,
        "eval_every": max(1, steps // cfg.evals), "save_every": max(1, steps // cfg.evals),
        "keep_checkpoints": 1, "perturbed_eval": True, "char_drop": 0.1, "word_swap": 0.2,
        "no_progress": True, **extra,
    }  # fmt: skip
    return Job(arm, seed, workdir, settings, key(arm, steps, lr, label_noise, seed))


def phase_of(cfg: StudyConfig, j: Job) -> str:
    """The phase a training job belongs to (:data:`PHASES`)."""
    if j.settings["steps"] != cfg.steps:
        return "budgets"
    if j.settings["label_noise"]:
        return "noise"
    return "tuning" if j.seed < cfg.seeds else "seeds"  # the further seeds start at --seeds


def factors(cfg: StudyConfig) -> list[float]:
    """The lr factors an arm may be tuned at: the grid's, then ``--widen`` factor-2 steps
    past each of its ends (tried only for an arm whose best lies at that end)."""
    lo, hi = min(cfg.lr_factors), max(cfg.lr_factors)
    past = [(lo / 2**k, hi * 2**k) for k in range(1, cfg.widen + 1)]
    return sorted({*cfg.lr_factors, *(f for pair in past for f in pair)})


def tuning_jobs(cfg: StudyConfig, extra: Mapping[str, Any]) -> list[Job]:
    """Phase 1: every arm at every lr, every tuning seed; the grid's middle first, then out."""
    outwards = sorted(cfg.lr_factors, key=lambda f: (abs(math.log(f)), f))
    return [
        job(cfg, extra, arm, lr_of(cfg, arm, f), seed)
        for f in outwards
        for seed in range(cfg.seeds)
        for arm in runner.select(ARMS, cfg.arms)
    ]


def lr_grid(cfg: StudyConfig, arm: str) -> dict[str, float]:
    """The arm's lrs it may be tuned at (as ``.6g``, as rows are matched) -> their factor."""
    return {f"{lr_of(cfg, arm, f):.6g}": f for f in factors(cfg)}


def tuned(cfg: StudyConfig, rows: Sequence[Row], arm: str) -> dict[str, dict[int, float]]:
    """The arm's tuning results: lr (as ``.6g``) -> tuning seed -> clean accuracy (NaN: 0),
    at each of :func:`factors` measured."""
    grid = lr_grid(cfg, arm)
    acc: dict[str, dict[int, float]] = {}
    for r in rows:
        lr = f"{r['lr']:.6g}"
        tuning = (r["arm"], r["steps"], r["label_noise"]) == (arm, cfg.steps, 0.0)
        if tuning and lr in grid and int(r["seed"]) < cfg.seeds:
            acc.setdefault(lr, {})[int(r["seed"])] = np.nan_to_num(float(r["accuracy"]))
    return acc


def widen_jobs(cfg: StudyConfig, extra: Mapping[str, Any], rows: Sequence[Row]) -> list[Job]:
    """Tuning past the grid's end, once an arm's grid is measured on every tuning seed: where
    its best lr is the highest (lowest) it has tried, the tuning seeds at twice (half) that lr,
    within :func:`factors`; where its best is one of those not measured on every seed yet, the
    rest of its seeds first."""
    chosen = runner.select(ARMS, cfg.arms)
    out = []
    for arm, lr in best_lrs(cfg, rows).items():
        at = lr_grid(cfg, arm)
        seeds = {at[x]: len(by_seed) for x, by_seed in tuned(cfg, rows, arm).items()}
        if arm not in chosen or any(seeds.get(f, 0) < cfg.seeds for f in cfg.lr_factors):
            continue
        f = at[f"{lr:.6g}"]
        if seeds[f] < cfg.seeds:
            step = f
        elif f == max(seeds) and f * 2 in at.values():
            step = f * 2
        elif f == min(seeds) and f / 2 in at.values():
            step = f / 2
        else:
            continue
        out += [job(cfg, extra, arm, lr_of(cfg, arm, step), s) for s in range(cfg.seeds)]
    return out


def tuning_means(cfg: StudyConfig, rows: Sequence[Row], arm: str) -> dict[str, float]:
    """The arm's mean clean accuracy at each lr tuned (as ``.6g``) over the tuning seeds
    (``--seeds``) that all its measured lrs share, so every lr is judged on the same seeds (none
    shared: every tuning seed; NaN: 0), rounded to 1e-9 so that equal sums tie exactly."""
    acc = tuned(cfg, rows, arm)
    if not acc:
        return {}
    shared = set.intersection(*map(set, acc.values())) or set(range(cfg.seeds))
    return {lr: round(float(np.mean([v for s, v in a.items() if s in shared])), 9)
            for lr, a in acc.items()}  # fmt: skip


def best_lrs(cfg: StudyConfig, rows: Sequence[Row]) -> dict[str, float]:
    """Each arm's lr of highest :func:`tuning_means` (of :func:`factors`, the grid widened
    where it was; ties: nearest the grid's middle, then the lower lr). Later seeds at one lr do
    not count."""
    best = {}
    for arm in ARMS:
        grid, mean = lr_grid(cfg, arm), tuning_means(cfg, rows, arm)
        if mean:
            order = {lr: (mean[lr], -abs(math.log(grid[lr])), -grid[lr]) for lr in mean}
            best[arm] = float(max(mean, key=order.__getitem__))
    return best


def seeds_for(cfg: StudyConfig, rows: Sequence[Row], best: Mapping[str, float]) -> dict[str, int]:
    """Seeds per headline arm: its questions' most by a power estimate (80% to detect 2 points
    at 5%) from the observed paired SD, within ``--min-seeds`` .. ``--max-seeds``."""
    at_best = at_best_rows(rows, best, cfg.steps)
    out: dict[str, int] = {}
    for q in HEADLINE:
        d = paired(at_best, q.arm, q.ref, "accuracy")
        n = cfg.min_seeds
        if d is not None and d["n"] >= runner.MIN_SEEDS:
            n = max(n, runner.seeds_needed(d["sd"]))
        for arm in (q.arm, q.ref):
            out[arm] = min(cfg.max_seeds, max(out.get(arm, 0), n))
    return out


#: Answer 7's contrasts: noisy minus clean, each arm minus the baseline.
NOISE_QUESTION = ("dice before", "fair die before")


def noise_seeds(cfg: StudyConfig, rows: Sequence[Row], best: Mapping[str, float]) -> dict[str, int]:
    """Noisy-label seeds per arm: answer 7's arms (and the baseline) as many as a power
    estimate from the interaction's observed paired SD asks for (at least ``--min-seeds``, at
    most ``--max-seeds``); the other arms the tuning seeds."""
    n = cfg.min_seeds
    for arm in NOISE_QUESTION:
        d = interaction(rows, best, cfg.steps, cfg.label_noise, arm)
        if d is not None and d["n"] >= runner.MIN_SEEDS:
            n = max(n, runner.seeds_needed(d["sd"]))
    asked = ("baseline", *NOISE_QUESTION)
    return {a: min(cfg.max_seeds, n) if a in asked else cfg.seeds for a in ORIGINAL_ARMS}


def later_jobs(cfg: StudyConfig, extra: Mapping[str, Any], rows: Sequence[Row]) -> list[Job]:
    """Phases 2-5, from the rows so far: the first budget, more seeds, noisy labels, the
    longer budgets (the budget curve first: it decides what the other answers mean)."""
    best = best_lrs(cfg, rows)
    chosen = runner.select(ARMS, cfg.arms)
    more = [
        job(cfg, extra, arm, best[arm], seed)
        for arm, n in seeds_for(cfg, rows, best).items()
        if arm in best and arm in chosen
        for seed in range(cfg.seeds, n)
    ]
    n_noisy = noise_seeds(cfg, rows, best)
    noisy = [
        job(cfg, extra, arm, best[arm], seed, label_noise=cfg.label_noise)
        for seed in range(max(n_noisy.values()))
        for arm in ORIGINAL_ARMS
        if arm in best and arm in chosen and cfg.label_noise and seed < n_noisy[arm]
    ]
    longer = [
        job(cfg, extra, arm, best[arm], seed, steps=steps)
        for steps in cfg.budgets
        for seed in range(cfg.budget_seeds)
        for arm in BUDGET_ARMS
        if arm in best and arm in chosen
    ]
    first = [j for j in longer if j.settings["steps"] in cfg.budgets[:1]]
    rest = [j for j in longer if j.settings["steps"] not in cfg.budgets[:1]]
    return first + more + noisy + rest
