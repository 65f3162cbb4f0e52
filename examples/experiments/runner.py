"""The experiment runner that sweep.py, study.py and gpu_study.py share.

An *arm* is a named set of TrainConfig overrides; a :class:`Job` is one run of an arm (its
seed, folder and settings). :func:`run_jobs` trains the jobs not finished yet, here or ``jobs``
at a time in subprocesses: an unfinished run resumes from its checkpoint, a finished run made
with other settings is refused, Ctrl-C or SIGTERM stops the driver and its runs, each saving
a checkpoint (:class:`Interrupted`). Also shared: the command line (:func:`parse`), the
aggregate, the paired statistics, CSV and Markdown tables, and restoring a finished run's
model. Importing this module imports no JAX.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NoReturn

import numpy as np

from examples.bert import flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
Status = Literal["missing", "unfinished", "completed", "diverged"]
FINAL = ("completed", "diverged")
#: TrainConfig fields that change how a run goes, not what it computes.
HOW_FIELDS = ("output_dir", "resume", "no_progress", "stop_after", "log_every")
INTERRUPTED_EXIT = 130  # a child run stopped by Ctrl-C / SIGTERM, resumable


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a run; it resumes from its checkpoint on the next call."""


# ------------------------------------------------------------------------- the command line


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no abbreviated flags (``--seed`` is not ``--seeds``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse(
    cls: type, argv: Sequence[str] | None, prog: str, description: str
) -> tuple[Any, dict[str, Any]]:
    """A driver's settings (fields of ``cls``) and training flags for every run; a bad flag or
    value, or a ``cls.problems()``, ends in one line under ``prog``.

    Returns:
      ``(settings, train_overrides)``.
    """
    from examples.bert.train_config import TrainConfig

    epilog = "Any other flag is a training flag (python examples/bert/train.py --help), given "
    parser = Parser(prog=prog, description=description, epilog=epilog + "to every run.")
    flags.add_dataclass(parser, cls)
    known, rest = parser.parse_known_args(argv)
    train_parser = Parser(prog=prog, add_help=False)
    flags.add_dataclass(train_parser, TrainConfig, defaults=False)
    overrides = vars(train_parser.parse_args(rest))
    settings = cls(**vars(known))
    problems = [*getattr(settings, "problems", list)(), *train_problems(overrides)]
    if problems:
        parser.error("; ".join(problems))
    return settings, overrides


def train_problems(overrides: Mapping[str, Any]) -> list[str]:
    """What TrainConfig says about training flags given for every run (empty: fine)."""
    from examples.bert.train_config import TrainConfig

    try:
        TrainConfig(**overrides)
    except (TypeError, ValueError) as err:
        return [str(err)]
    return []


def check_jobs(jobs: Sequence[Job], prog: str) -> None:
    """Builds every job's TrainConfig before anything runs; the first problem ends ``prog``."""
    for job in jobs:
        problems = train_problems(job.settings)
        if problems:
            Parser(prog=prog).error(f"{job.arm}, seed {job.seed}: {problems[0]}")


# ------------------------------------------------------------------------- arms and jobs


def slug(name: str) -> str:
    """A folder (and ``--arms``) name for an arm: ``"DC 12, +2"`` -> ``"dc-12-2"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def arms_problems(names: Iterable[str], chosen: Sequence[str] | None) -> list[str]:
    """``--arms``'s problem (one line), or none: a driver's ``problems()`` starts from it."""
    try:
        select(names, chosen)
    except ValueError as err:
        return [f"--arms: {err}"]
    return []


def select(names: Iterable[str], chosen: Sequence[str] | None) -> list[str]:
    """The arms whose slug is in ``chosen`` (all if empty); ValueError names unknown ones."""
    names = list(names)
    if not chosen:
        return names
    by_slug = {slug(n): n for n in names}
    unknown = [c for c in chosen if c not in by_slug]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}: choose from {list(by_slug)}")
    return [n for n in names if slug(n) in chosen]


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: ``settings`` its TrainConfig fields, ``key`` its identity among the rows."""

    arm: str
    seed: int
    workdir: str
    settings: Mapping[str, Any]
    key: tuple[Any, ...] = ()

    def command(self) -> str:
        """The training script's command line for this run."""
        return "python examples/bert/train.py " + " ".join(to_argv(self.settings, self.workdir))


def to_argv(settings: Mapping[str, Any], workdir: str) -> list[str]:
    """The training script's flags for the settings that differ from the defaults."""
    from examples.bert.train_config import to_argv as train_argv

    given = {k: v for k, v in settings.items() if k not in ("output_dir", "resume")}
    return [*train_argv(given), "--output-dir", workdir]


# ------------------------------------------------------ what the run folder says (train.py)


def run_status(workdir: str) -> Status:
    """How far the run in ``workdir`` got, as the run folder says."""
    from examples.bert import rundir

    return rundir.run_status(workdir)


def read_summary(workdir: str) -> dict[str, Any]:
    """The finished run's summary, as a dict of its fields (:class:`records.Summary`)."""
    from examples.bert import records

    summary = records.read_summary(workdir)
    return {} if summary is None else dataclasses.asdict(summary)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The run's metrics records, as dicts of their fields (``kind`` among them)."""
    from examples.bert import records

    return [dataclasses.asdict(r) for r in records.read_metrics(workdir)]


def train_here(settings: Mapping[str, Any], workdir: str) -> None:
    """Trains (or resumes) one run here; :class:`Interrupted` when Ctrl-C stopped it."""
    from examples.bert import train
    from examples.bert.train_config import TrainConfig

    config = TrainConfig(**{**settings, "output_dir": workdir})
    try:
        summary = train.train_and_evaluate(config, workdir)
    except train.RunInterrupted as err:
        raise Interrupted(workdir) from err
    if summary.status not in FINAL:  # stopped (--stop-after): resumes on the next call
        raise Interrupted(workdir)


def load_model(workdir: str) -> tuple[Any, Any]:
    """A finished run's model and TrainConfig, from its checkpoint (no data, no optimizer)."""
    from examples.bert import restore

    return restore.load_final_model(workdir)


# ------------------------------------------------------------------------------ the loop


def differences(job: Job) -> list[str]:
    """The settings in which the run already in ``job.workdir`` differs from the job's."""
    from examples.bert import records
    from examples.bert.train_config import TrainConfig

    path = os.path.join(job.workdir, records.CONFIG_FILE)
    saved = dict(records.read_json(path)["args"]) if os.path.isfile(path) else {}
    wanted = dataclasses.asdict(TrainConfig(**{**job.settings, "output_dir": job.workdir}))
    return [
        f"{k} {saved[k]!r} (not {v!r})"
        for k, v in wanted.items()
        if k not in HOW_FIELDS and k in saved and saved[k] != v and not callable(v)
    ]


def pending(jobs: Sequence[Job], *, skip: Callable[[Job], bool] = lambda job: False) -> list[Job]:
    """The jobs neither skipped nor finished; SystemExit for a folder with other settings."""
    todo = []
    for job in jobs:
        if skip(job):
            continue
        status = run_status(job.workdir)
        if status != "missing" and (changed := differences(job)):
            raise SystemExit(
                f"{job.workdir} was made with other settings: {', '.join(changed)}. Give the "
                "settings it was made with, or another --runs-dir."
            )
        if status not in FINAL:
            todo.append(job)
    return todo


@dataclasses.dataclass(frozen=True)
class Limits:
    """No run starts after ``deadline``; a subprocess run stops (with a checkpoint) after
    ``timeout`` s or at ``stop_by`` (monotonic times), and is killed if it has not exited
    ``grace`` s after being told to stop; ``keep_going`` goes on past failures."""

    deadline: float | None = None
    timeout: float | None = None
    keep_going: bool = False
    stop_by: float | None = None  # a time.monotonic() value: every run stops by then
    grace: float = 120.0  # s from SIGINT to SIGKILL: a save, not a whole evaluation

    def seconds_left(self) -> float | None:
        """How long a run started now may go on (None: no limit)."""
        left = [t for t in (self.timeout,) if t is not None]
        if self.stop_by is not None:
            left.append(max(0.0, self.stop_by - time.monotonic()))
        return min(left) if left else None


def run_jobs(
    jobs: Sequence[Job],
    *,
    at_once: int = 1,
    skip: Callable[[Job], bool] = lambda job: False,
    say: Callable[[str], None] = print,
    limits: Limits = Limits(),
) -> dict[str, str]:
    """Trains the :func:`pending` jobs here, or ``at_once`` at a time in subprocesses.

    Returns:
      Each trained job's workdir -> ``"done"``, ``"failed"``, ``"stopped at its time
      limit"``, ``"killed at its time limit"`` (it did not stop within ``limits.grace``; it
      resumes from its last periodic checkpoint) or ``"not started (deadline)"``.

    Raises:
      Interrupted: Ctrl-C, or SIGTERM, stopped the runs (each resumes on the next call;
        one that does not exit ``limits.grace`` s after its SIGINT is killed, and resumes from
        its last periodic checkpoint); nothing else is started.
      SystemExit: a run failed (unless ``limits.keep_going``), or a finished run was made
        with other settings.
    """
    todo = pending(jobs, skip=skip)
    if len(todo) < len(jobs):
        say(f"{len(jobs) - len(todo)} of {len(jobs)} run(s) finished already: read, not run again")
    for i, job in enumerate(todo, 1):
        how = "resumes" if run_status(job.workdir) == "unfinished" else "starts"
        say(f"[{i}/{len(todo)}] {job.arm}, seed {job.seed} {how}: {job.command()}")
    if at_once > 1 and todo:
        outcomes = _run_in_subprocesses(todo, at_once, say, limits)
    else:
        outcomes = {job.workdir: _run_here(job, limits) for job in todo}
    failed = [w + ".log" if at_once > 1 else w for w, o in outcomes.items() if o == "failed"]
    if failed and not limits.keep_going:
        raise SystemExit(f"{len(failed)} run(s) failed; see their logs: {', '.join(failed)}")
    return outcomes


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _run_here(job: Job, limits: Limits) -> str:
    if _past(limits.deadline):
        return "not started (deadline)"
    try:
        train_here(job.settings, job.workdir)
    except ValueError as err:  # bad settings, or train.UsageError
        if not limits.keep_going:
            raise SystemExit(f"{job.workdir}: {err}") from err
        print(f"{job.workdir}: {err}", file=sys.stderr)
        return "failed"
    return "done"


def child_argv(job: Job) -> list[str]:
    """The command that runs one job in a subprocess (:func:`main`)."""
    return [sys.executable, "-m", "examples.experiments.runner", job.workdir,
            json.dumps(dict(job.settings))]  # fmt: skip


def _run_in_subprocesses(
    todo: Sequence[Job], at_once: int, say: Callable[[str], None], limits: Limits
) -> dict[str, str]:
    """Each job in ``python -m examples.experiments.runner``, ``at_once`` at a time.

    Ctrl-C, and SIGTERM too (where this is the main thread), stop the driver: each run still
    going gets SIGINT from here (a terminal's Ctrl-C reached it too; the kernel merges the two
    while the first is pending) and SIGKILL if it has not exited ``limits.grace`` s later."""
    procs: dict[str, subprocess.Popen] = {}
    starting = threading.Lock()  # held while a run starts; stopping: none starts after
    stopping = threading.Event()
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several runs share a GPU
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)

    def one(job: Job) -> str:
        if _past(limits.deadline):
            return "not started (deadline)"
        os.makedirs(os.path.dirname(job.workdir) or ".", exist_ok=True)
        with open(job.workdir + ".log", "a") as log:
            with starting:
                if stopping.is_set():
                    return "not started (interrupted)"
                procs[job.workdir] = proc = subprocess.Popen(
                    child_argv(job), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
                )
            try:
                rc = proc.wait(timeout=limits.seconds_left())
            except subprocess.TimeoutExpired:
                outcome = _stop([proc], limits.grace)[0]
            else:
                outcome = {0: "done", INTERRUPTED_EXIT: "interrupted"}.get(rc, "failed")
        say(f"{job.arm}, seed {job.seed}: {outcome} (exit {proc.returncode})")
        return outcome

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=at_once)
    with _sigterm_as_ctrl_c():
        futures = {job.workdir: pool.submit(one, job) for job in todo}
        try:
            outcomes = {w: f.result() for w, f in futures.items()}
        except KeyboardInterrupt:
            with starting:
                stopping.set()
            for f in futures.values():
                f.cancel()
            _stop([p for p in procs.values() if p.poll() is None], limits.grace)
            pool.shutdown(wait=True)
            raise Interrupted("the runs in progress") from None
    pool.shutdown()
    stopped = [w for w, o in outcomes.items() if o == "interrupted"]
    if stopped:
        raise Interrupted(", ".join(stopped))
    return outcomes


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here (signal handlers live in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(procs: Sequence[subprocess.Popen], grace: float) -> list[str]:
    """Stops runs: SIGINT to each (it saves a checkpoint, then exits), SIGKILL to those still
    there ``grace`` s later (at once on a second Ctrl-C). Returns each one's outcome."""
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    end = time.monotonic() + grace
    outcomes = []
    try:
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                outcomes.append("killed at its time limit")
            else:
                outcomes.append("stopped at its time limit")
    except KeyboardInterrupt:
        for proc in procs:
            proc.kill()
        raise
    return outcomes


def interrupted_exit(err: KeyboardInterrupt) -> NoReturn:
    """On Ctrl-C: one line on stderr, exit status 130."""
    where = f" ({err})" if str(err) else ""
    print(f"Interrupted{where}: run the same command again to resume from the last checkpoint.",
          file=sys.stderr, flush=True)  # fmt: skip
    raise SystemExit(INTERRUPTED_EXIT) from None


# ------------------------------------------------------------------------------ statistics

NO_DIFFERENCE = 0.01  # |difference| bound, in accuracy, under which "no difference"
MIN_SEEDS = 3  # paired seeds a verdict needs


def finite(values: Iterable[Any]) -> np.ndarray:
    """The finite numbers among ``values`` (None, NaN, text and infinities dropped)."""
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append(x)
    return np.array(out, np.float64)


def aggregate(
    rows: Sequence[Mapping[str, Any]],
    by: Sequence[str],
    keys: Sequence[str],
    same: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Per group of ``by``: ``runs``, ``<key>_mean``/``_std`` (ddof=1, finite values, NaN when
    none) of each of ``keys``, and the ``same`` fields of the group's first row."""
    table = []
    for group in dict.fromkeys(tuple(r.get(b) for b in by) for r in rows):
        mine = [r for r in rows if tuple(r.get(b) for b in by) == group]
        entry: dict[str, Any] = {**dict(zip(by, group, strict=True)), "runs": len(mine)}
        entry |= {k: mine[0].get(k) for k in same}
        for key in keys:
            v = finite(r.get(key) for r in mine)
            entry[f"{key}_mean"] = float(v.mean()) if v.size else math.nan
            entry[f"{key}_std"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
        table.append(entry)
    return table


def paired(
    rows: Sequence[Mapping[str, Any]],
    arm: str,
    ref: str,
    key: str,
    ref_rows: Sequence | None = None,
) -> dict[str, Any] | None:
    """:func:`difference` of ``arm - ref`` in ``key``, seed by seed (``ref`` in ``ref_rows``),
    with ``left_out``: the seeds both have where a run has no final ``accuracy`` (it diverged
    or failed). A seed whose runs lack only ``key`` (a probe not made on that seed yet) is not
    paired and not counted. None when no seed has both values."""
    from scipy import stats

    mine = {r["seed"]: r for r in rows if r["arm"] == arm}
    theirs = {r["seed"]: r for r in (rows if ref_rows is None else ref_rows)
              if r["arm"] == ref}  # fmt: skip
    diffs, left_out = [], 0
    for s in sorted(set(mine) & set(theirs), key=str):
        pair = finite([mine[s].get(key), theirs[s].get(key)])
        if pair.size == 2:
            diffs.append(pair[0] - pair[1])
        elif finite([mine[s].get("accuracy"), theirs[s].get("accuracy")]).size < 2:
            left_out += 1
    d = difference(np.array(diffs, np.float64), stats)
    return d if d is None else {**d, "left_out": left_out}


def difference(diffs: np.ndarray, stats: Any = None) -> dict[str, Any] | None:
    """Mean, 95% interval, p-value and verdict of per-seed differences (None when empty)."""
    if stats is None:
        from scipy import stats
    if diffs.size == 0:
        return None
    mean = float(diffs.mean())
    lo = hi = p = sd = math.nan
    if diffs.size > 1:
        sd = float(diffs.std(ddof=1))
        half = stats.t.ppf(0.975, diffs.size - 1) * sd / math.sqrt(diffs.size)
        lo, hi = mean - half, mean + half
        t = mean / (sd / math.sqrt(diffs.size)) if sd > 0 else math.copysign(math.inf, mean)
        p = float(2 * stats.t.sf(abs(t), diffs.size - 1)) if mean or sd else 1.0
    n = int(diffs.size)
    return {"n": n, "mean": mean, "lo": lo, "hi": hi, "sd": sd, "p": p,
            "verdict": verdict(lo, hi, n)}  # fmt: skip


def verdict(lo: float, hi: float, n: int) -> str:
    """The verdict of a 95% interval: "helps", "hurts", "no difference" (within
    +-NO_DIFFERENCE) or "not resolved at n seeds" (always under MIN_SEEDS)."""
    if n < MIN_SEEDS or math.isnan(lo):
        return f"not resolved at {n} seed(s)"
    if lo > 0:
        return "helps"
    if hi < 0:
        return "hurts"
    if -NO_DIFFERENCE <= lo and hi <= NO_DIFFERENCE:
        return "no difference"
    return f"not resolved at {n} seeds"


def holm(pvalues: Mapping[str, float], alpha: float = 0.05) -> dict[str, tuple[float, bool]]:
    """Holm's step-down adjustment: name -> (adjusted p, rejected); NaN p: (NaN, False).

    Example:
      >>> holm({"a": 0.01, "b": 0.04, "c": 0.03})
      {'a': (0.03, True), 'b': (0.06, False), 'c': (0.06, False)}
    """
    ok = sorted((p, name) for name, p in pvalues.items() if not math.isnan(p))
    out: dict[str, tuple[float, bool]] = {n: (math.nan, False) for n in pvalues}
    running, rejecting = 0.0, True
    for i, (p, name) in enumerate(ok):
        running = max(running, min(1.0, (len(ok) - i) * p))
        rejecting = rejecting and running <= alpha
        out[name] = (round(running, 12), rejecting)
    return {n: out[n] for n in pvalues}


def seeds_needed(sd: float, delta: float = 0.02, power: float = 0.8, most: int = 50) -> int:
    """Paired seeds a t-test at 5% needs to detect ``delta`` with ``power`` at per-seed SD
    ``sd`` (noncentral t; between MIN_SEEDS and ``most``).

    Example:
      >>> seeds_needed(0.01), seeds_needed(0.02), seeds_needed(0.04)
      (5, 10, 34)
    """
    from scipy import stats

    if not sd > 0:
        return MIN_SEEDS
    for n in range(MIN_SEEDS, most + 1):
        df, shift = n - 1, delta / (sd / math.sqrt(n))
        crit = stats.t.ppf(0.975, df)
        if stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift) >= power:
            return n
    return most


# --------------------------------------------------------------------------- files, tables


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes dict rows under the union of their keys; a missing or None value is written
    ``nan``, as :func:`read_csv` reads it back, so that rewriting read rows changes nothing."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="nan")
        writer.writeheader()
        writer.writerows({k: "nan" if v is None else v for k, v in r.items()} for r in rows)


def _value(text: str) -> Any:
    if text == "":
        return math.nan
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if re.fullmatch(r"-?\d+", text) else number


def read_csv(path: str) -> list[dict[str, Any]]:
    """:func:`write_csv`'s rows, typed back (empty: NaN); no rows for an absent file."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def mean_std(values: Iterable[Any], digits: int = 3) -> str:
    """``0.748 ± 0.004`` over the finite values (``-`` when none; no ± for one)."""
    v = finite(values)
    if not v.size:
        return "-"
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else "")


def said(d: Mapping[str, Any] | None, table: bool = False) -> str:
    """A paired difference in words (``-0.107 [-0.150, -0.060] over 5 paired seed(s):
    **hurts**``), or with ``table`` in a cell (``... (n=5): hurts``)."""
    if d is None:
        return "-" if table else "not measured yet"
    if table:
        return f"{brief(d)}: {d['verdict']}"
    ci = "" if math.isnan(d["lo"]) else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    out = d.get("left_out", 0)
    more = f" ({out} more left out: a run without a final value, diverged)" if out else ""
    return f"{d['mean']:+.3f}{ci} over {d['n']} paired seed(s){more}: **{d['verdict']}**"


def brief(d: Mapping[str, Any] | None) -> str:
    """A paired difference without its verdict: ``-0.084 [-0.103, -0.066] (n=10)``."""
    if d is None:
        return "not measured"
    ci = "" if math.isnan(d["lo"]) else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    more = f", {d['left_out']} left out" if d.get("left_out") else ""
    return f"{d['mean']:+.3f}{ci} (n={d['n']}{more})"


def cell(d: Mapping[str, Any] | None) -> str:
    """A paired difference in a table cell: ``-0.089 [-0.134, -0.045] (n=5): hurts``."""
    return said(d, table=True)


def results_dir(given: str | None, runs_dir: str) -> str:
    """``given`` (``--results-dir``), else ``<runs-dir>/results``."""
    return given if given else os.path.join(runs_dir, "results")


# -------------------------------------------------------------------- a run in a subprocess


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m examples.experiments.runner WORKDIR SETTINGS_JSON``: one run, as
    :func:`run_jobs` starts it in a subprocess (exit 130 when interrupted)."""
    workdir, settings = argv if argv is not None else sys.argv[1:]
    # SIGINT is how run_jobs stops a run at its time limit. A driver started in the background
    # of a script ignores SIGINT, and its runs would inherit that: set both, whatever came in.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        train_here(json.loads(settings), workdir)
    except KeyboardInterrupt:
        print(f"Interrupted: {workdir} resumes from its checkpoint on the next call.")
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
