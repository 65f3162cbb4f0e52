"""How the runner stops its runs: at their time limit, on Ctrl-C and on SIGTERM, each run
told once and killed if it does not stop within its grace."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from examples.experiments import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def signals_restored():
    """SIGINT's and SIGTERM's handlers are as they were after the test."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])


def test_every_run_stops_by_its_time(tmp_path, monkeypatch, signals_restored):
    # Runs still going at --stop-by get SIGINT (a checkpoint, then exit) and count as
    # stopped, not failed; the driver goes on to its tables. A handler here, whatever the
    # suite's order left: the children start with SIGINT's default action.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(runner, "child_argv", lambda job: sleeper)
    monkeypatch.setattr(runner, "pending", lambda jobs, skip: list(jobs))
    monkeypatch.setattr(runner, "run_status", lambda workdir: "missing")
    jobs = [runner.Job("sleeper", s, str(tmp_path / f"s{s}"), {}) for s in range(2)]
    start = time.monotonic()
    limits = runner.Limits(stop_by=start + 2.0, keep_going=True)

    outcomes = runner.run_jobs(jobs, at_once=2, limits=limits, say=lambda s: None)

    assert list(outcomes.values()) == ["stopped at its time limit"] * 2
    assert time.monotonic() - start < 30
    assert runner.Limits(timeout=5.0, stop_by=time.monotonic() + 100).seconds_left() == 5.0


def test_a_run_that_does_not_stop_is_killed_after_its_grace(tmp_path, monkeypatch):
    # SIGINT at its time limit (5 s: the child ignores SIGINT long before), SIGKILL 0.5 s later.
    deaf = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
            "signal.SIG_IGN); time.sleep(60)"]  # fmt: skip
    monkeypatch.setattr(runner, "child_argv", lambda job: deaf)
    monkeypatch.setattr(runner, "pending", lambda jobs, skip: list(jobs))
    jobs = [runner.Job("deaf", 0, str(tmp_path / "s0"), {})]
    said = []
    start = time.monotonic()

    outcomes = runner.run_jobs(
        jobs, at_once=2, limits=runner.Limits(timeout=5.0, grace=0.5), say=said.append
    )

    assert outcomes == {str(tmp_path / "s0"): "killed at its time limit"}
    assert said[-1] == f"deaf, seed 0: killed at its time limit (exit {-signal.SIGKILL})"
    assert 5.5 <= time.monotonic() - start < 30


def test_a_run_process_stops_on_sigint_even_if_it_was_started_ignoring_it(
    monkeypatch, signals_restored
):
    # A driver started in the background of a script ignores SIGINT, and its runs inherit
    # that: each run's process listens to SIGINT (and SIGTERM) all the same.
    def train_here(settings, workdir):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)

    monkeypatch.setattr(runner, "train_here", train_here)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    assert runner.main(["some/run", "{}"]) == runner.INTERRUPTED_EXIT


# A driver of two runs in a process group of its own, with SIGINT's default handler, as a
# terminal's foreground job is (a suite started in the background of a script passes SIG_IGN
# down). Each run writes <run>.ready, appends "x" to <run>.sigint per SIGINT, then takes a
# second (a save) and exits 130; a deaf run ignores SIGINT.
DRIVER = textwrap.dedent("""
    import signal, sys
    from examples.experiments import runner

    signal.signal(signal.SIGINT, signal.default_int_handler)

    child, grace, folder = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    runner.child_argv = lambda job: [sys.executable, "-c", child, job.workdir]
    runner.pending = lambda jobs, skip: list(jobs)
    jobs = [runner.Job("run", s, f"{folder}/s{s}", {}) for s in range(2)]
    try:
        runner.run_jobs(jobs, at_once=2, limits=runner.Limits(grace=grace), say=print)
    except KeyboardInterrupt as err:
        runner.interrupted_exit(err)
""")
COUNTING = textwrap.dedent("""
    import os, signal, sys, time
    out = sys.argv[1]
    def count(signum, frame):
        with open(out + ".sigint", "a") as f:
            f.write("x")
    signal.signal(signal.SIGINT, count)
    with open(out + ".ready", "w") as f:
        f.write(str(os.getpid()))
    end = time.monotonic() + 60
    while not os.path.exists(out + ".sigint") and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(1.0)
    sys.exit(130)
""")
DEAF = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(sys.argv[1] + ".ready", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
""")


@pytest.fixture
def driver(tmp_path):
    """Starts DRIVER with a run's code and grace; returns its process once both runs are up.
    Every run still alive afterwards is killed."""
    started = []

    def start(child: str, grace: float = 30.0) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, child, str(grace), str(tmp_path)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(proc)
        ready = [tmp_path / f"s{s}.ready" for s in range(2)]
        end = time.monotonic() + 60
        while not all(r.exists() and r.read_text() for r in ready):
            assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
            time.sleep(0.05)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
    for ready in tmp_path.glob("*.ready"):
        if ready.read_text():
            try:
                os.kill(int(ready.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_to_the_driver_alone_stops_each_run_once(tmp_path, driver, sig):
    # `kill -INT` or `kill` (SIGTERM) to the driver's pid: the runs hear of it from the driver
    # only, once each. SIGTERM used to kill the driver alone and leave its runs training.
    proc = driver(COUNTING)

    os.kill(proc.pid, sig)

    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == runner.INTERRUPTED_EXIT, out
    assert "Interrupted (the runs in progress)" in out
    assert [(tmp_path / f"s{s}.sigint").read_text() for s in range(2)] == ["x", "x"]
    assert out.count("interrupted (exit 130)") == 2


def test_a_run_that_ignores_ctrl_c_is_killed_after_its_grace(tmp_path, driver):
    # Ctrl-C at a terminal reaches the whole process group; the driver waited on a run that
    # ignored it for as long as the run went on.
    proc = driver(DEAF, grace=0.5)
    start = time.monotonic()

    os.killpg(proc.pid, signal.SIGINT)

    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == runner.INTERRUPTED_EXIT, out
    assert time.monotonic() - start < 15
    assert out.count(f"failed (exit {-signal.SIGKILL})") == 2
    for s in range(2):
        with pytest.raises(ProcessLookupError):
            os.kill(int((tmp_path / f"s{s}.ready").read_text()), 0)


def test_a_second_ctrl_c_kills_the_runs_at_once(tmp_path, driver):
    proc = driver(DEAF, grace=60.0)
    start = time.monotonic()

    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)

    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == runner.INTERRUPTED_EXIT, out
    assert time.monotonic() - start < 15
    for s in range(2):
        with pytest.raises(ProcessLookupError):
            os.kill(int((tmp_path / f"s{s}.ready").read_text()), 0)
