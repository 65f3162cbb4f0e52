"""examples/bert/train.py as 2 processes on localhost: real ``jax.distributed``, no mock.

Each process is a fresh ``python examples/bert/train.py --distributed`` with 2 CPU devices
(``--xla_force_host_platform_device_count``), the coordinator on 127.0.0.1 at a free port and
the CPU collectives through gloo (``jax_cpu_collectives_implementation``). The 4 devices of the
2 processes form one mesh: the batch is split over them, each process feeding its own rows,
and the parameters, the optimizer state and the dice key are replicated.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.test_train_run import assert_trees_equal, base_args, train_records
from tests.train_helpers import REPO, make_tiny_model_dir, read_jsonl, synthetic_rows, write_csv

DEVICES_PER_PROCESS = 2
RUN_TIMEOUT_S = 300  # per launch; a hang fails the test instead of eating CI's budget
# 2 processes x 2 devices against 1 process x 4 devices: the same batch rows on the same
# device indices, so the same computation; only the all-reduce differs (gloo between
# processes instead of XLA's in-process one), which may change float sums in the last bits.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp_assets")
    model = make_tiny_model_dir(root / "tiny_bert")
    reviews = write_csv(root / "reviews.csv", synthetic_rows(400))
    return {"model": str(model), "data": str(reviews), "root": root}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int) -> dict[str, str]:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(autouse=True, scope="module")
def no_core_dumps():
    """JAX aborts a process that waits in vain for the others: no core file from that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # inherited by the processes
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


# train.py as a script that sends itself SIGTERM when it puts its N-th batch on the devices:
# a pre-empted job, at a known micro-step.
SIGTERM_AT = """
import os, signal, sys
from examples.bert import parallel, train
put_batch, calls = parallel.put_batch, []
def put_and_signal(batch, sharding):
    calls.append(1)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGTERM)
    return put_batch(batch, sharding)
parallel.put_batch = put_and_signal
sys.exit(0 if train.main(sys.argv[1:])["status"] == "completed" else 1)
"""


class Process:
    """One ``train.py`` process, its output in a file; with ``sigterm_at``, it sends itself
    SIGTERM as it puts its ``sigterm_at``-th batch on the devices."""

    def __init__(
        self, argv: list[str], devices: int, log: Path, sigterm_at: int | None = None
    ) -> None:
        self.log = log
        self._file = open(log, "w")  # closed in wait()
        script = ["examples/bert/train.py"]
        if sigterm_at is not None:
            script = ["-c", SIGTERM_AT.format(n=sigterm_at)]
        self.popen = subprocess.Popen(
            [sys.executable, *script, *argv],
            cwd=REPO,
            env=env(devices),
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"{self.log.name} did not end within {timeout} s:\n{self.output()}")
        finally:
            self._file.close()

    def output(self) -> str:
        return self.log.read_text()


def distributed(argv: list[str], port: int, num_processes: int, process_id: int) -> list[str]:
    return [
        *argv,
        "--distributed",
        "--coordinator-address",
        f"127.0.0.1:{port}",
        "--num-processes",
        str(num_processes),
        "--process-id",
        str(process_id),
    ]


def launch(
    argv: list[str], log_dir: Path, name: str, *, processes: int = 2, sigterm: int | None = None
) -> list[Process]:
    """Starts ``processes`` processes of one run (a single one runs without --distributed);
    ``sigterm``: process 1 sends itself SIGTERM at that batch."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if processes == 1:
        return [Process(argv, 2 * DEVICES_PER_PROCESS, log_dir / f"{name}.log")]
    port = free_port()
    return [
        Process(
            distributed(argv, port, processes, i),
            DEVICES_PER_PROCESS,
            log_dir / f"{name}.{i}.log",
            sigterm_at=sigterm if i == 1 else None,
        )
        for i in range(processes)
    ]


def finish(procs: list[Process], timeout: float = RUN_TIMEOUT_S) -> list[int]:
    """The exit codes; any process still running after ``timeout`` is killed and fails."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()


def final_checkpoint(out: Path) -> dict:
    """The arrays of a run's latest checkpoint, read onto this process's one device (the run
    saved them from a mesh of 4 devices, which orbax will not restore onto 1 by itself)."""
    steps = [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()]
    path = out / "checkpoints" / str(max(steps)) / "state"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata
        like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        state = checkpointer.restore(path, like)
    return jax.tree.map(
        lambda x: np.asarray(
            jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        ),
        state,
    )


def flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): x for path, x in leaves}


