"""The Results sweep: runs arms x seeds, skips finished runs, writes tables and figures."""

import csv
import json
from pathlib import Path

import pytest

import optax_dice
from examples.bert import sweep
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

    # A second sitting runs nothing again: every run is read from its summary.json.
    capsys.readouterr()
    again = sweep.main(_argv(assets, tmp_path))
    out = capsys.readouterr().out
    assert out.count("done already, skipped") == 4
    assert [e["accuracy_mean"] for e in again] == [e["accuracy_mean"] for e in table]


def test_unknown_arm_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown arm"):
        sweep.main(["--arms", "d30", "--runs-dir", str(tmp_path)])


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
    argv[argv.index("--lr") + 1] = "-1"  # the training script refuses it

    with pytest.raises(SystemExit, match=r"2 run\(s\) failed; see their logs: .*seed0\.log"):
        sweep.main(argv)
