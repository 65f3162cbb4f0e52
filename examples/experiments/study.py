"""Do the dice do anything a smaller learning rate, or a looser clip, does not? The study.

Every run fine-tunes the packaged all-MiniLM-L6-v2 on the tweets with the training script; runs
of one seed share the head's initialisation and the data order, so arms are compared seed by
seed (paired). Every arm (:data:`ARMS`) is tuned over the same lr grid (``--lr`` x
``--lr-factors``), widened a factor 2 at a time (up to ``--widen`` times) past an end where its
best lies, and compared at its own best lr. The plan, resumed where it stopped (a run whose row
is in ``--committed`` is not run again): 1. tuning, ``--seeds`` seeds, every arm at every lr,
then past the grid's end where an arm's best lies; 2. the budget curve's first budget
(``--budgets``, ``--budget-seeds``): whether the dice end worse or learn slower; 3. more seeds
for the headline arms, as many as a power estimate asks for (at most ``--max-seeds``); 4. noisy
labels (``--label-noise``); 5. the budget curve's longer budgets; 6. the validation loss along
the line from the baseline's to the dice's final parameters, every seed; 7. weight noise on the
probe arms' (:data:`PROBE_ARMS`) clean runs at their best lr, ``--probe-seeds`` seeds. The
probes evaluate every validation example, and train again, in its folder, a committed run whose
final parameters are not on this machine. ``--phases`` runs some phases only (the others' rows
are read): ``--phases budgets --budgets 2000`` on a GPU adds the budget curve's longest runs to
the CPU's committed rows, each arm at the lr the CPU's tuning chose (``bash
benchmarks/device_check.sh budget``).

It writes ``runs.csv``, ``lines.csv``, ``study.csv``, ``study.md`` and the figures under
``--results-dir`` (default ``<runs-dir>/results``). ``--report-only`` trains and measures
nothing; ``--quick`` is a smoke test of seconds. Any training flag goes to every run. Importing
this module starts no JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from examples.bert import flags
from examples.bert.flags import opt
from examples.experiments import runner
from examples.experiments.runner import Job, cell, finite, mean_std, paired, said

PROG = "python examples/experiments/study.py"
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
#: What says a folder holds a row's run: its final metrics (bit-exact where it was trained).
RUN_FINGERPRINT = ("accuracy", "macro_f1")
#: The phases, as ``--phases`` names them (the module docstring says what each runs).
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


def parse_args(argv: Sequence[str] | None) -> tuple[StudyConfig, dict[str, Any]]:
    """The study's settings and the training flags for every run (bad input: one line)."""
    cfg, extra = runner.parse(StudyConfig, argv, PROG, __doc__.split("\n\n")[0])
    dataset = str(extra.get("dataset", ""))
    is_file = dataset.endswith((".csv", ".tsv", ".json", ".jsonl", ".parquet"))
    if is_file and not os.path.isfile(dataset):
        runner.Parser(prog=PROG).error(f"--dataset {dataset}: no such file")
    cfg = cfg.shrunk()
    runner.check_jobs(tuning_jobs(cfg, extra), PROG)
    return cfg, extra


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


# ----------------------------------------------------------------------------- the rows


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
                if re.fullmatch(r"weight_noise_[0-9.e+-]+", k) and not _nan(v)}  # fmt: skip
    if measured and not _nan(clean):  # the derived columns, from their definition
        accuracy = {sigma: [value] for sigma, value in measured.items()}
        sigmas = sorted(float(sigma) for sigma in measured)
        result = {"clean": clean, "sigmas": sigmas, "accuracy": accuracy}
        if not _nan(r.get("weight_noise_majority", math.nan)):  # the probe's, not the run's
            result["majority"] = r["weight_noise_majority"]
        r = add_flatness(r, result)
    return r


def add_flatness(r: Row, result: Mapping[str, Any]) -> Row:
    """The row with ``weight_noise_clean``, ``weight_noise_<sigma>`` (mean over draws), its
    ``_change_<sigma>`` (over the headroom above the majority: -1 is down to it), ``flat_sigma``
    and how it was measured (``weight_noise_majority``: the probe's split's majority share,
    ``weight_noise_draws``, ``weight_noise_examples``)."""
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
             if k.startswith("weight_noise_change_") and not _nan(v)}  # fmt: skip
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


# ----------------------------------------------------------------------------- the answers


