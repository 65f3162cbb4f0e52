"""End-to-end tests of examples/bert/train.py on a tiny BERT and a small synthetic dataset.

Every run goes through ``train.main`` (the command line) or ``train.train_and_evaluate``; the
tiny model makes each take seconds on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import optax_dice
from examples.bert import optim, train
from optax_dice import game
from tests.train_helpers import (
    REPO,
    make_tiny_model_dir,
    read_jsonl,
    run_python,
    synthetic_rows,
    write_csv,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    model = make_tiny_model_dir(root / "tiny_bert")
    reviews = write_csv(root / "reviews.csv", synthetic_rows(400))
    return {"model": str(model), "data": str(reviews), "root": root}


def base_args(assets, out, *extra: str) -> list[str]:
    """A fast run: tiny BERT, 360 training reviews, batch 16, 16 tokens."""
    return [
        "--model",
        assets["model"],
        "--dataset",
        assets["data"],
        "--batch-size",
        "16",
        "--max-length",
        "16",
        "--lr",
        "3e-3",
        "--warmup-ratio",
        "0",
        "--log-every",
        "4",
        "--no-progress",
        "--output-dir",
        str(out),
        *extra,
    ]


def train_records(out) -> list[dict]:
    return [r for r in read_jsonl(Path(out) / "metrics.jsonl") if r["kind"] == "train"]


def final_checkpoint(out) -> dict:
    """The arrays of the latest checkpoint of a run, as nested dicts of numpy arrays."""
    manager = ocp.CheckpointManager(Path(out) / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    state = restored.state
    return jax.tree.map(
        lambda x: np.asarray(
            jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        ),
        state,
    )


def assert_trees_equal(a, b) -> None:
    leaves_a, tree_a = jax.tree.flatten_with_path(a)
    leaves_b, tree_b = jax.tree.flatten_with_path(b)
    assert tree_a == tree_b
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs"


# --------------------------------------------------------------------------------- training


def test_mode_off_lowers_the_loss_and_writes_every_output(assets, tmp_path):
    out = tmp_path / "off"
    summary = train.main(
        base_args(
            assets,
            out,
            "--mode",
            "off",
            "--steps",
            "80",
            "--eval-every",
            "40",
            "--lr",
            "5e-3",
            "--perturbed-eval",
            "--char-drop",
            "0.5",
            "--word-swap",
            "0.5",
        )
    )
    assert summary["status"] == "completed" and summary["steps"] == 80
    losses = [r["loss"] for r in train_records(out)]
    assert len(losses) == 80
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert summary["eval_accuracy"] > 0.8  # a keyword gives the label away
    assert summary["rolls"] == 0 and summary["dice"] is None
    # The perturbed copy, evaluated at the end: dropping half the letters hurts.
    assert summary["perturbed_accuracy"] is not None
    assert summary["perturbed_accuracy"] < summary["eval_accuracy"]

    assert sorted(os.listdir(out)) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "run.png",
        "summary.json",
    ]
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [40, 80]
    perturbed = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval_perturbed"]
    assert [r["step"] for r in perturbed] == [80]
    assert {"loss", "accuracy", "macro_f1"} <= set(evals[0])
    assert (
        json.loads((out / "summary.json").read_text())["eval_accuracy"] == summary["eval_accuracy"]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["label_to_id"] == {"neg": 0, "pos": 1}
    assert config["args"]["mode"] == "off"
    assert config["args"]["no_progress"] is True  # kept, so that --resume keeps it
    assert (out / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The logged loss is the model's own: the first micro-step's, recomputed here without the
    # script (the packaged tokenizer, the seed-0 head and dropout, batch 0 of seed 0).
    import optax

    from examples.bert import data, weights

    tokenizer = weights.load_tokenizer(assets["model"])
    dataset = data.load_classification_data(assets["data"], tokenizer, max_length=16)
    batch = {k: jnp.asarray(v) for k, v in data.TrainBatches(dataset.train, 16, seed=0)(0).items()}
    model, _ = weights.from_pretrained(assets["model"], num_labels=2, seed=0)
    model.train()
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    want = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    assert losses[0] == pytest.approx(float(want), rel=1e-5)


# ------------------------------------------------------------------------- no host syncs


@contextlib.contextmanager
def cpu_device_to_host_guard():
    """Makes ``transfer_guard_device_to_host`` bite on CPU too.

    On CPU, reading an array is zero-copy and the guard never fires (jax issue 16602), so
    this wraps the one place every implicit read goes through (``ArrayImpl._value``) and
    raises there under "disallow", unless ``jax.device_get`` (an explicit transfer) is
    running. It relies on JAX internals; where they differ, only the real guard is used.
    """
    try:
        from jax._src import array as jax_array
        from jax._src import config as jax_config
        from jax._src.lib import guard_lib

        original = jax_array.ArrayImpl.__dict__["_value"]
    except (ImportError, KeyError, AttributeError):
        yield
        return

    def _value(self):
        if (
            jax_config.transfer_guard_device_to_host.value == "disallow"
            and not guard_lib.thread_local_state().explicit_device_get
        ):
            raise RuntimeError(f"Disallowed device-to-host transfer of {self.shape} {self.dtype}")
        return original.fget(self)

    jax_array.ArrayImpl._value = property(_value)
    try:
        yield
    finally:
        jax_array.ArrayImpl._value = original


def test_the_guard_catches_an_implicit_host_transfer():
    with cpu_device_to_host_guard(), jax.transfer_guard_device_to_host("disallow"):
        x = jnp.arange(3.0) * 2
        with pytest.raises(Exception, match="Disallowed device-to-host"):
            float(x[1])
        np.testing.assert_array_equal(jax.device_get(x), [0.0, 2.0, 4.0])  # explicit: fine


@pytest.mark.parametrize(
    ("mode", "position", "k"),
    [
        ("per_mini_batch", "before", 2),
        ("per_accumulation_step", "before", 2),
        ("per_mini_batch", "after", 1),  # computing in bfloat16, too
    ],
)
def test_dice_runs_log_the_rolls_of_the_seed_with_no_host_sync(assets, tmp_path, mode, position, k):
    """Both dice modes train; the logged rolls are the seed's; and the whole run, evaluations
    and checkpoints included, goes under transfer_guard_device_to_host("disallow"): the
    step loop reads nothing from the device but through jax.device_get at log points."""
    out = tmp_path / "dice"
    updates = 10
    args = base_args(
        assets,
        out,
        "--mode",
        mode,
        "--dice-position",
        position,
        "--accumulation-steps",
        str(k),
        "--steps",
        str(updates),
        "--seed",
        "7",
        "--ability-score",
        "16",
        "--threshold",
        "13",
        "--eval-every",
        "4",
        "--save-every",
        "4",
        "--dtype",
        "bfloat16" if position == "after" else "float32",
    )
    with cpu_device_to_host_guard(), jax.transfer_guard_device_to_host("disallow"):
        summary = train.main(args)
    assert summary["status"] == "completed"
    records = train_records(out)
    assert len(records) == updates * k
    assert all(np.isfinite(r["loss"]) for r in records)
    rolls = [r for r in records if r["rolled"]]
    # per mini-batch: a roll per micro-batch; per accumulation step: a roll per update.
    expected_rolls = updates * k if mode == "per_mini_batch" else updates
    assert len(rolls) == summary["rolls"] == expected_rolls
    seq = optax_dice.roll_sequence(
        optim.dice_key(7), expected_rolls, dice="d20", threshold=13, modifier=3
    )
    assert [r["natural"] for r in rolls] == np.asarray(seq.natural).tolist()
    assert [r["total"] for r in rolls] == np.asarray(seq.total).tolist()
    np.testing.assert_array_equal([r["scale"] for r in rolls], np.asarray(seq.scale))
    # The loss after the roll: the rolled micro-batch's, or the accumulated update's mean,
    # times the scale of the seed's roll (from roll_sequence, not from the log).
    for j, r in enumerate(rolls):
        i = r["micro_step"]
        window = (
            [x["loss"] for x in records[i - k : i]] if mode != "per_mini_batch" else [r["loss"]]
        )
        want = float(seq.scale[j]) * np.mean(window)
        assert r["scaled_loss"] == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert summary["expected_scale"] == pytest.approx(
        optax_dice.odds(threshold=13, modifier=3).expected_scale
    )
    # Without the game's flags the records, odds and summary have no game in them.
    assert "level" not in rolls[0] and "abilities_fired" not in rolls[0]
    assert "game" not in summary and "odds_estimate" not in summary
    assert summary["eval_accuracy"] is not None
    assert (out / "run.png").exists()


# -------------------------------------------------------------------------------- the game


def count_from_records(records: list[dict]) -> dict:
    """The game's counts, straight from the rolled train records of metrics.jsonl."""
    rolls = [r for r in records if r["rolled"]]
    abilities, encounters = {}, {}
    for r in rolls:
        for name in r["abilities_fired"]:
            abilities[name] = abilities.get(name, 0) + 1
        if r["monster"] >= 0 and r["encounter_step"] == 1:
            name = game.MONSTERS[r["monster"]]
            encounters[name] = encounters.get(name, 0) + 1
    return {"abilities": abilities, "encounters": encounters}