UPDATES = 8


def run_args(assets, out: Path) -> list[str]:
    """8 updates of 2 micro-batches of 16 (dropout on), a normalized die: a config that
    starts no JAX before ``jax.distributed.initialize`` (issue 21, item 8)."""
    return base_args(
        assets,
        out,
        "--steps",
        str(UPDATES),
        "--accumulation-steps",
        "2",
        "--mode",
        "per_mini_batch",
        "--seed",
        "5",
        "--eval-every",
        "4",
        "--save-every",
        "2",
        "--warmup-ratio",
        "0.1",
        "--normalize",
    )


@pytest.fixture(scope="module")
def two_process_run(assets, tmp_path_factory):
    """The uninterrupted run as 2 processes, and the same run as 1 process."""
    root = tmp_path_factory.mktemp("mp")
    two = launch(run_args(assets, root / "two"), root / "logs", "two")
    one = launch(run_args(assets, root / "one"), root / "logs", "one", processes=1)
    codes = finish(two + one)
    assert codes == [0, 0, 0], "\n\n".join(p.output()[-4000:] for p in two + one)
    return root, two, one


def test_two_processes_train_as_one_process_over_the_same_devices(two_process_run):
    root, two, _ = two_process_run
    summary = json.loads((root / "two" / "summary.json").read_text())
    single = json.loads((root / "one" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == UPDATES
    assert summary["dice"]["normalize"] is True and summary["expected_scale"] == pytest.approx(1)
    assert (summary["processes"], summary["devices"]) == (2, 4)
    assert (single["processes"], single["devices"]) == (1, 4)

    # The same rolls, exactly (the dice key is replicated state), and the same training.
    records, reference = train_records(root / "two"), train_records(root / "one")
    assert len(records) == 2 * UPDATES
    rolls = [(r["natural"], r["total"], r["scale"]) for r in records]
    assert rolls == [(r["natural"], r["total"], r["scale"]) for r in reference]
    np.testing.assert_allclose(
        [r["loss"] for r in records], [r["loss"] for r in reference], rtol=RTOL, atol=ATOL
    )
    params = final_checkpoint(root / "two")["params"]
    reference_params = final_checkpoint(root / "one")["params"]
    flat, flat_reference = flatten(params), flatten(reference_params)
    assert len(flat) > 20
    assert flat.keys() == flat_reference.keys()
    for name, value in flat.items():
        np.testing.assert_allclose(value, flat_reference[name], rtol=RTOL, atol=ATOL, err_msg=name)
    for key in ("eval_loss", "eval_accuracy", "eval_macro_f1", "eval_examples"):
        assert summary[key] == pytest.approx(single[key], rel=RTOL, abs=ATOL), key

    # Process 0 writes the run's files, once: the same files as a single process's run, one
    # metrics record per micro-step and evaluation (a second writer would duplicate them),
    # and process 1 reports nothing.
    assert sorted(os.listdir(root / "two")) == sorted(os.listdir(root / "one"))
    assert sorted(os.listdir(root / "two")) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "run.png",
        "summary.json",
    ]
    kinds = [r["kind"] for r in read_jsonl(root / "two" / "metrics.jsonl")]
    assert (kinds.count("train"), kinds.count("eval")) == (2 * UPDATES, 2)
    assert [r["micro_step"] for r in records] == list(range(1, 2 * UPDATES + 1))
    assert "Validation accuracy" in two[0].output()
    assert "Validation accuracy" not in two[1].output()
    assert f"Training {UPDATES} updates" not in two[1].output()


def test_a_sigterm_stops_both_processes_together_and_they_resume_exactly(
    assets, tmp_path, two_process_run
):
    """SIGTERM reaches process 1 only, at micro-step 6; the processes agree at the next log
    point (8, --log-every 4), save one checkpoint together and stop; resumed on both, the run
    ends as the unbroken one."""
    root, _, _ = two_process_run
    out = tmp_path / "stopped"
    procs = launch(run_args(assets, out), tmp_path / "logs", "stopped", sigterm=6)
    codes = finish(procs)
    logs = "\n\n".join(p.output()[-4000:] for p in procs)
    assert codes == [1, 1], logs  # train.py's exit status for a run that did not complete
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["status"] == "interrupted", logs
    assert stopped["micro_steps"] == 8  # the log point after the signal, agreed by both
    ckpts = out / "checkpoints"
    assert max(int(p.name) for p in ckpts.glob("*") if p.name.isdigit()) == 8

    resumed = launch(["--resume", str(out), "--no-progress"], tmp_path / "logs", "resumed")
    codes = finish(resumed)
    assert codes == [0, 0], "\n\n".join(p.output()[-4000:] for p in resumed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["resumed_from_micro_step"] == stopped["micro_steps"]
    # Same processes, same devices: bit for bit the unbroken 2-process run.
    assert_trees_equal(final_checkpoint(out), final_checkpoint(root / "two"))
    assert train_records(out) == train_records(root / "two")


# ------------------------------------------------------------------ wrong set-ups fail fast


def short_args(assets, out: Path, timeout_s: int = 5) -> list[str]:
    return base_args(assets, out, "--steps", "2", "--coordinator-timeout", str(timeout_s))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--process-id 1", "--process-id need(s) --distributed"),
        (
            "--distributed --coordinator-address 127.0.0.1:1234 --num-processes 2",
            "also needs --process-id",
        ),
        (
            "--distributed --coordinator-address localhost --num-processes 2 --process-id 0",
            "--coordinator-address must be host:port, got 'localhost'",
        ),
        (
            "--distributed --coordinator-address 127.0.0.1:1 --num-processes 0 --process-id 0",
            "--num-processes must be positive",
        ),
        (
            "--distributed --coordinator-address 127.0.0.1:1 --num-processes 2 --process-id -1",
            "--process-id -1 is not one of the 2 processes (0 .. 1)",
        ),
        ("--distributed --coordinator-timeout 0", "--coordinator-timeout must be positive"),
    ],
)
def test_inconsistent_process_flags_are_usage_errors(flags, message, capsys):
    from examples.bert import train

    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(flags.split())
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_process_id_outside_the_run_is_a_usage_error(assets, tmp_path):
    argv = distributed(short_args(assets, tmp_path / "out"), free_port(), 2, 2)
    proc = Process(argv, 1, tmp_path / "bad_id.log")
    assert proc.wait(60) == 2, proc.output()  # before connecting anywhere
    assert "--process-id 2 is not one of the 2 processes (0 .. 1)" in proc.output()
    assert not (tmp_path / "out").exists()