@dataclasses.dataclass(frozen=True)
class View:
    """The rows, seen as the report needs them."""

    cfg: StudyConfig
    rows: list[Row]
    lines: list[Row]  # one per (seed, alpha): the line between baseline and dice before
    best: dict[str, float]

    @property
    def at_best(self) -> list[Row]:
        """Clean rows at each arm's best lr and the tuning budget."""
        return at_best_rows(self.rows, self.best, self.cfg.steps)

    def d(self, arm: str, ref: str, key: str = "accuracy", steps: int | None = None):
        """The paired difference at the best lrs (and ``steps``, default the tuning's)."""
        return paired(at_best_rows(self.rows, self.best, steps or self.cfg.steps), arm, ref, key)

    def mean(self, arm: str, key: str = "accuracy") -> str:
        """``mean ± std`` of the arm at its best lr (``no runs yet`` without one)."""
        text = mean_std(r.get(key) for r in self.at_best if r["arm"] == arm)
        return "no runs yet" if text == "-" else text

    def lr(self, arm: str) -> str:
        """The arm's best lr, how many of the grid's lrs (and those past its end that were
        tried) it was chosen from, and whether it is the highest or lowest of them."""
        if arm not in self.best:
            return "-"
        tried = {float(lr) for lr in tuned(self.cfg, self.rows, arm)}
        grid = {float(f"{lr_of(self.cfg, arm, f):.6g}") for f in self.cfg.lr_factors} | tried
        text = f"{self.best[arm]:.3g}, best of {len(tried)} of {len(grid)} lrs"
        if self.best[arm] == max(tried) != min(tried):
            return f"{text}, the highest tried"
        if self.best[arm] == min(tried) != max(tried):
            return f"{text}, the lowest tried"
        return text

    def per_seed_lines(self) -> dict[int, dict[str, list[float]]]:
        """The lines by seed, alphas in order."""
        out: dict[int, dict[str, list[float]]] = {}
        for p in sorted(self.lines, key=lambda p: (p["seed"], p["alpha"])):
            line = out.setdefault(int(p["seed"]), {"alphas": [], "loss": [], "accuracy": []})
            for k, name in (("alphas", "alpha"), ("loss", "loss"), ("accuracy", "accuracy")):
                line[k].append(float(p[name]))
        return out


def budget_words(v: View, arm: str, ref: str) -> str:
    """ "ends worse" / "ends better" (behind / ahead at the longest budget measured),
    "learns slower" / "learns faster" (behind / ahead before, level at the longest), "no
    difference at any budget", or not resolved at the longest, with where it was before. A
    budget counts once it has the paired seeds a verdict needs; one with fewer is shown, and
    said to be pending. Every budget's difference is shown with its interval and seeds; the
    one verdict is the course's."""
    budgets = [v.cfg.steps, *v.cfg.budgets]
    gaps = {b: v.d(arm, ref, steps=b) for b in budgets}
    shown = f"at {_and(budgets)} updates: " + ", ".join(map(runner.brief, gaps.values()))
    measured = [b for b in budgets if gaps[b] is not None and gaps[b]["n"] >= runner.MIN_SEEDS]
    if not measured:
        found = any(g is not None for g in gaps.values())
        return f"{arm} minus {ref}" + (f" {shown}: **not resolved yet**" if found else
                                       ": not measured yet")  # fmt: skip
    longest, done = gaps[budgets[-1]], measured[-1] == budgets[-1]
    if done:
        pending = ""
    elif longest:
        pending = f" ({budgets[-1]}: {longest['n']} paired seed(s) so far)"
    else:
        pending = f" ({budgets[-1]} not measured yet)"
    side = {"hurts": "behind", "helps": "ahead", "no difference": "level"}
    where = {b: side.get(gaps[b]["verdict"], "not resolved") for b in measured}
    first, last, end = where[measured[0]], where[measured[-1]], measured[-1]
    before = measured[:-1]
    history = ", ".join(f"{where[b]} at {b}" for b in before)
    if last in ("behind", "ahead"):
        if len(measured) == 1:
            at = f"{last} at {end} updates"
        elif first == last:
            at = f"still {last} at {end} updates"
        else:
            was = "no difference" if first == "level" else first
            at = f"{was} at {measured[0]}, {last} at {end} updates"
        ends = "ends worse" if last == "behind" else "ends better"
        word = f"{ends} ({at})" if done and before else at + pending
    elif last == "level" and before:
        behind = [b for b in before if where[b] == "behind"]
        ahead = [b for b in before if where[b] == "ahead"]
        if behind and not ahead:
            word = f"learns slower (behind at {_and(behind)}, level by {end} updates){pending}"
        elif ahead and not behind:
            word = f"learns faster (ahead at {_and(ahead)}, level by {end} updates){pending}"
        elif all(where[b] == "level" for b in before):
            word = f"no difference at any budget ({_and(measured)} updates){pending}"
        else:
            word = f"level at {end} updates ({history}){pending}"
    else:
        word = f"{last} at {end} updates" + (f" ({history})" if history else "") + pending
    return f"{arm} minus {ref} {shown}: **{word}**"


def said_as(d: Mapping[str, Any] | None, helps: str, hurts: str) -> str:
    """:func:`said` with the question's own words for a positive and a negative difference
    (a flatter model does not "help"): ``+0.031 [+0.001, +0.061] over 5 paired seed(s):
    **more robust**``."""
    words = {"helps": helps, "hurts": hurts}
    return said(d if d is None else {**d, "verdict": words.get(d["verdict"], d["verdict"])})