def test_game_summary_counts_hand_built_records():
    """Abilities by name; an encounter is a monster appearing (encounter_step 1), so the same
    monster met again right after it retreated counts twice; the final level and XP are the
    last roll's; records that did not roll are not counted."""
    import dataclasses

    from examples.bert import plots, records
    from examples.bert.train_config import TrainConfig

    def roll(step, monster, encounter_step, level, xp, fired, rolled=True):
        return records.TrainRecord(
            micro_step=step, step=step, loss=0.5, grad_norm=1.0, lr=1e-3, applied=True,
            rolled=rolled, monster=monster, encounter_step=encounter_step, level=level, xp=xp,
            abilities_fired=tuple(fired),
        )  # fmt: skip

    run_records = [
        roll(1, -1, 0, 1, 0, []),
        roll(2, 2, 1, 1, 150, ["Rage"]),
        roll(3, 2, 2, 1, 450, ["Rage", "Reckless Attack"]),
        records.EvalRecord(3, 3, 0.7, 0.5, 0.4, 24, 0.1),
        roll(4, 2, 3, 1, 750, []),
        roll(5, 2, 1, 2, 50, ["Reckless Attack"]),  # the Wraith again, at once
        roll(6, 2, 2, 2, 60, ["Reckless Attack"], rolled=False),  # not a roll: not counted
        roll(7, -1, 0, 2, 60, []),
        roll(8, 0, 1, 2, 70, []),
        roll(9, 1, 1, 2, 200, ["Rage"]),  # a new monster after one step of the Ooze
    ]
    config = TrainConfig(character="barbarian", encounter_chance=0.5, experience=True)
    assert dataclasses.asdict(records.game_summary(config, run_records)) == {
        "character": "barbarian",
        "encounter_chance": 0.5,
        "experience": True,
        "abilities_fired": {"Rage": 3, "Reckless Attack": 2},
        "encounters": {"Gradient Ooze": 1, "Loss Dragon": 1, "Weight Wraith": 2},
        "monster_steps": {"Gradient Ooze": 1, "Loss Dragon": 1, "Weight Wraith": 4},
        "final_level": 2,
        "final_xp": 200,
    }
    rolls = records.rolls(run_records)
    assert plots.encounter_spans(rolls) == [(2, 2, 4), (2, 5, 5), (0, 8, 8), (1, 9, 9)]
    # No roll yet: level 1, 0 XP, nothing counted.
    empty = records.game_summary(TrainConfig(experience=True), [])
    assert (empty.final_level, empty.final_xp, empty.abilities_fired) == (1, 0, {})
    assert set(empty.encounters.values()) == {0}


