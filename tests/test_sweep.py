"""The Results sweep: runs arms x seeds, skips finished runs, writes tables and figures."""

import csv
import json
from pathlib import Path

import pytest

import optax_dice
from examples.experiments import runner, sweep
from tests.train_helpers import make_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("sweep_assets"))


def _argv(assets, tmp_path, *extra):
    return [
        "--runs-dir", str(tmp_path / "runs"),
        "--results-dir", str(tmp_path / "results"),
        "--arms", "dc-15-disadvantage", "dc-12-2-per-accumulation-step-x4",
        "--seeds", "0", "1",
        "--micro-steps", "8",
        "--batch-size", "16",
        "--max-length", "16",
        "--max-eval-samples", "32",
        *extra,
        "--train-args", "--model", assets["model"], "--dataset", assets["data"],
        "--lr", "3e-3",
    ]  # fmt: skip


def test_sweep_writes_tables_and_figures_and_resumes(assets, tmp_path, capsys):
    table = sweep.main(_argv(assets, tmp_path))
    assert [e["arm"] for e in table] == [
        "DC 15, disadvantage",
        "DC 12, +2, per accumulation step x4",
    ]
    assert all(e["runs"] == 2 for e in table)
    # Each arm's E[scale] is that of the runs it made: the training script computed it from
    # the flags the sweep passed (summary.json), against DESIGN.md's figures.
    with open(tmp_path / "results" / "runs.csv") as f:
        run_dirs = {}
        for r in csv.DictReader(f):
            run_dirs.setdefault(r["arm"], []).append(r["run_dir"])
    for e in table:
        summaries = [json.loads(Path(d, "summary.json").read_text()) for d in run_dirs[e["arm"]]]
        assert len(summaries) == 2
        for summary in summaries:
            assert e["expected_scale"] == pytest.approx(summary["expected_scale"], abs=1e-12)
    disadvantage, accumulated = table
    assert disadvantage["expected_scale"] == pytest.approx(-0.2555, abs=1e-7)
    assert accumulated["expected_scale"] == pytest.approx(0.37, abs=1e-7)
    exact = optax_dice.odds(threshold=15, disadvantage=True)
    assert disadvantage["std_scale"] == pytest.approx(exact.std_scale)
    for e in table:
        assert 0.0 <= e["accuracy_mean"] <= 1.0 and 0.0 <= e["perturbed_accuracy_mean"] <= 1.0
        assert e["accuracy_drop_mean"] == pytest.approx(
            e["accuracy_mean"] - e["perturbed_accuracy_mean"]
        )
    results = tmp_path / "results"
    for name in ("results.md", "results.csv", "runs.csv",
                 "accuracy_vs_expected_scale.png", "loss_curves.png"):  # fmt: skip
        assert (results / name).stat().st_size > 0, name
    with open(results / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 4
    # Same micro-batch budget for every arm: 8 micro-steps, 2 updates with x4 accumulation.
    accumulated = [r for r in runs if "accumulation" in r["arm"]]
    for r in accumulated:
        summary = json.loads(Path(r["run_dir"], "summary.json").read_text())
        assert (summary["micro_steps"], summary["steps"]) == (8, 2)
    md = (results / "results.md").read_text()
    assert "| DC 15, disadvantage | -0.2555" in md
    # The title names the model and data the runs used (issue 21, item 20).
    assert md.startswith(f"# Results: dice rulesets fine-tuning {assets['model']} on ")
    assert assets["data"] in md.splitlines()[0]

    # A second sitting runs nothing again: every run is read from its summary.json.
    capsys.readouterr()
    again = sweep.main(_argv(assets, tmp_path))
    out = capsys.readouterr().out
    assert "4 of 4 run(s) finished already" in out and "starts" not in out
    assert [e["accuracy_mean"] for e in again] == [e["accuracy_mean"] for e in table]

    # The same runs with other settings are refused, not mixed in (issue 21, item 6).
    argv = _argv(assets, tmp_path)
    argv[argv.index("--lr") + 1] = "2e-3"
    with pytest.raises(SystemExit, match=r"other settings: lr 0.003 \(not 0.002\)"):
        sweep.main(argv)
    with pytest.raises(SystemExit, match="weight_decay 0.01 \\(not 0.02\\)"):
        sweep.main([*_argv(assets, tmp_path), "--weight-decay", "0.02"])


def test_bad_flags_are_refused_in_one_line_under_the_sweep_s_name(tmp_path, capsys):
    for argv, message in (
        (["--arms", "d30"], "--arms: unknown arm(s) ['d30']"),
        (["--jobs", "0"], "--jobs must be positive"),
        (["--micro-steps", "6"], "--micro-steps 6 is not a multiple of 4"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag 1"),
    ):
        with pytest.raises(SystemExit):
            sweep.main([*argv, "--runs-dir", str(tmp_path)])
        line = capsys.readouterr().err.strip().splitlines()[-1]  # no traceback, no usage
        assert line.startswith("python examples/experiments/sweep.py: error: ") and message in line
    assert not (tmp_path / "results").exists()


def test_results_go_under_the_runs_unless_a_results_dir_is_named():
    cfg, extra = sweep.parse_args(["--runs-dir", "runs/x", "--model", "M", "--seed", "3"])
    assert extra == {"model": "M", "seed": 3}  # --seed is a training flag, not --seeds
    assert runner.results_dir(cfg.results_dir, cfg.runs_dir) == "runs/x/results"
    cfg, _ = sweep.parse_args(["--results-dir", "benchmarks/results/rulesets"])
    assert runner.results_dir(cfg.results_dir, cfg.runs_dir) == "benchmarks/results/rulesets"


def test_ctrl_c_stops_the_sweep_and_the_run_resumes_from_its_checkpoint(
    assets, tmp_path, monkeypatch, capsys
):
    real = runner.train_here
    calls = []

    def stopped_midway(settings, workdir):  # a run stopped with a checkpoint, as Ctrl-C does
        calls.append(workdir)
        real({**settings, "stop_after": 4, "save_every": 0}, workdir)

    monkeypatch.setattr(runner, "train_here", stopped_midway)
    argv = _argv(assets, tmp_path, "--seeds", "0")
    with pytest.raises(SystemExit) as stop:
        sweep.main(argv)
    assert stop.value.code == 130 and "Interrupted (" in capsys.readouterr().err
    assert len(calls) == 1  # the driver stopped: the second arm did not start
    assert runner.run_status(calls[0]) == "unfinished"
    assert not (tmp_path / "results").exists()  # no report over missing values

    monkeypatch.setattr(runner, "train_here", real)
    table = sweep.main(argv)
    assert [e["runs"] for e in table] == [1, 1]
    summary = json.loads(Path(calls[0], "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_micro_step"] == 4


def test_parallel_jobs_give_the_runs_one_process_gives(assets, tmp_path):
    serial = sweep.main(_argv(assets, tmp_path / "serial", "--seeds", "0"))
    parallel = sweep.main(_argv(assets, tmp_path / "parallel", "--seeds", "0", "--jobs", "2"))

    # Each run is a pure function of its seed and flags, in whichever process it runs.
    for s, p in zip(serial, parallel, strict=True):
        assert s["arm"] == p["arm"]
        assert p["accuracy_mean"] == pytest.approx(s["accuracy_mean"], abs=1e-6)
        assert p["train_loss_mean"] == pytest.approx(s["train_loss_mean"], rel=1e-5)
    for arm in ("dc-15-disadvantage", "dc-12-2-per-accumulation-step-x4"):
        log = tmp_path / "parallel" / "runs" / arm / "seed0.log"
        assert "Validation accuracy" in log.read_text()


def test_a_failed_parallel_run_names_its_log(assets, tmp_path):
    argv = _argv(assets, tmp_path, "--seeds", "0", "--jobs", "2")
    argv[argv.index("--dataset") + 1] = str(tmp_path / "missing.csv")  # fails as it loads

    with pytest.raises(SystemExit, match=r"2 run\(s\) failed; see their logs: .*seed0\.log"):
        sweep.main(argv)
