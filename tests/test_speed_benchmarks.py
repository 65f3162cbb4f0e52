"""Issue 20's benchmarks run (or skip) on a CPU, so that they cannot rot.

Timing is never asserted: the figures of a quick run on a shared machine mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import aot_kernels, gpu_speed

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_host_time_quick_pairs_the_two_steps():
    proc = _run("benchmarks.host_time", "--quick")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("# host_time")
    rows = [line for line in lines if line.startswith(("| before ", "| after "))]
    assert len(rows) == 2
    # Today's state crosses as fewer arrays: the optimizer keeps the small leaves grouped.
    before, after = (int(row.split("|")[4]) for row in rows)
    assert 0 < after < before
    assert lines[-1].startswith("SUMMARY host_time: ")
    assert lines[-1].endswith("target not judged (--quick: a smoke test on a toy BERT)")


def test_aot_kernels_skips_cleanly_without_the_cuda_wheels():
    if aot_kernels.plugin_problem() is None:
        pytest.skip("the CUDA plugin wheels are installed here")

    proc = _run("benchmarks.aot_kernels", "--quick", timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("SKIP aot_kernels: jax-cuda13-pjrt is not ")
    assert "nothing compiled" in proc.stdout


def test_aot_kernels_names_a_plugin_that_does_not_match_jaxlib(monkeypatch):
    versions = {"jaxlib": "0.10.2", "jax-cuda13-pjrt": "0.10.2", "jax-cuda13-plugin": "0.9.0"}
    monkeypatch.setattr(importlib.metadata, "version", versions.__getitem__)

    assert aot_kernels.plugin_problem() == (
        "jax-cuda13-plugin 0.9.0 does not match jaxlib 0.10.2: install jax-cuda13-plugin==0.10.2"
    )
    versions["jax-cuda13-plugin"] = "0.10.2"
    assert aot_kernels.plugin_problem() is None


def test_aot_kernels_counts_random_values_in_the_jaxpr():
    import jax

    def draws(key):
        bits = jax.random.bits(key, (4, 6), jax.numpy.uint32)  # 24 values
        mask = jax.random.bernoulli(key, 0.5, (10,))  # 10 more, 32 bits each
        return jax.jit(lambda k: jax.random.bits(k, (8,), jax.numpy.uint16))(key), bits, mask

    jaxpr = jax.make_jaxpr(draws)(jax.random.key(0)).jaxpr

    assert aot_kernels.random_values(jaxpr) == 24 + 10 + 4  # 8 uint16 are 4 32-bit values


def _row(batch, ms, mfu=0.3):
    return {"batch": batch, "ms": ms, "iqr_ms": [ms, ms], "samples_s": batch / ms * 1e3,
            "mfu": mfu, "windows": 5}  # fmt: skip


def test_gpu_speed_report_writes_the_tables_and_the_headline(tmp_path):
    pair = {
        label: _row(128, ms)
        for label, ms in zip(gpu_speed.PAIR, (80.0, 40.0, 39.0, 38.8), strict=True)
    }
    sweep = {"128": pair[gpu_speed.ONE_NORM], "256": _row(256, 70.0, 0.41),
             "384": {"batch": 384, "error": "RESOURCE_EXHAUSTED: out of memory"}}  # fmt: skip
    (tmp_path / "jax.json").write_text(json.dumps({"machine": "m", "pair": pair, "sweep": sweep}))
    rows = {"128": _row(128, 39.0 * 1.6), "256": _row(256, 120.0)}
    torch_run = {"machine": "torch 2.11 on NVIDIA H200", "rows": rows}
    (tmp_path / "torch.json").write_text(json.dumps(torch_run))

    proc = _run("benchmarks.gpu_speed", "report", "--out", str(tmp_path), timeout=120)

    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "report.md").read_text()
    assert "| after, one norm, no dice " in text and "| 2.06x " in text  # 80 / 38.8
    assert "RESOURCE_EXHAUSTED" in text
    assert text.strip().splitlines()[-1] == (
        "GPU headline: 1.60x roll-to-train's loop at batch 128, 41% MFU at batch 256, NVIDIA H200"
    )
    assert gpu_speed.best_batch(str(tmp_path)) == 256


def test_gpu_speed_report_adds_the_scatter_probe_and_the_lookup(tmp_path):
    pair = {"before": _row(128, 78.0), gpu_speed.ONE_NORM: _row(128, 26.0)}
    probe = {"batch": 128, "seq": 128, "scatter pad 0.00": 0.3, "one_hot pad 0.00": 4.2,
             "scatter pad 0.75": 187.3, "one_hot pad 0.75": 4.5}  # fmt: skip
    ours = {"machine": "m", "pair": pair, "sweep": {"128": pair[gpu_speed.ONE_NORM]},
            "lookup": "dense", "scatter_probe": probe}  # fmt: skip
    (tmp_path / "jax.json").write_text(json.dumps(ours))

    text = gpu_speed.report(argparse.Namespace(out=str(tmp_path)))

    assert "embedding lookup: dense" in text and "| 3.00x " in text  # 78 / 26
    lines = text.splitlines()
    assert lines[-4].split("|")[2:4] == [" 0.00 ", " 0.75  "]
    assert lines[-2].split("|")[2:4] == [" 0.3  ", " 187.3 "]
    assert lines[-1].split("|")[2:4] == [" 4.2  ", " 4.5   "]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--labels", "after"], "--labels must hold 'before'"),
     (["--labels", "before;after", "--traces", "after, one norm"], "every --traces variant"),
     (["--labels", "before;after, two norms"], "unknown variant 'after, two norms'")],
)  # fmt: skip
def test_gpu_speed_refuses_a_pair_without_its_baseline_or_an_unknown_variant(
    argv, message, capsys, tmp_path
):
    with pytest.raises(SystemExit) as exit_info:
        gpu_speed.main(["jax", "--out", str(tmp_path / "out"), *argv])

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpu_speed_headline_says_when_a_side_is_missing():
    ours = {"sweep": {"128": _row(128, 40.0, None)}}

    line = gpu_speed.headline(ours, {"rows": {}, "machine": "-"})

    assert line == "GPU headline: not measured (no GPU, or a side missing)"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_device_check_speed_smoke_runs_on_a_cpu(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TINY="--tiny", OUT=str(tmp_path))
    proc = subprocess.run(
        ["bash", "benchmarks/device_check.sh", "speed"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=900, check=False,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.tgz"]
    assert "| before " in proc.stdout and "GPU headline: not measured" in proc.stdout
