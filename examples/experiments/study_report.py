"""The study's report: the answers, each one sentence from its paired interval, the tables of
study.md, and the answers quoted in README. Importing this module starts no JAX."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from examples.experiments import runner
from examples.experiments.runner import cell, finite, mean_std, paired, said
from examples.experiments.study_design import (
    ARMS,
    BARRIER,
    BUDGET_ARMS,
    CLIP_MATCHED,
    DICE_MEAN,
    FAILED_MARGIN,
    FLAT_LOSS,
    HEADLINE,
    ORIGINAL_ARMS,
    PROBE_ARMS,
    Row,
    StudyConfig,
    at_best_rows,
    barrier,
    flat_sigma,
    interaction,
    is_nan,
    lr_of,
    sigmas_in,
    tuned,
    tuning_means,
)

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
    """The barriers of every seed in words: how high (the mean's t-interval cut at 0, below
    which no barrier lies), and whether there is one."""
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
    ci = "" if math.isnan(b["lo"]) else f" [{max(b['lo'], 0.0):.3f}, {b['hi']:.3f}]"
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


#: What Holm's family leaves out, said wherever the family is.
EXPLORATORY = (
    "Answers 8 and 9 (weight noise, the barrier) are exploratory: outside the family, their "
    "intervals unadjusted."
)


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
        + f" {EXPLORATORY}"
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
        f"contrast, not adjusted. {EXPLORATORY} Seeds per question: a paired t-test at 5% "
        "needs the power column's seeds to detect 2 points with 80% power at the observed "
        f"paired SD; the plan runs that many for answers 1-5 and 7, at least {v.cfg.min_seeds}, "
        f"at most {v.cfg.max_seeds} (estimated again at each start of the driver), and "
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
    rows = [
        r for r in v.at_best if "weight_noise_clean" in r and not is_nan(r["weight_noise_clean"])
    ]
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
    arms = [m[0] for m in means]
    contrasts = [(a, "baseline") for a in arms if a != "baseline" and "baseline" in arms]
    if {"dice before", "baseline, clip 2.7"} <= set(arms):  # answer 8's second contrast
        contrasts.append(("dice before", "baseline, clip 2.7"))
    for a, b in contrasts:
        diffs.append([f"{a} - {b}", *(cell(paired(rows, a, b, f"weight_noise_change_{s:g}"))
                                      for s in sigmas)])  # fmt: skip
    cols = [f"sigma {s:g}" for s in sigmas]
    how = sorted({(int(r["weight_noise_draws"]), int(r["weight_noise_examples"])) for r in rows
                  if not is_nan(r.get("weight_noise_draws", math.nan))})  # fmt: skip
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
        *retrained_runs(rows),
        runner.markdown_table(["arm", "runs", "unperturbed", *cols, "flat sigma"], means),
        "",
        *(["Paired differences in that normalised change (> 0: the first loses less of its "
           f'headroom; "no difference" within ±{runner.NO_DIFFERENCE:g} of the headroom):\n',
           runner.markdown_table(["contrast", *cols], diffs), ""] if diffs else []),
    ]  # fmt: skip


def retrained_runs(rows: Sequence[Row]) -> list[str]:
    """A sentence naming the probed runs that are not the rows' own: trained again here for
    their final parameters (those rows were trained on another machine), they ended elsewhere."""
    other = [r for r in rows
             if not is_nan(r.get("weight_noise_run_accuracy", math.nan))
             and r["weight_noise_run_accuracy"] != r["accuracy"]]  # fmt: skip
    if not other:
        return []
    named = "; ".join(
        f"{r['arm']} seed {int(r['seed'])} (final evaluation: the row's run "
        f"{r['accuracy']:.3f}, the run probed {r['weight_noise_run_accuracy']:.3f})"
        for r in sorted(other, key=lambda r: (int(r["seed"]), r["arm"]))
    )
    return [
        f"Probed in a run trained again on the probe's machine (same settings and seed; the "
        f"row's run, trained on another CPU, ended elsewhere by rounding): {named}. Its "
        "changes are measured from its own unperturbed accuracy (the table's, on every "
        "validation example).\n"
    ]


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
