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
nothing; ``--quick`` is a smoke test of seconds. Any training flag goes to every run. This
module runs the phases; what they run and how rows are read is in
:mod:`examples.experiments.study_design`, the answers and the tables in
:mod:`examples.experiments.study_report`. Importing it starts no JAX.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from examples.experiments import runner
from examples.experiments.runner import Job
from examples.experiments.study_design import (
    ARMS,
    PROBE_ARMS,
    Row,
    StudyConfig,
    add_flatness,
    at_best_rows,
    best_lrs,
    complete,
    is_nan,
    job,
    later_jobs,
    phase_of,
    row,
    row_key,
    tuning_jobs,
    widen_jobs,
)
from examples.experiments.study_report import View, aggregate, quote_in_readme, report

PROG = "python examples/experiments/study.py"
#: What says a folder holds a row's run: its final metrics (bit-exact where it was trained).
RUN_FINGERPRINT = ("accuracy", "macro_f1")


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


def probe_folder(
    cfg: StudyConfig, extra: Mapping[str, Any], r: Row, phase: str, *, retrained_ok: bool = False
) -> str | None:
    """The folder of a row's run, finished, for a probe: the plan's folder for its key, where
    the run is trained again when its final parameters are not on this machine (a committed
    row); None when it is not finished there and the probe's phase does not run, or when the
    folder holds a run that ended otherwise (diverged: not the row's parameters). A completed
    run that did not end where the row did (trained again with another jax, XLA or CPU: the
    same settings and seed, other rounding) is the folder only with ``retrained_ok``: the
    weight-noise probe measures it and its row says what it ended at (a per-run measurement
    whose own clean accuracy it takes); the line, between two rows' runs, leaves it out."""
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
        then = "measured by" if retrained_ok else "left out of"
        _say(
            f"{j.workdir}: ended at {got}, the row at {want}: not the row's run (trained "
            f"again with another jax, XLA or CPU?), {then} the {phase} probe"
        )
        return j.workdir if retrained_ok else None
    return j.workdir


def _same(got: Any, want: Any) -> bool:
    """A run's final metric agrees with the row's (a row without it, from before the column,
    agrees with anything)."""
    if is_nan(want):
        return True
    return isinstance(got, int | float) and abs(got - want) <= 1e-12


def probe_targets(cfg: StudyConfig, rows: Sequence[Row], best: Mapping[str, float]) -> list[Row]:
    """The rows phase 7 measures: the probe arms' completed clean runs at their best lr, seeds
    below --probe-seeds, not measured yet; seed by seed, so that arms stay paired."""
    chosen = runner.select(ARMS, cfg.arms)
    targets = [
        r for r in at_best_rows(rows, best, cfg.steps)
        if r["arm"] in PROBE_ARMS and r["arm"] in chosen and int(r["seed"]) < cfg.probe_seeds
        and r["status"] == "completed" and is_nan(r.get("flat_sigma", math.nan))
    ]  # fmt: skip
    return sorted(targets, key=lambda r: (int(r["seed"]), PROBE_ARMS.index(r["arm"])))


def with_flatness(cfg: StudyConfig, extra: Mapping[str, Any], rows: Sequence[Row],
                  best: Mapping[str, float]) -> list[Row]:  # fmt: skip
    """Phase 7: weight noise on :func:`probe_targets` (cached, sigma by sigma, in each run's
    weight_noise.json; none measured with --report-only)."""
    from examples.bert import rundir

    measured: dict[int, Row] = {}
    for r in probe_targets(cfg, rows, best):
        folder = probe_folder(cfg, extra, r, "weight-noise", retrained_ok=True)
        if folder is None:
            continue
        ended = runner.read_summary(folder).get("eval_accuracy", math.nan)
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
            measured[id(r)] = add_flatness({**r, "weight_noise_run_accuracy": ended}, cached)
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