def _and(items: Sequence[Any]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = [str(x) for x in items]
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + f" and {words[-1]}"


def answers(v: View) -> list[str]:
    """The study's questions, each answered in one sentence from its paired interval."""
    noise, steps, sigmas = v.cfg.label_noise, v.cfg.steps, sigmas_in(v.at_best)
    mid = sigmas[len(sigmas) // 2] if sigmas else None
    flats = {a: flat_sigma([r for r in v.at_best if r["arm"] == a], sigmas) for a in PROBE_ARMS}
    flat = "; ".join(f"{a}: {_sigma_text(x, 'not measured yet')}" for a, x in flats.items())
    flatter = (
        f"Flat sigma (of the mean curve), {flat}; the change at sigma {mid:g} as a share of the "
        f"headroom (positive: the dice lose less of it; within {runner.NO_DIFFERENCE} of "
        "the headroom: no difference), dice minus baseline: "
        + said_as(
            v.d("dice before", "baseline", f"weight_noise_change_{mid:g}"), "flatter", "sharper"
        )
        + "; dice minus AdamW clipped at the matched threshold: "
        + said_as(
            v.d("dice before", "baseline, clip 2.7", f"weight_noise_change_{mid:g}"),
            "flatter",
            "sharper",
        )
        if mid
        else "Weight noise: not measured yet"
    )
    barriers = [barrier(line) for line in v.per_seed_lines().values()]
    noisy = {a: said_as(interaction(v.rows, v.best, steps, noise, a), "more robust",
                        "less robust") for a in ("dice before", "fair die before")}  # fmt: skip
    return [
        f"1. **Tuned alike, do the dice before AdamW lose?** Baseline at lr {v.lr('baseline')}: "
        f"{v.mean('baseline')}; dice before at lr {v.lr('dice before')}: "
        f"{v.mean('dice before')}; dice minus baseline: {said(v.d('dice before', 'baseline'))}.",
        "2. **Is it the clip?** Against AdamW clipped at the dice's matched threshold "
        f"({CLIP_MATCHED}, {v.mean('baseline, clip 2.7')}): "
        f"{said(v.d('dice before', 'baseline, clip 2.7'))}; without any clip, dice minus "
        f"baseline: {said(v.d('dice before, no clip', 'baseline, no clip'))}.",
        "3. **Dice after AdamW against the tuned lr-matched control**: "
        f"{v.mean('dice after')} against {v.mean('lr-matched control')}: "
        f"{said(v.d('dice after', 'lr-matched control'))}.",
        f"4. **The fair die after AdamW, at its own best lr ({v.lr('fair die after')})**, minus "
        f"the baseline: {said(v.d('fair die after', 'baseline'))}.",
        "5. **The fair die before AdamW** minus the baseline: "
        f"{said(v.d('fair die before', 'baseline'))}.",
        f"6. **Ends worse or learns slower?** {budget_words(v, 'dice before', 'baseline')}; "
        f"{budget_words(v, 'dice after', 'lr-matched control')}.",
        f"7. **Robust to noisy labels ({noise:.0%} flipped)?** Noisy minus clean accuracy, "
        "dice before minus baseline (positive: the dice lose less): "
        f"{noisy['dice before']}; the fair die before: {noisy['fair die before']}.",
        f"8. **Flatter?** {flatter}.",
        "9. **A barrier between them?** The largest loss above the chord from the baseline's "
        f"final parameters to the dice's, per seed: {barrier_words(barriers)}.",
    ]


def _sigma_text(x: float, missing: str) -> str:
    return missing if math.isnan(x) else f"{x:g}"


def barrier_words(barriers: Sequence[float]) -> str:
    """The barriers of every seed in words: how high, and whether there is one."""
    b = runner.difference(np.array(barriers, np.float64))
    if b is None:
        return "not measured yet"
    over = sum(x > BARRIER for x in barriers)
    if b["n"] >= runner.MIN_SEEDS and b["lo"] > BARRIER:
        word = "a barrier"
    elif over == 0:
        word = f"no barrier (under {BARRIER} in loss on every seed)"
    else:
        word = f"a barrier above {BARRIER} on {over} of {b['n']} seed(s)"
    ci = "" if math.isnan(b["lo"]) else f" [{b['lo']:.3f}, {b['hi']:.3f}]"
    return (
        f"mean {b['mean']:.3f}{ci}, at most {max(barriers):.3f} over {b['n']} seed(s): **{word}**"
    )


# ------------------------------------------------------------------------------ the report

TABLE_KEYS = ("accuracy", "best_accuracy", "macro_f1", "best_macro_f1", "perturbed_accuracy")


def _pm(e: Mapping[str, Any], key: str) -> str:
    mean, std = e[f"{key}_mean"], e[f"{key}_std"]
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")


def aggregate(rows: Sequence[Row]) -> list[Row]:
    """study.csv: per arm, budget, lr and label noise, each result's mean and std, failures."""
    by = ["arm", "steps", "lr", "label_noise"]
    table = runner.aggregate(rows, by, [*TABLE_KEYS, "perturbation_drop"])
    for e in table:
        mine = [r for r in rows if all(r[k] == e[k] for k in by)]
        e["failed_rate"] = float(np.mean([bool(r["failed"]) for r in mine]))
    return table


def headline(v: View) -> tuple[dict[int, str], dict[int, Any], dict[int, tuple[float, bool]]]:
    """The headline contrasts: their names, paired differences and Holm-adjusted p-values."""
    longest = max(v.cfg.budgets, default=v.cfg.steps)
    ds = {q.number: v.d(q.arm, q.ref) for q in HEADLINE}
    ds[6] = v.d("dice before", "baseline", steps=longest)
    ds[7] = interaction(v.rows, v.best, v.cfg.steps, v.cfg.label_noise, "dice before")
    names = {q.number: f"{q.arm} - {q.ref}" for q in HEADLINE}
    names |= {6: f"dice before - baseline at {longest} updates",
              7: "noisy - clean, dice before - baseline's (> 0: loses less)"}  # fmt: skip
    family = {n: d["p"] for n, d in ds.items() if d is not None and d["n"] >= runner.MIN_SEEDS}
    adjusted = runner.holm({n: family.get(n, math.nan) for n in ds})
    return names, ds, adjusted


def holm_sentence(v: View) -> str:
    """Which headline answers hold once Holm's adjustment is made."""
    _, ds, adjusted = headline(v)
    measured = [n for n, d in ds.items() if d is not None and d["n"] >= runner.MIN_SEEDS]
    held = [str(n) for n in measured if adjusted[n][1]]
    lost = [f"{n} ({adjusted[n][0]:.2g})" for n in measured
            if not adjusted[n][1] and ds[n]["verdict"] in ("helps", "hurts")]  # fmt: skip
    return (
        f"Multiple comparisons: over the {len(measured)} headline contrasts measured, Holm's "
        f"adjustment keeps {'answers ' + ', '.join(held) if held else 'none of them'} at 5% "
        "family-wise; "
        + (f"these do not hold after it (adjusted p): {', '.join(lost)}." if lost
           else "every verdict above that it covers still holds.")
    )  # fmt: skip


def headline_table(v: View) -> list[str]:
    """Holm over the headline contrasts, and the seeds a power estimate asks for."""
    names, ds, adjusted = headline(v)
    held_out = [r for r in v.at_best if int(r["seed"]) >= v.cfg.seeds]
    questions = {q.number: q for q in HEADLINE}
    body = []
    for n, d in ds.items():
        q = questions.get(n)
        held = cell(paired(held_out, q.arm, q.ref, "accuracy")) if q else "-"
        if d is None:
            body.append([n, names[n], 0, "-", "-", "-", "-", "-", held])
            continue
        p, keep = adjusted[n]
        need = runner.seeds_needed(d["sd"]) if d["n"] > 1 else "-"
        holm_p = "-" if math.isnan(p) else f"{p:.3g}"
        body.append([n, names[n], d["n"], f"{d['sd']:.3f}", f"{d['p']:.3g}", holm_p,
                     "yes" if keep else "no", need, held])  # fmt: skip
    header = ["answer", "contrast", "seeds", "paired SD", "p", "Holm p", "holds at 5%",
              "seeds for 80% power at 2 points", f"held out: seeds {v.cfg.seeds}+"]  # fmt: skip
    return [
        "## Multiple comparisons and seeds\n",
        f"{len(ds)} headline contrasts, one family (those with the {runner.MIN_SEEDS} paired seeds "
        "a verdict needs): Holm's step-down adjustment of their paired "
        "t-test p-values keeps the family-wise error at 5%; the intervals above are per "
        "contrast, not adjusted. Seeds per question: a paired t-test at 5% needs the power "
        "column's seeds to detect 2 points with 80% power at the observed paired SD; the plan "
        f"runs that many for answers 1-5 and 7, at least {v.cfg.min_seeds}, at most "
        f"{v.cfg.max_seeds} (estimated again at each start of the driver), and "
        f"{v.cfg.budget_seeds} for the budget curve. Each arm's lr is chosen on seeds 0-"
        f"{v.cfg.seeds - 1}, which the contrasts also use: choosing the best of several noisy "
        "means favours the chosen lr, the more so the noisier the arm (a winner's curse); the "
        "last column is the contrast over the other seeds alone, which it does not touch.\n",
        runner.markdown_table(header, body),
        "",
    ]


def tuning_table(v: View) -> list[str]:
    """Every arm at every lr, clean labels, the tuning budget."""
    mine = [r for r in v.rows if r["steps"] == v.cfg.steps and not r["label_noise"]]
    means = {a: tuning_means(v.cfg, v.rows, a) for a in ARMS}

    def chosen_on(e: Row) -> str:
        mean = means[e["arm"]].get(f"{e['lr']:.6g}")
        return "-" if mean is None else f"{mean:.3f}"

    body = [
        [e["arm"], f"{e['lr']:.3g}", e["runs"], chosen_on(e), *(_pm(e, k) for k in TABLE_KEYS),
         f"{e['failed_rate']:.0%}"]
        for e in sorted(aggregate(mine), key=lambda e: (list(ARMS).index(e["arm"]), e["lr"]))
    ]  # fmt: skip
    header = ["arm", "lr", "runs", "tuning seeds' mean (chooses the lr)", "accuracy",
              "best accuracy", "macro-F1", "best macro-F1", "perturbed accuracy",
              "failed"]  # fmt: skip
    best = "; ".join(f"{a} {v.lr(a)}" for a in ARMS if a in v.best)
    return [
        f"## Clean labels, every lr ({v.cfg.steps} updates)\n",
        runner.markdown_table(header, body),
        "",
        f"Best lr (highest mean final accuracy over the grid {v.cfg.lr:g} x "
        f"{v.cfg.lr_factors}, x {DICE_MEAN} for the lr-matched control, widened by a factor 2 at "
        f"a time, at most {v.cfg.widen} times, past an end where an arm's best lay, on the tuning "
        f"seeds 0-{v.cfg.seeds - 1} that every lr tried has: the tuning seeds' mean): {best}. "
        "Mean ± std over every seed run at that lr; failed = final accuracy within "
        f"{FAILED_MARGIN:g} of the majority class; best = the highest of the run's evaluations.\n",
    ]


def paired_table(v: View) -> list[str]:
    """Each arm against the baseline and its own control, at their best lrs."""
    controls = {"dice before": "baseline, clip 2.7", "dice after": "lr-matched control",
                "dice before, no clip": "baseline, no clip"}  # fmt: skip
    keys = ("accuracy", "best_accuracy", "macro_f1", "perturbed_accuracy", "perturbation_drop")
    body = [
        [arm, ref, *(cell(v.d(arm, ref, k)) for k in keys)]
        for arm in ARMS if arm != "baseline"
        for ref in dict.fromkeys(["baseline", controls.get(arm, "baseline")])
    ]  # fmt: skip
    header = ["arm", "vs", "accuracy", "best accuracy", "macro-F1", "perturbed accuracy",
              "perturbation drop"]  # fmt: skip
    return [
        "## Paired differences at each arm's best lr (95% interval over seeds)\n",
        f'"No difference" only where the whole interval lies within ±{runner.NO_DIFFERENCE};'
        f" no verdict from fewer than {runner.MIN_SEEDS} seeds.\n",
        runner.markdown_table(header, body),
        "",
    ]


def budget_table(v: View) -> list[str]:
    """The budget curve: accuracy at each budget, and the gap to the baseline."""
    budgets = [v.cfg.steps, *v.cfg.budgets]
    body = []
    for arm in BUDGET_ARMS:
        cells = []
        for b in budgets:
            mine = at_best_rows(v.rows, v.best, b)
            acc = [r["accuracy"] for r in mine if r["arm"] == arm]
            gap = (
                "" if arm == "baseline" else f"; {cell(paired(mine, arm, 'baseline', 'accuracy'))}"
            )
            cells.append(f"{mean_std(acc)} (n={len(acc)}){gap}")
        body.append([arm, *cells])
    where = []
    for b in budgets:
        count: dict[str, int] = {}
        for r in at_best_rows(v.rows, v.best, b):
            count[r["platform"]] = count.get(r["platform"], 0) + 1
        mixed = " (mixed: pairs may cross platforms)" if len(count) > 1 else ""
        runs = ", ".join(f"{n} on the {p.upper()}" for p, n in sorted(count.items()))
        where.append(f"{b} updates: {runs or 'none'}{mixed}")
    return [
        "## The budget curve (each arm at its best lr at the tuning budget)\n",
        runner.markdown_table(["arm", *(f"{b} updates" for b in budgets)], body),
        "",
        "Each cell: final accuracy mean ± std (runs); then minus the baseline, paired. Runs: "
        + "; ".join(where)
        + ".\n",
    ]


def noise_table(v: View) -> list[str]:
    """Noisy labels: accuracy, what the noise costs each arm, and the interaction."""
    noise = v.cfg.label_noise
    noisy = at_best_rows(v.rows, v.best, v.cfg.steps, noise)
    body = []
    for arm in ORIGINAL_ARMS:
        mine = [r["accuracy"] for r in noisy if r["arm"] == arm]
        loss = {r["seed"]: r["accuracy"] for r in noisy if r["arm"] == arm}
        clean = {r["seed"]: r["accuracy"] for r in v.at_best if r["arm"] == arm}
        own = [loss[s] - clean[s] for s in loss if s in clean]
        same = arm == "baseline" or not mine
        inter = "" if same else cell(interaction(v.rows, v.best, v.cfg.steps, noise, arm))
        body.append([arm, len(mine), mean_std(mine), mean_std(own), inter])
    header = ["arm", "runs", "accuracy", "noisy - clean (paired by seed)",
              "interaction: its noisy - clean minus the baseline's (> 0: loses less)"]  # fmt: skip
    return [
        f"## {noise:.0%} of the training labels flipped (each arm at its best lr)\n",
        runner.markdown_table(header, body),
        "",
    ]


def stability_table(v: View) -> list[str]:
    """The spread over seeds at the best lr, and the failed runs."""
    body = []
    for arm in ARMS:
        acc = finite(r["accuracy"] for r in v.at_best if r["arm"] == arm)
        n = sum(r["arm"] == arm for r in v.at_best)
        if n:
            failed = sum(bool(r["failed"]) for r in v.at_best if r["arm"] == arm)
            std = f"{acc.std(ddof=1):.3f}" if acc.size > 1 else "-"
            mean = f"{acc.mean():.3f}" if acc.size else "-"
            body.append([arm, n, mean, std, failed])
    return [
        "## Seed stability at the best lr\n",
        runner.markdown_table(["arm", "runs", "accuracy mean", "std", "failed runs"], body),
        "",
    ]


def flatness_tables(v: View) -> list[str]:
    """Weight noise: the mean change per sigma, the flat sigma, the paired differences."""
    rows = [r for r in v.at_best if "weight_noise_clean" in r and not _nan(r["weight_noise_clean"])]
    sigmas = sigmas_in(rows)
    if not sigmas:
        return []
    means, diffs = [], []
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        curve = [mean_std((r.get(f"weight_noise_change_{s:g}") for r in mine), 3) for s in sigmas]
        means.append([arm, len(mine), mean_std(r["weight_noise_clean"] for r in mine), *curve,
                      _sigma_text(flat_sigma(mine, sigmas), "-")])  # fmt: skip
        if arm != "baseline":
            diffs.append([arm, *(cell(paired(rows, arm, "baseline", f"weight_noise_change_{s:g}"))
                                  for s in sigmas)])  # fmt: skip
    cols = [f"sigma {s:g}" for s in sigmas]
    how = sorted({(int(r["weight_noise_draws"]), int(r["weight_noise_examples"])) for r in rows
                  if not _nan(r.get("weight_noise_draws", math.nan))})  # fmt: skip
    measured = "; ".join(f"{d} draws on {n} validation examples" for d, n in how) or "-"
    return [
        "## Weight noise (flatness)\n",
        f"Measured ({measured}) on the clean runs at the best lr of {', '.join(PROBE_ARMS)}, "
        f"seeds below {v.cfg.probe_seeds}. "
        "Every row of every weight matrix moved by sigma x its norm in a random direction "
        "(biases and LayerNorm kept; draw d is the same direction at every sigma and in every "
        "run); the accuracy change from the unperturbed model, mean "
        "over the draws, as a share of the model's headroom above the majority class (-1: "
        "down to the majority), mean ± std over seeds. Flat sigma: the largest sigma of the "
        f"grid up to which the arm's mean curve loses at most {FLAT_LOSS:.0%} of the headroom.\n",
        runner.markdown_table(["arm", "runs", "unperturbed", *cols, "flat sigma"], means),
        "",
        "Paired differences from the baseline in that normalised change (> 0: loses less of its "
        f'headroom; "no difference" within ±{runner.NO_DIFFERENCE:g} of the headroom):\n',
        runner.markdown_table(["arm", *cols], diffs),
        "",
    ]


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def lines_table(v: View) -> list[str]:
    """The line between the baseline and the dice, per seed."""
    lines = v.per_seed_lines()
    if not lines:
        return []
    body = [
        [seed, f"{line['loss'][line['alphas'].index(0.0)]:.4f}",
         f"{line['loss'][line['alphas'].index(1.0)]:.4f}", f"{barrier(line):.4f}"]
        for seed, line in lines.items()
    ]  # fmt: skip
    return [
        "## The line between the baseline and the dice\n",
        "Validation loss along (1 - alpha) baseline + alpha dice before (same seed, best "
        "lrs); barrier = the largest loss above the straight chord between the two ends, "
        "alpha in [0, 1].\n",
        runner.markdown_table(["seed", "loss at 0", "loss at 1", "barrier"], body),
        "",
    ]


def report(v: View, command: str) -> str:
    """study.md: the set-up, the answers, the tables."""
    cfg = v.cfg
    setup = (
        f"Command: `{command}`. Each tuning run: {cfg.steps} updates of {cfg.batch_size} "
        f"tweets, {cfg.max_length} tokens, AdamW (warm-up 10%, linear decay, clip 1 unless the "
        f"arm says), every arm at lr {cfg.lr:g} x {cfg.lr_factors} (the lr-matched control at "
        f"{DICE_MEAN} x those; an arm whose best lr is at the grid's end also a factor 2 past it, "
        f"up to {cfg.widen} times); the budget curve at {cfg.budgets} updates; "
        f"{cfg.max_eval_samples} validation examples, evaluated {cfg.evals} times (the weight "
        "noise and the line: every validation example). Runs of one seed share the head's "
        "initialisation, the data order and the dropout masks' key.\n"
    )
    sections: list[Callable[[View], list[str]]] = [
        headline_table, tuning_table, paired_table, budget_table, noise_table,
        stability_table, flatness_tables, lines_table,
    ]  # fmt: skip
    out = ["# Do the dice do anything a smaller learning rate or a looser clip does not?\n",
           setup, "## Answers\n", *answers(v), "", holm_sentence(v), ""]  # fmt: skip
    for section in sections:
        out += section(v)
    out.append(
        "Per-run rows: runs.csv; per arm: study.csv; the lines: lines.csv. Figures, where "
        "measured: accuracy_vs_lr.png, budget.png, weight_noise.png, interpolation.png, "
        "label_noise.png."
    )
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ the study


def gather(plan: Sequence[Job], committed: Sequence[Row]) -> list[Row]:
    """The committed rows, then those of the planned runs that finished and are not."""
    rows, have = list(committed), {row_key(r) for r in committed}
    for j in plan:
        if j.key not in have and runner.run_status(j.workdir) in runner.FINAL:
            rows.append(row(j))
            have.add(j.key)
    return rows


def _say(text: str) -> None:
    print(f"[study] {text}", flush=True)


def probe_folder(cfg: StudyConfig, extra: Mapping[str, Any], r: Row, phase: str) -> str | None:
    """The folder of a row's run, finished, for a probe: the plan's folder for its key, where
    the run is trained again when its final parameters are not on this machine (a committed
    row); None when it is not finished there and the probe's phase does not run, or when the
    folder holds a run that ended otherwise (diverged: not the row's parameters) or that did
    not end where the row did (trained again with another jax, XLA or CPU: other parameters)."""
    j = job(cfg, extra, r["arm"], r["lr"], int(r["seed"]), int(r["steps"]), r["label_noise"])
    if runner.run_status(j.workdir) != "completed":
        if not cfg.measures(phase):
            return None
        _say(f"{j.workdir}: trained again for its final parameters")
        runner.run_jobs([j], say=_say)
        if (status := runner.run_status(j.workdir)) != "completed":
            _say(f"{j.workdir}: {status}, not completed: left out of the {phase} probe")
            return None
    ran = runner.read_summary(j.workdir)
    got = {k: ran.get(f"eval_{k}") for k in RUN_FINGERPRINT}
    if not all(_same(got[k], r.get(k, math.nan)) for k in RUN_FINGERPRINT):
        want = {k: r.get(k) for k in RUN_FINGERPRINT}
        _say(
            f"{j.workdir}: ended at {got}, the row at {want}: not the row's run (trained "
            f"again with another jax, XLA or CPU?), left out of the {phase} probe"
        )
        return None
    return j.workdir


def _same(got: Any, want: Any) -> bool:
    """A run's final metric agrees with the row's (a row without it, from before the column,
    agrees with anything)."""
    if _nan(want):
        return True
    return isinstance(got, int | float) and abs(got - want) <= 1e-12


def probe_targets(cfg: StudyConfig, rows: Sequence[Row], best: Mapping[str, float]) -> list[Row]:
    """The rows phase 7 measures: the probe arms' completed clean runs at their best lr, seeds
    below --probe-seeds, not measured yet; seed by seed, so that arms stay paired."""
    chosen = runner.select(ARMS, cfg.arms)
    targets = [
        r for r in at_best_rows(rows, best, cfg.steps)
        if r["arm"] in PROBE_ARMS and r["arm"] in chosen and int(r["seed"]) < cfg.probe_seeds
        and r["status"] == "completed" and _nan(r.get("flat_sigma", math.nan))
    ]  # fmt: skip
    return sorted(targets, key=lambda r: (int(r["seed"]), PROBE_ARMS.index(r["arm"])))


def with_flatness(cfg: StudyConfig, extra: Mapping[str, Any], rows: Sequence[Row],
                  best: Mapping[str, float]) -> list[Row]:  # fmt: skip
    """Phase 7: weight noise on :func:`probe_targets` (cached, sigma by sigma, in each run's
    weight_noise.json; none measured with --report-only)."""
    from examples.bert import rundir

    measured: dict[int, Row] = {}
    for r in probe_targets(cfg, rows, best):
        folder = probe_folder(cfg, extra, r, "weight-noise")
        if folder is None:
            continue
        path = os.path.join(folder, "weight_noise.json")
        cached = rundir.read_json(path) if os.path.isfile(path) else {}
        wanted = [cfg.weight_noise_sigmas, cfg.weight_noise_draws]
        if [cached.get("sigmas"), cached.get("draws")] != wanted and cfg.measures("weight-noise"):
            from examples.experiments import flatness

            _say(f"weight noise: {folder}")
            cached = flatness.weight_noise(
                flatness.FinalModel(folder), *wanted, done=cached,
                save=functools.partial(rundir.write_json, path),
            )  # fmt: skip
        if [cached.get("sigmas"), cached.get("draws")] == wanted:
            measured[id(r)] = add_flatness(r, cached)
    return [measured.get(id(r), r) for r in rows]


def _write_json_with(path: str, extra: Mapping[str, Any], part: Mapping[str, Any]) -> None:
    """A probe's cache: ``part`` and ``extra`` in the JSON file ``path``."""
    from examples.bert import rundir

    rundir.write_json(path, {**part, **extra})


def lines_of(cfg: StudyConfig, extra: Mapping[str, Any], rows: Sequence[Row],
             best: Mapping[str, float], committed: Sequence[Row]) -> list[Row]:  # fmt: skip
    """Phase 6: the baseline-dice line of each seed with both (cached, point by point, in
    lines/seed<n>.json under --runs-dir, with its ends' arms and lrs: a cache between other
    runs is measured again)."""
    from examples.bert import rundir

    alphas = sorted({*np.linspace(-0.5, 1.5, cfg.alphas).round(6).tolist(), 0.0, 1.0})
    ends: dict[int, dict[str, Row]] = {}
    chosen = runner.select(ARMS, cfg.arms)
    for r in at_best_rows(rows, best, cfg.steps):
        if (
            r["arm"] in ("baseline", "dice before")
            and r["arm"] in chosen
            and r["status"] == "completed"
        ):
            ends.setdefault(int(r["seed"]), {})[r["arm"]] = r
    out = [p for p in committed]
    have = {int(p["seed"]) for p in committed}
    for seed, pair in sorted(ends.items()):
        if seed in have or len(pair) < 2:
            continue
        folders = [probe_folder(cfg, extra, pair[a], "line") for a in ("baseline", "dice before")]
        if None in folders:
            continue
        path = os.path.join(cfg.runs_dir, "lines", f"seed{seed}.json")
        which = [[pair[a]["arm"], float(pair[a]["lr"])] for a in ("baseline", "dice before")]
        line = rundir.read_json(path) if os.path.isfile(path) else {}
        if line.get("ends") != which:  # between other runs (another best lr): not this line
            line = {}
        if line.get("alphas") != alphas and cfg.measures("line"):
            from examples.experiments import flatness

            _say(f"the line, seed {seed}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            a, b = (flatness.FinalModel(folder) for folder in folders)
            save = functools.partial(_write_json_with, path, {"ends": which})
            line = flatness.line(a, b, alphas, done=line, save=save)
        if line.get("alphas") == alphas:
            for alpha, loss, acc in zip(*(line[k] for k in ("alphas", "loss", "accuracy")),
                                        strict=True):  # fmt: skip
                out.append({"seed": seed, "alpha": alpha, "loss": loss, "accuracy": acc})
    return out


def committed(cfg: StudyConfig) -> tuple[list[Row], list[Row]]:
    """The committed rows (typed, completed) and lines."""
    path = cfg.committed_rows()
    if not path:
        return [], []
    lines = runner.read_csv(os.path.join(os.path.dirname(path), "lines.csv"))
    return [complete(r) for r in runner.read_csv(path)], lines


def study(cfg: StudyConfig, extra: Mapping[str, Any]) -> View:
    """Runs (or, with --report-only, reads) every phase; returns what the report needs."""
    rows0, lines0 = committed(cfg)
    done = {row_key(r) for r in rows0}

    def run(jobs: list[Job]) -> None:
        jobs = [j for j in jobs if cfg.measures(phase_of(cfg, j))]
        runner.run_jobs(jobs, at_once=cfg.jobs, skip=lambda j: j.key in done, say=_say)

    plan = tuning_jobs(cfg, extra)
    run(plan)
    while True:  # past the grid's end, a factor 2 at a time (each job planned once: it ends)
        have = {j.key for j in plan}
        wider = [j for j in widen_jobs(cfg, extra, gather(plan, rows0)) if j.key not in have]
        if not wider:
            break
        plan += wider
        run(wider)
    later = later_jobs(cfg, extra, gather(plan, rows0))
    run(later)
    rows = gather(plan + later, rows0)
    best = best_lrs(cfg, rows)
    lines = lines_of(cfg, extra, rows, best, lines0)
    return View(cfg, with_flatness(cfg, extra, rows, best), lines, best)


def quote_in_readme(readme: str, report_text: str) -> None:
    """Rewrites the answers and the Holm sentence that ``readme``'s Results section quotes."""
    quoted = {
        line[:3]: line
        for line in report_text.splitlines()
        if re.match(r"\d\. \*\*", line) or line.startswith("Multiple comparisons:")
    }
    with open(readme) as f:
        lines = f.read().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("## Results"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    for i in range(start, end):
        head = lines[i][:3]
        if head in quoted and (head == "Mul" or re.match(r"\d\. \*\*", lines[i])):
            lines[i] = quoted[head]
    with open(readme, "w") as f:
        f.write("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Runs (or resumes) the study and writes its report; returns the per-run rows."""
    from examples.experiments import figures

    cfg, extra = parse_args(argv)
    try:
        v = study(cfg, extra)
    except KeyboardInterrupt as err:
        runner.interrupted_exit(err)
    if not v.rows:
        raise SystemExit(f"no finished run in {cfg.runs_dir} nor {cfg.committed_rows() or '-'}")
    out = runner.results_dir(cfg.results_dir, cfg.runs_dir)
    os.makedirs(out, exist_ok=True)
    runner.write_csv(os.path.join(out, "runs.csv"), v.rows)
    runner.write_csv(os.path.join(out, "lines.csv"), v.lines)
    runner.write_csv(os.path.join(out, "study.csv"), aggregate(v.rows))
    figures.plot_study(v, out)
    command = " ".join([PROG, *(sys.argv[1:] if argv is None else argv)])
    text = report(v, command)
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(text)
    if cfg.readme:
        quote_in_readme(cfg.readme, text)
    print(text)
    return v.rows


if __name__ == "__main__":
    main()