def test_the_progress_bar_shows_the_level_and_the_monster():
    import dataclasses

    from examples.bert import records
    from examples.bert.run_loop import TrainLog
    from examples.bert.train_config import TrainConfig

    record = records.TrainRecord(
        micro_step=1, step=1, loss=0.5, grad_norm=1.0, lr=1e-3, applied=True, rolled=True,
        natural=17, total=19, scale=1.2, level=3, monster=1,
    )  # fmt: skip
    log = SimpleNamespace(window_steps=0, t_window=0.0)
    log.config = TrainConfig(encounter_chance=0.5, experience=True)
    postfix = TrainLog._postfix(log, [record], 1.0)
    assert postfix["lvl"] == "3" and postfix["monster"] == "Loss Dragon"
    assert postfix["roll"] == "17+2=19" and postfix["scale"] == "+1.20"
    postfix = TrainLog._postfix(log, [dataclasses.replace(record, monster=-1)], 1.0)
    assert postfix["monster"] == "-"
    log.config = TrainConfig(character="rogue")
    assert {"lvl", "monster"}.isdisjoint(TrainLog._postfix(log, [record], 1.0))


GAME_RUNS = {
    # (flags, mode, dice position, accumulation steps)
    "cleric": (
        ["--character", "cleric", "--encounter-chance", "0.5", "--experience"],
        "per_mini_batch", "before", 1,
    ),
    "cleric, per mini-batch of 2": (
        ["--character", "cleric", "--encounter-chance", "0.5"], "per_mini_batch", "before", 2,
    ),
    "barbarian, per accumulation step": (
        ["--character", "barbarian", "--experience"], "per_accumulation_step", "before", 2,
    ),
    "cleric after, per accumulation step": (
        ["--character", "cleric", "--encounter-chance", "0.5", "--experience"],
        "per_accumulation_step", "after", 2,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GAME_RUNS))