def test_an_unreachable_coordinator_fails_with_a_clear_message_in_bounded_time(assets, tmp_path):
    # Nothing listens at the port: process 1 gives up after --coordinator-timeout 5.
    argv = distributed(short_args(assets, tmp_path / "out"), free_port(), 2, 1)
    t0 = time.monotonic()
    proc = Process(argv, 1, tmp_path / "unreachable.log")
    code = proc.wait(120)
    elapsed = time.monotonic() - t0
    assert code == 2, proc.output()
    assert "could not reach the coordinator at 127.0.0.1:" in proc.output()
    assert "within 5 s" in proc.output()
    assert 5 <= elapsed < 100
    assert not (tmp_path / "out").exists()


def test_processes_told_different_process_counts_all_fail_clearly(assets, tmp_path):
    """Process 0 forms a run of 2; process 1 was told 3. JAX lets it join as 1 of 2, so the
    processes compare what they were told and all stop with the same message."""
    port = free_port()
    argvs = [
        distributed(short_args(assets, tmp_path / "out"), port, n, i) for i, n in enumerate((2, 3))
    ]
    t0 = time.monotonic()
    procs = [
        Process(argv, DEVICES_PER_PROCESS, tmp_path / f"mismatch.{i}.log")
        for i, argv in enumerate(argvs)
    ]
    codes = finish(procs, 120)
    assert time.monotonic() - t0 < 120
    for p in procs:
        assert "The processes disagree: 2 joined the coordinator" in p.output(), p.output()
        assert "(--num-processes, --process-id) = [(2, 0), (3, 1)]" in p.output()
    assert codes == [2, 2]
    assert not (tmp_path / "out").exists()


def test_process_0_alone_gives_up_after_the_timeout(assets, tmp_path):
    """The other process never comes: JAX ends process 0 when --coordinator-timeout runs
    out (DEADLINE_EXCEEDED), after our line that says what it was waiting for."""
    argv = distributed(short_args(assets, tmp_path / "out"), free_port(), 2, 0)
    t0 = time.monotonic()
    proc = Process(argv, 1, tmp_path / "alone.log")
    code = proc.wait(120)
    assert code != 0
    assert time.monotonic() - t0 < 100
    out = proc.output()
    assert "Joining a run of 2 processes as process 0" in out
    assert "waiting up to 5 s for all to join" in out
    assert "DEADLINE_EXCEEDED" in out
