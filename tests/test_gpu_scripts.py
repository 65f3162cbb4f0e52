"""The GPU check and the GPU study run on a CPU with --quick, so that they cannot rot."""

import argparse
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmarks import gpu
from examples.experiments import gpu_study
from tests.train_helpers import make_tiny_model_dir, synthetic_rows, write_csv

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_its_tests_part_and_reports_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick", "--parts", "tests", "--out",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "summary-tests.md").read_text()
    # No GPU here: every GPU test skipped itself, which is no pass.
    skipped = r"\| tests \(GPU only\) \| skipped \(all \d+ tests skipped: no GPU\?\) \|"
    assert re.search(skipped, summary)
    assert "| tests (float32) | passed |" in summary
    assert "train_step" not in summary
    assert re.search(r"\b\d+ skipped", (tmp_path / "tests_GPU_only.log").read_text())


def test_gpu_check_reports_a_part_that_runs_out_of_time(tmp_path):
    part = gpu.Part("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], 1.0)

    gpu.run_part(part, tmp_path, {})

    assert part.returncode is None and part.seconds < 10
    assert "| sleeper | stopped at its 1 s limit |" in gpu.summary([part], "# check")


def test_gpu_check_full_parts_are_the_issue_s_runs():
    args = argparse.Namespace(
        quick=False, batch_size=128, small_batch=32, large_batch=256, iters=10,
        tests_timeout=1, step_timeout=1, vs_timeout=1, overhead_timeout=1,
    )  # fmt: skip
    parts = {p.name: " ".join(p.argv) for p in gpu.parts(args)}

    assert list(parts)[:3] == ["tests (GPU only)", "tests (float32)", "train_step"]
    assert "--configs bert-base --dtype bfloat16 --seq-len 128" in parts["train_step"]
    assert (
        "--batch-size 128 --variants off,per_mini_batch,per_accumulation_step,xla,cudnn"
        in (parts["train_step"])
    )
    assert parts["train_step (large batch)"].endswith("--batch-size 256 --variants off")
    for name, batch in (("vs_pytorch", "128"), ("vs_pytorch (small batch)", "32")):
        assert "--config bert-base --dtype bfloat16 --seq-len 128" in parts[name]
        assert parts[name].endswith(f"--batch-size {batch}")
    assert "tests/test_gpu.py" in parts["tests (GPU only)"]
    assert "benchmarks.update_overhead" in parts["update_overhead"]


def test_gpu_check_skips_what_the_deadline_leaves_no_time_for(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(gpu, "run_part", lambda part, out, env: ran.append(part.name))

    rc = gpu.main(["--quick", "--out", str(tmp_path), "--deadline", "0"])

    assert rc == 1 and ran == []
    assert "| train_step | skipped (deadline) |" in (tmp_path / "summary-all.md").read_text()


@pytest.mark.slow
def test_gpu_check_quick_runs_every_part(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip

    summary = (tmp_path / "summary-all.md").read_text()
    for name in ("train_step", "update_overhead"):  # vs_pytorch also needs torch
        assert f"| {name} | passed |" in summary, summary
    assert "SUMMARY train_step" in summary


def test_gpu_study_quick(tmp_path):
    model = make_tiny_model_dir(tmp_path / "tiny_bert")
    data = write_csv(tmp_path / "reviews.csv", synthetic_rows(240))
    out = tmp_path / "out"

    rc = gpu_study.main(
        ["--quick", "--model", str(model), "--dataset", str(data), "--out", str(out),
         "--runs-dir", str(tmp_path / "runs"), "--arms", "dc-15-disadvantage", "baseline-off",
         "--seeds", "0", "--jobs", "1", "--archive", str(tmp_path / "all.tgz")]
    )  # fmt: skip

    assert rc == 0
    rows = json.loads((out / "main_job.json").read_text())
    assert [r["run"] for r in rows] == ["dice (default: DC 12, +2)", "off"]
    assert all(r["status"] == "completed" and r["steps"] == 4 for r in rows)
    assert all(r["steady_examples_per_s"] > 0 and r["wall_time_s"] > 0 for r in rows)
    assert "| off | 0 | completed | 4 |" in (out / "main_job.md").read_text()
    off = json.loads((tmp_path / "runs" / "main-off" / "seed0" / "summary.json").read_text())
    assert off["mode"] == "off" and off["rolls"] == 0
    results = (out / "sweep" / "results.md").read_text()
    assert "| DC 15, disadvantage | -0.2555" in results
    # The per-run CSV has the CPU sweep's columns; the figures are drawn from the runs' files.
    header = (out / "sweep" / "runs.csv").read_text().splitlines()[0]
    cpu = (ROOT / "benchmarks" / "results" / "rulesets" / "runs.csv").read_text().splitlines()[0]
    assert header == cpu
    assert (out / "sweep" / "loss_curves.png").stat().st_size > 0
    assert "| DC 15, disadvantage | " in (out / "paired.md").read_text()
    # One archive: every run's records and the results, no checkpoints.
    with tarfile.open(tmp_path / "all.tgz") as tar:
        names = tar.getnames()
    assert "runs/main-dice/seed0/summary.json" in names
    assert "runs/sweep/dc-15-disadvantage/seed0/metrics.jsonl" in names
    assert "results/sweep/runs.csv" in names and "results/paired.md" in names
    assert not [n for n in names if "checkpoints" in n]


def test_gpu_study_checks_its_arms_before_running_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_study.runner, "run_jobs", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(SystemExit):
        gpu_study.main(["--arms", "dc-99", "--runs-dir", str(tmp_path)])
    assert "--arms: unknown arm(s) ['dc-99']" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_gpu_study_starts_no_run_after_its_budget(tmp_path):
    rc = gpu_study.main(["--sweep-budget", "0", "--runs-dir", str(tmp_path / "runs"),
                         "--seeds", "1", "--arms", "baseline-off"])  # fmt: skip
    assert rc == 1
    rows = json.loads((tmp_path / "runs" / "results" / "main_job.json").read_text())
    assert [r["status"] for r in rows] == ["not started (deadline)"] * 2
    assert not (tmp_path / "runs" / "results" / "sweep").exists()