def test_a_game_run_logs_the_game_of_the_seed_and_counts_it(assets, tmp_path, case):
    """The game trains in every dice mode and position, with no host sync in the loop; every
    roll's game fields are roll_sequence's for the same key (the Cleric's losses being the
    logged ones it judged), and summary.json's counts are those of metrics.jsonl."""
    flags, mode, position, k = GAME_RUNS[case]
    out, updates, seed = tmp_path / "game", 8, 5
    args = base_args(assets, out, *flags, "--mode", mode, "--dice-position", position)
    args += ["--accumulation-steps", str(k), "--steps", str(updates), "--seed", str(seed)]
    with cpu_device_to_host_guard(), jax.transfer_guard_device_to_host("disallow"):
        summary = train.main(args)
    assert summary["status"] == "completed"
    records = train_records(out)
    assert len(records) == updates * k
    rolls = [r for r in records if r["rolled"]]
    per_micro_batch = mode == "per_mini_batch"
    assert len(rolls) == summary["rolls"] == (updates * k if per_micro_batch else updates)

    # What the Cleric judged: each micro-batch's loss; per accumulation step, the loss of the
    # window's first micro-batch (before: the held roll is made then) or last (after: the
    # roll follows AdamW inside MultiSteps, which keeps the emitting micro-batch's state).
    losses = [r["loss"] for r in records]
    if per_micro_batch or position == "after":
        judged = [r["loss"] for r in rolls]
    else:
        judged = [losses[r["micro_step"] - k] for r in rolls]
    character = flags[1]
    game_kwargs = {
        "character": character,
        "encounter_chance": 0.5 if "--encounter-chance" in flags else None,
        "experience": "--experience" in flags,
    }
    seq = optax_dice.roll_sequence(
        optim.dice_key(seed), len(rolls), losses=np.float32(judged),
        every_k=k if per_micro_batch else 1, threshold=12, modifier=2, **game_kwargs,
    )  # fmt: skip
    for field in ("natural", "total", "scale", "dice_scale", "monster", "encounter_step",
                  "level", "xp"):  # fmt: skip
        np.testing.assert_array_equal(
            [r[field] for r in rolls], np.asarray(getattr(seq, field)), err_msg=field
        )
    names = game.ABILITIES[character]
    fired = [[n for bit, n in enumerate(names) if f >> bit & 1] for f in np.asarray(seq.fired)]
    assert [r["abilities_fired"] for r in rolls] == fired
    assert all("abilities_fired" not in r for r in records if not r["rolled"])

    # summary.json: the counts of metrics.jsonl, every ability and monster named.
    counted = count_from_records(records)
    game_summary = json.loads((out / "summary.json").read_text())["game"]
    assert game_summary == summary["game"]
    assert game_summary["abilities_fired"] == {n: counted["abilities"].get(n, 0) for n in names}
    assert game_summary["encounters"] == {n: counted["encounters"].get(n, 0) for n in game.MONSTERS}
    if game_kwargs["encounter_chance"] is None:
        assert set(game_summary["encounters"].values()) == {0}
    else:  # seed 5 meets monsters in these 8 or 16 rolls
        assert sum(game_summary["encounters"].values()) >= 2
    assert (game_summary["final_level"], game_summary["final_xp"]) == (
        rolls[-1]["level"], rolls[-1]["xp"],
    )  # fmt: skip
    assert game_summary["character"] == character

    # The odds are an estimate, written with its standard error.
    assert summary["expected_scale_exact"] is False
    assert summary["odds_estimate"]["standard_error"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"]["odds_estimate"] == summary["odds_estimate"]
    assert config["args"]["character"] == character
    assert (out / "run.png").exists()


def test_a_stopped_game_resumes_bit_for_bit(assets, tmp_path):
    """Charges, the Cleric's last loss, the monster and the XP are optimizer state: a run
    stopped mid-window and resumed gives the run that never stopped."""
    game_args = ["--character", "cleric", "--encounter-chance", "0.5", "--experience"]
    game_args += ["--accumulation-steps", "2", "--steps", "8", "--save-every", "2"]
    game_args += ["--eval-every", "4", "--seed", "3"]
    reference = tmp_path / "unbroken"
    whole = train.main(base_args(assets, reference, *game_args))
    out = tmp_path / "stopped"
    first = train.main([*base_args(assets, out, *game_args), "--stop-after", "7"])
    assert first["status"] == "stopped" and first["micro_steps"] == 7
    second = train.main(["--resume", str(out), "--no-progress"])
    assert second["status"] == "completed" and second["resumed_from_micro_step"] == 7
    assert_trees_equal(final_checkpoint(out), final_checkpoint(reference))
    assert train_records(out) == train_records(reference)
    assert second["game"] == whole["game"]


# ------------------------------------------------------------------------------- resume


RESUME_STEPS = 40


def resume_args(assets, out) -> list[str]:
    # Dropout is on (the tiny config's 0.1), so the RNG state must be restored too.
    return base_args(
        assets,
        out,
        "--steps",
        str(RESUME_STEPS),
        "--save-every",
        "5",
        "--eval-every",
        "20",
        "--accumulation-steps",
        "2",
        "--mode",
        "per_mini_batch",
        "--seed",
        "3",
        "--warmup-ratio",
        "0.1",
    )


@pytest.fixture(scope="module")
def unbroken_run(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "unbroken"
    summary = train.main(resume_args(assets, out))
    return out, summary


def test_a_stopped_run_resumes_bit_for_bit(assets, tmp_path, unbroken_run):
    reference, reference_summary = unbroken_run
    out = tmp_path / "stopped"
    first = train.main([*resume_args(assets, out), "--stop-after", str(2 * 17 + 1)])
    assert first["status"] == "stopped" and first["micro_steps"] == 35  # mid-accumulation
    second = train.main(["--resume", str(out), "--no-progress"])
    assert second["status"] == "completed" and second["resumed_from_micro_step"] == 35
    assert_trees_equal(final_checkpoint(out), final_checkpoint(reference))
    assert train_records(out) == train_records(reference)
    assert second["eval_accuracy"] == reference_summary["eval_accuracy"]
    assert second["eval_loss"] == reference_summary["eval_loss"]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_resumes_bit_for_bit(assets, tmp_path, unbroken_run, signum):
    """SIGKILL: the run dies at once and resumes from its last complete checkpoint.
    SIGTERM (a pre-empted job): the run saves a checkpoint where it is and stops."""
    reference, _ = unbroken_run
    out = tmp_path / "killed"
    code = f"from examples.bert import train; train.main({resume_args(assets, out)!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpts = out / "checkpoints"
    deadline = time.monotonic() + 180
    killed_after = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = (
                [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
            )
            if done and max(done) >= 20:
                os.kill(proc.pid, signum)
                killed_after = max(done)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_after is None:
            proc.kill()
        proc.wait(timeout=120)
    assert killed_after is not None and killed_after < 2 * RESUME_STEPS, "the run was not killed"
    saved = sorted(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())
    if signum == signal.SIGTERM:
        stopped = json.loads((out / "summary.json").read_text())
        assert stopped["status"] == "interrupted"
        assert stopped["micro_steps"] < 2 * RESUME_STEPS
        # It saved where it stopped (not only at the last --save-every point) ...
        assert saved[-1] == stopped["micro_steps"], (saved, stopped["micro_steps"])
    summary = train.main(["--resume", str(out), "--no-progress"])
    assert summary["status"] == "completed"
    # ... and resumed from there.
    assert summary["resumed_from_micro_step"] == saved[-1] >= 20
    assert_trees_equal(final_checkpoint(out), final_checkpoint(reference))
    assert train_records(out) == train_records(reference)


def test_a_sigterm_in_the_final_evaluation_is_not_lost(assets, tmp_path, monkeypatch):
    """A SIGTERM that comes too late to stop the run (here, during its final evaluation): the
    run completes and writes its summary, and the caller is still told to stop, so a driver
    of many runs does not go on to the next."""
    from examples.bert import run_loop
    from examples.experiments import runner

    evaluate_and_log = run_loop.evaluate_and_log

    def terminated_in_the_last(evaluate_on, state, splits, step, log):
        if step == 8:
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_and_log(evaluate_on, state, splits, step, log)

    monkeypatch.setattr(run_loop, "evaluate_and_log", terminated_in_the_last)
    out = tmp_path / "late"
    config = train.parse_args(base_args(assets, out, "--steps", "8", "--eval-every", "4"))
    with pytest.raises(train.RunInterrupted, match="completed at micro-step 8") as stop:
        train.train_and_evaluate(config, str(out))
    assert stop.value.summary.status == "completed"
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    # The study's runner stops (Interrupted), and the next call reads the run as finished.
    settings = {k: v for k, v in vars(config).items() if k != "output_dir"}
    out2 = tmp_path / "late2"
    with pytest.raises(runner.Interrupted):
        runner.train_here(settings, str(out2))
    assert runner.run_status(str(out2)) == "completed"
    # The command line returns the completed summary (exit 0 as a script).
    monkeypatch.setattr(run_loop, "evaluate_and_log", evaluate_and_log)
    assert train.main(base_args(assets, tmp_path / "plain", "--steps", "8"))["status"] == (
        "completed"
    )


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def offline(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _fake_dataset_with_unseen_validation_label(*args, **kwargs):
    import datasets

    train_split = datasets.Dataset.from_dict(
        {"text": ["good day", "bad day"] * 20, "label": ["pos", "neg"] * 20}
    )
    val = datasets.Dataset.from_dict({"text": ["meh"], "label": ["neutral"]})
    return train_split, val, "fake"


BAD_INPUTS = {
    "missing model folder": (["--model", "/no/such/model"], "No folder /no/such/model"),
    "unreachable hub id": (["--model", "nobody-xyz/no-such-bert"], "Could not fetch"),
    "unknown dataset": (["--dataset", "no_such_dataset_xyz"], "Unknown dataset"),
    "missing dataset file": (["--dataset", "/no/such/file.csv"], "does not exist"),
    "missing column": (["--text-column", "body"], "'body' is not in the dataset"),
    "empty dataset": ([], "is empty"),
    "unseen validation label": ([], "never occur in train"),
    "zero batch size": (["--batch-size", "0"], "--batch-size must be positive"),
    "negative batch size": (["--batch-size", "-4"], "--batch-size must be positive"),
    "zero steps": (["--steps", "0"], "--steps must be positive"),
    "negative epochs": (["--epochs", "-1"], "--epochs must be positive"),
    "batch larger than the data": (["--batch-size", "4096"], "fewer than one batch"),
    "too long for the model": (["--max-length", "512"], "exceeds the model's 128 positions"),
    "after per mini-batch": (
        ["--dice-position", "after", "--accumulation-steps", "2"],
        "cannot roll per mini-batch",
    ),
    "infinite lr": (["--lr", "inf"], "--lr must be a finite number, got inf"),
    "nan lr": (["--lr", "nan"], "--lr must be a finite number, got nan"),
    "nan weight decay": (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    "infinite weight decay": (["--weight-decay", "inf"], "--weight-decay must be a finite"),
    "infinite epochs": (["--epochs", "inf"], "--epochs must be a finite number, got inf"),
    "nan warmup": (["--warmup-ratio", "nan"], "--warmup-ratio must be a finite number"),
    "seed too large": (["--seed", str(2**63)], "--seed must lie in [-2**63, 2**63 - 1]"),
    "split seed too small": (["--split-seed", str(-(2**63) - 1)], "--split-seed must lie"),
    "huge threshold": (["--threshold", "99999999999"], "threshold=99999999999 is out of range"),
    "huge die": (["--dice", "d2147483647"], "more than the 536,870,912"),
    "game without dice": (
        ["--mode", "off", "--character", "wizard"],
        "--mode off rolls none: pick a dice mode",
    ),
    "normalized game": (["--experience", "--normalize"], "with game mechanics"),
    "encounter chance above 1": (["--encounter-chance", "1.5"], "must lie in [0, 1]"),
    "single class": ([], "hold a single class, ['pos']: a classifier needs at least two"),
    "0-byte csv": ([], "is empty (0 bytes)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error_with_no_output(
    case, assets, tmp_path, capsys, monkeypatch, offline
):
    extra, message = BAD_INPUTS[case]
    args = base_args(assets, tmp_path / "out")
    if not {"--steps", "--epochs"} & set(extra):
        args += ["--steps", "2"]
    if case == "empty dataset":
        empty = tmp_path / "empty.csv"
        empty.write_text("review,sentiment\n")
        args += ["--dataset", str(empty)]
    if case == "single class":
        rows = [{"review": f"good film {i}", "sentiment": "pos"} for i in range(60)]
        args += ["--dataset", str(write_csv(tmp_path / "one_class.csv", rows))]
    if case == "0-byte csv":
        (tmp_path / "nothing.csv").write_bytes(b"")
        args += ["--dataset", str(tmp_path / "nothing.csv")]
    if case == "unseen validation label":
        from examples.bert import data

        monkeypatch.setattr(data, "load_raw", _fake_dataset_with_unseen_validation_label)
    with pytest.raises(SystemExit) as exit_info:
        train.main(args + extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_run_folder_is_not_overwritten_and_resume_keeps_its_settings(
    assets, tmp_path, capsys
):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        train.main(base_args(assets, out, "--steps", "2"))
    assert "exists and is not empty" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"]
    with pytest.raises(SystemExit):
        train.main(["--resume", str(out)])
    assert "not a run folder" in capsys.readouterr().err
    (out / "config.json").write_text(json.dumps({"args": {}}))
    (out / "checkpoints" / "2").mkdir(parents=True)
    with pytest.raises(SystemExit):
        train.main(["--resume", str(out), "--lr", "0.5"])
    assert "drop --lr" in capsys.readouterr().err


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict JSON readers do."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_run_stops_with_its_own_status_and_strict_json(assets, tmp_path):
    """--lr 1e30 passes every flag check, and the loss becomes NaN within a few steps: the
    script must say so, stop, exit 1 and write only strict JSON (null for NaN)."""
    out = tmp_path / "diverged"
    argv = base_args(assets, out, "--mode", "off", "--lr", "1e30", "--steps", "40")
    argv += ["--save-every", "2", "--eval-every", "2"]
    proc = subprocess.run(
        [sys.executable, "examples/bert/train.py", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "the run diverged and stopped" in proc.stdout
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    first_bad = summary["diverged_at_micro_step"]
    assert 1 <= first_bad <= summary["micro_steps"] < 40
    assert summary["micro_steps"] - first_bad < 4  # stopped at the next log point
    assert summary["eval_accuracy"] is None and summary["train_loss_last"] is None
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [_strict_json(line) for line in lines]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert train_losses[first_bad - 1] is None  # NaN or inf, written as null
    assert all(x is not None for x in train_losses[: first_bad - 1])
    # No checkpoint of the diverged model: the last one is from before the divergence.
    saved = [int(p.name) for p in (out / "checkpoints").glob("*") if p.name.isdigit()]
    assert max(saved, default=0) < first_bad
    _strict_json((out / "config.json").read_text())
    # A diverged run is final: resuming it leaves it as it is.
    before = {name: (out / name).read_bytes() for name in ("summary.json", "metrics.jsonl")}
    again = train.main(["--resume", str(out), "--no-progress"])
    assert again["status"] == "diverged"
    assert before == {name: (out / name).read_bytes() for name in before}


def test_a_negative_seed_trains(assets, tmp_path):
    # numpy's generators refuse negative seeds: the data order maps them mod 2**64.
    summary = train.main(base_args(assets, tmp_path / "neg", "--steps", "2", "--seed", "-1"))
    assert summary["status"] == "completed" and summary["steps"] == 2
    rolls = [r["natural"] for r in train_records(tmp_path / "neg")]
    want = optax_dice.roll_sequence(optim.dice_key(-1), 2, threshold=12, modifier=2).natural
    assert rolls == np.asarray(want).tolist()


def test_output_dir_naming_a_file_is_a_usage_error(assets, tmp_path, capsys):
    taken = tmp_path / "a_file"
    taken.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        train.main(base_args(assets, taken, "--steps", "2"))
    assert exit_info.value.code == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "mine"


def _fake_run(folder, args, *, checkpoint=True, metrics="keep me\n"):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"args": args}))
    (folder / "metrics.jsonl").write_text(metrics)
    if checkpoint:
        (folder / "checkpoints" / "6").mkdir(parents=True)
    return folder


def test_resume_compares_typed_flags_with_the_saved_run_not_the_defaults(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", {"threshold": 99, "batch_size": 3, "lr": 0.5})
    # 12 and 32 are the parser's defaults: typed, they still differ from the saved run.
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--resume", str(run), "--threshold", "12", "--batch-size", "32"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "drop --threshold (the run has 99, not 12), --batch-size (the run has 3, not 32)" in err
    with pytest.raises(SystemExit):
        train.parse_args(["--resume", str(run), "--lr", "0.25"])
    assert "--lr (the run has 0.5, not 0.25)" in capsys.readouterr().err
    # Typing the saved values is harmless; the saved settings are what the run continues.
    args = train.parse_args(["--resume", str(run), "--threshold", "99", "--lr", "0.5"])
    assert (args.threshold, args.batch_size, args.lr) == (99, 3, 0.5)
    assert args.output_dir == str(run)


def test_resume_keeps_no_progress(tmp_path):
    quiet = _fake_run(tmp_path / "quiet", {"no_progress": True})
    assert train.parse_args(["--resume", str(quiet)]).no_progress is True
    loud = _fake_run(tmp_path / "loud", {"no_progress": False})
    assert train.parse_args(["--resume", str(loud)]).no_progress is False
    assert train.parse_args(["--resume", str(loud), "--no-progress"]).no_progress is True


def test_resume_without_checkpoints_is_refused_and_erases_nothing(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", {}, checkpoint=False, metrics='{"kind": "train"}\n')
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume", str(run)])
    assert exit_info.value.code == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == '{"kind": "train"}\n'
    (run / "checkpoints").mkdir()  # an empty folder, or one with an unfinished save
    (run / "checkpoints" / "8.orbax-checkpoint-tmp-1").mkdir()
    with pytest.raises(SystemExit):
        train.main(["--resume", str(run)])
    assert "nothing to resume from" in capsys.readouterr().err


def test_resuming_a_completed_run_leaves_its_outputs_intact(unbroken_run, capsys):
    out, summary = unbroken_run
    files = ("summary.json", "metrics.jsonl", "config.json", "run.png")
    before = {name: (out / name).read_bytes() for name in files}
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    capsys.readouterr()
    again = train.main(["--resume", str(out)])
    assert "has completed" in capsys.readouterr().out
    assert again == json.loads(before["summary.json"])
    assert again["train_loss_last"] == summary["train_loss_last"] is not None
    assert {name: (out / name).read_bytes() for name in files} == before
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints


# ------------------------------------------------------------------------- data parallel


def test_data_parallel_over_8_cpu_devices(assets, tmp_path):
    args = base_args(assets, tmp_path / "dp8", "--steps", "6", "--seed", "1")
    bad = base_args(assets, tmp_path / "dp8_bad", "--steps", "6", "--batch-size", "12")
    code = textwrap.dedent(
        f"""
        import json, sys
        import jax
        from examples.bert import parallel, train
        assert jax.device_count() == 8, jax.devices()
        put_batch, placed = parallel.put_batch, []

        def spy(batch, sharding):
            # Record how every batch the step gets is laid out over the devices.
            out = put_batch(batch, sharding)
            placed.append({{
                k: sorted((s.device.id, s.index[0].start, s.index[0].stop)
                          for s in v.addressable_shards)
                for k, v in out.items()
            }})
            return out

        parallel.put_batch = spy
        summary = train.main({args!r})
        print("SUMMARY", json.dumps(summary))
        print("PLACED", json.dumps(placed))
        parallel.put_batch = put_batch
        try:
            train.main({bad!r})
        except SystemExit as exit:
            print("EXIT", exit.code)
        """
    )
    result = run_python(
        code,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["devices"] == 8 and summary["status"] == "completed"
    # Every batch (train and eval) is split over the 8 devices: device i holds rows
    # [2i, 2i + 2) of the 16, for every array of the batch.
    placed = json.loads(result.stdout.split("PLACED ", 1)[1].splitlines()[0])
    assert len(placed) >= 6  # 6 train steps, then the evaluation's batches
    for batch in placed:
        assert {"input_ids", "labels"} <= set(batch)
        for shards in batch.values():
            assert sorted(device for device, _, _ in shards) == list(range(8))
            assert sorted((start, stop) for _, start, stop in shards) == [
                (2 * i, 2 * i + 2) for i in range(8)
            ]
    assert "EXIT 2" in result.stdout
    assert "does not divide over the 8 devices" in result.stderr
    assert not (tmp_path / "dp8_bad").exists()

    # The same run on one device computes the same thing, up to float reduction order.
    one = train.main(base_args(assets, tmp_path / "dp1", "--steps", "6", "--seed", "1"))
    eight, single = train_records(tmp_path / "dp8"), train_records(tmp_path / "dp1")
    assert [r["natural"] for r in eight] == [r["natural"] for r in single]
    np.testing.assert_allclose(
        [r["loss"] for r in eight], [r["loss"] for r in single], rtol=2e-4, atol=1e-5
    )
    assert summary["eval_accuracy"] == pytest.approx(one["eval_accuracy"], abs=0.05)


# ----------------------------------------------------------------------------- default run


@pytest.mark.slow
def test_readme_default_run_beats_the_majority_class(tmp_path):
    """README's first command, as is (minutes on a 2-core CPU)."""
    summary = train.main(["--output-dir", str(tmp_path / "default"), "--no-progress"])
    assert summary["status"] == "completed"
    assert summary["eval_accuracy"] >= 0.60 > summary["majority_accuracy"] + 0.15
