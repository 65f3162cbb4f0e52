"""The run folder: everything a run leaves behind, and how it is read back.

* ``config.json``: the run's settings (``args``: :meth:`TrainConfig.saved`) and what they
  amounted to (the data, the optimizer, the machine, the versions).
* ``metrics.jsonl``: one JSON object a line, of the kinds :func:`train_record` and
  :func:`eval_record` define. ``micro_step`` counts micro-batches done, ``step`` applied
  updates done (both from 1).
* ``checkpoints/<micro-step>/``: orbax checkpoints (:class:`Checkpointer`).
* ``summary.json``: the result, with a ``status``: completed, diverged (final), stopped or
  interrupted (resumable with ``--resume``).
* ``run.png``: :func:`examples.bert.plots.plot_run`.

All JSON is strict: a NaN or infinite loss is written as ``null``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import orbax.checkpoint as ocp

import optax_dice
from examples.bert import optim
from optax_dice import game

if TYPE_CHECKING:
    from examples.bert.data import ClassificationData
    from examples.bert.train_config import TrainConfig

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
FIGURE_FILE = "run.png"
CHECKPOINT_DIR = "checkpoints"
# A run that ended in one of these is final: --resume leaves its outputs as they are.
FINAL_STATUSES = ("completed", "diverged")


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by None.

    Python's json writes them as bare ``NaN`` / ``Infinity``, which strict JSON readers
    refuse; a diverged run's loss is recorded as ``null`` instead.

    Example:
      >>> strict_json({"loss": float("nan"), "xs": [1.0, float("inf")], "n": 3})
      {'loss': None, 'xs': [1.0, None], 'n': 3}
    """
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` of ``value``: always valid, strict JSON."""
    return json.dumps(strict_json(value), allow_nan=False, default=_jsonable, **kwargs)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Writes ``data`` as indented, strict JSON (NaN and infinities as null), atomically
    (a temporary file, then a rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(dumps(data, indent=2, sort_keys=False))
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON file."""
    with open(path) as f:
        return json.load(f)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl`` (an incomplete last line, from a killed run, is skipped)."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl``.

    Args:
      path: the file.
      resume_micro_step: when resuming from the checkpoint at this micro-step, the records
        after it (written by the run that was stopped, and about to be made again) are
        dropped first, so that the file reads as if the run had never stopped.
    """

    def __init__(self, path: str | os.PathLike, *, resume_micro_step: int | None = None) -> None:
        self.path = os.fspath(path)
        if resume_micro_step is not None:
            kept = [r for r in read_metrics(self.path) if r["micro_step"] <= resume_micro_step]
            with open(self.path, "w") as f:
                f.writelines(dumps(r) + "\n" for r in kept)
        self._file = open(self.path, "a")

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records and flushes."""
        self._file.writelines(dumps(r) + "\n" for r in records)
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


# ------------------------------------------------------------------------------ the records


def train_record(
    micro_step: int,
    metrics: dict[str, Any],
    accumulation_steps: int,
    rolled: bool,
    loss_rolled: float,
    *,
    abilities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The record of one micro-step (``micro_step`` from 1), from the train step's metrics.

    ``loss`` is the micro-batch's loss before the roll; a micro-step that rolled also has the
    roll's ``natural``, ``total``, ``scale`` and ``scaled_loss`` (``loss_rolled`` x scale, where
    ``loss_rolled`` is the loss the roll judged: the mean over the update when it rolls per
    accumulated update).

    With game mechanics (``abilities``: the names of the class's abilities, by bit of the
    game state's ``fired``; empty without a class), a micro-step that rolled also has the
    game's state after that roll: ``dice_scale`` (the rule's; ``scale`` is then the product
    of every mechanic, as applied), ``monster`` (the code of the monster that acted, -1 for
    none: ``optax_dice.game.MONSTERS``), ``encounter_step`` (1 on the step a monster
    appears, up to 3), ``level``, ``xp`` and ``abilities_fired`` (the names of the
    abilities that fired on that roll).
    """
    record = {
        "kind": "train",
        "micro_step": micro_step,
        "step": micro_step // accumulation_steps,
        "loss": float(metrics["loss"]),
        "grad_norm": float(metrics["grad_norm"]),
        "lr": float(metrics["lr"]),
        "applied": micro_step % accumulation_steps == 0,
        "rolled": rolled,
    }
    if rolled:
        scale = float(metrics["scale"])
        record.update(
            natural=int(metrics["natural"]),
            total=int(metrics["total"]),
            scale=scale,
            scaled_loss=loss_rolled * scale,
        )
        if abilities is not None:
            fired = int(metrics["fired"])
            record.update(
                dice_scale=float(metrics["dice_scale"]),
                monster=int(metrics["monster"]),
                encounter_step=int(metrics["encounter_step"]),
                level=int(metrics["level"]),
                xp=int(metrics["xp"]),
                abilities_fired=[name for bit, name in enumerate(abilities) if fired >> bit & 1],
            )
    return record


def eval_record(
    micro_step: int,
    accumulation_steps: int,
    result: dict[str, Any],
    seconds: float,
    *,
    perturbed: bool,
) -> dict[str, Any]:
    """The record of an evaluation: ``loss``, ``accuracy``, ``macro_f1``, ``examples``."""
    return {
        "kind": "eval_perturbed" if perturbed else "eval",
        "micro_step": micro_step,
        "step": micro_step // accumulation_steps,
        **result,
        "time_s": seconds,
    }


# ---------------------------------------------------------------------------- checkpoints


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run folder holds a complete checkpoint."""
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def finished_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The summary of a run that ended for good (completed or diverged), else None."""
    path = os.path.join(run_dir, SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    summary = read_json(path)
    return summary if summary.get("status") in FINAL_STATUSES else None


def _abstract_like(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Saves and restores a run's checkpoints with an orbax ``CheckpointManager``.

    A checkpoint is one step folder ``checkpoints/<micro-step>/`` with two items: ``state``
    (the :class:`~examples.bert.steps.TrainState`) and ``meta`` (JSON: the data position,
    elapsed time). Saves are asynchronous: the arrays are copied off the device before
    :meth:`save` returns (so the train step may then donate them) and written in the
    background, into a temporary folder renamed when complete, so a run killed mid-save
    leaves the previous checkpoint as the latest.

    Args:
      output_dir: the run folder.
      max_to_keep: how many of the latest checkpoints to keep (None: all).
    """

    def __init__(self, output_dir: str | os.PathLike, *, max_to_keep: int | None = 2) -> None:
        self.directory = os.path.abspath(os.path.join(output_dir, CHECKPOINT_DIR))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts saving ``state`` and ``meta`` as checkpoint ``step`` (skipped if it exists)."""
        if step in self.manager.all_steps():
            return
        items = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=items, force=True)

    def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``step`` into the structure, dtypes and shardings of ``like``.

        Returns:
          ``(state, meta)``.
        """
        items = ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract_like(like)), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=items)
        return restored.state, dict(restored.meta)

    def close(self) -> None:
        """Waits for the saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


# ------------------------------------------------------------------- config.json, summary.json


def config_json(
    config: TrainConfig,
    *,
    model_dir: str | os.PathLike,
    dataset: ClassificationData,
    total_updates: int,
    odds: optax_dice.Odds | optax_dice.OddsEstimate | None,
) -> dict[str, Any]:
    """``config.json``: the settings, and what they amounted to on this data and machine.

    ``odds`` is None without dice, an :class:`optax_dice.Odds` (exact) or, for game mechanics
    with memory, an :class:`optax_dice.OddsEstimate`, written with its standard error.
    """
    versions = {}
    for name in ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "optax-dice"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    perturbation = {"char_drop": config.char_drop, "word_swap": config.word_swap}
    return {
        "args": config.saved(),
        "model_dir": str(model_dir),
        "data": {
            "source": dataset.source,
            "text_column": dataset.text_column,
            "label_column": dataset.label_column,
            "label_names": dataset.label_names,
            "label_to_id": {name: i for i, name in enumerate(dataset.label_names)},
            "train_examples": len(dataset.train["labels"]),
            "validation_examples": len(dataset.validation["labels"]),
            "validation_from": dataset.validation_from,
            "seq_len": dataset.seq_len,
            "majority_accuracy": dataset.majority_accuracy(),
            "perturbation": (
                {**perturbation, "seed": config.split_seed} if config.perturbed_eval else None
            ),
        },
        "optimizer": {
            "total_updates": total_updates,
            "micro_steps": total_updates * config.accumulation_steps,
            "dice": config.dice_kwargs if config.uses_dice else None,
            "dice_key": f"jax.random.fold_in(jax.random.key({config.seed}), "
            f"{optim.DICE_STREAM:#x})",
            **odds_fields(odds),
        },
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "versions": versions,
    }


def summary(
    config: TrainConfig,
    records: list[dict[str, Any]],
    *,
    dataset: ClassificationData,
    odds: optax_dice.Odds | optax_dice.OddsEstimate | None,
    out: str,
    status: str,
    micro_steps: int,
    total_updates: int,
    start: int,
    diverged_at: int | None,
    timing: dict[str, float | None],
) -> dict[str, Any]:
    """``summary.json``: how the run ended, its results (from the records), its set-up and
    its timing.

    Args:
      config: the run's settings.
      records: the metrics records (all of the run's, on process 0).
      dataset: the run's data.
      odds: the odds of its ruleset (None without dice): exact, or estimated for game
        mechanics with memory (written with the estimate's standard error).
      out: the run folder.
      status: completed, diverged, stopped or interrupted.
      micro_steps: micro-steps done; ``start``: done before this session.
      total_updates: the run's applied updates, when complete.
      diverged_at: the first micro-step with a non-finite loss, or None.
      timing: the speed and time figures, in seconds.
    """
    k = config.accumulation_steps
    face_probs = optim.natural_face_probs(config)
    plays_game = config.uses_dice and config.uses_game
    return {
        "status": status,
        "output_dir": os.path.abspath(out),
        "micro_steps": micro_steps,
        "steps": micro_steps // k,
        "total_steps": total_updates,
        "epochs": micro_steps * config.batch_size / len(dataset.train["labels"]),
        "resumed_from_micro_step": start if config.resume is not None else None,
        "diverged_at_micro_step": diverged_at,
        **_result_fields(records, diverged=status == "diverged", face_probs=face_probs),
        "majority_accuracy": dataset.majority_accuracy(),
        "mode": config.mode,
        "dice_position": config.dice_position if config.uses_dice else None,
        "dice": config.dice_kwargs if config.uses_dice else None,
        **odds_fields(odds),
        **({"game": game_summary(config, records)} if plays_game else {}),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "dtype": config.dtype,
        "batch_size": config.batch_size,
        "seq_len": dataset.seq_len,
        **timing,
    }


def last_of(records: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The last record of a kind, or an empty dict."""
    found = [r for r in records if r["kind"] == kind]
    return found[-1] if found else {}


def odds_fields(odds: optax_dice.Odds | optax_dice.OddsEstimate | None) -> dict[str, Any]:
    """The odds as ``config.json`` and ``summary.json`` write them.

    ``expected_scale`` always (None without dice); for an estimate (game mechanics with
    memory) also ``expected_scale_exact: False`` and ``odds_estimate``, every field of the
    :class:`optax_dice.OddsEstimate` (its standard error, runs, steps, seed, ...).

    Example:
      >>> odds_fields(None)
      {'expected_scale': None}
      >>> fields = odds_fields(optax_dice.odds(threshold=12, experience=True, steps=10, runs=2))
      >>> fields["expected_scale_exact"], sorted(fields["odds_estimate"])[:3]
      (False, ['encounters_per_1000', 'exact', 'expected_scale'])
    """
    if odds is None:
        return {"expected_scale": None}
    if isinstance(odds, optax_dice.OddsEstimate):
        return {
            "expected_scale": odds.expected_scale,
            "expected_scale_exact": False,
            "odds_estimate": dataclasses.asdict(odds),
        }
    return {"expected_scale": odds.expected_scale}


def game_summary(config: TrainConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The game's part of ``summary.json``, counted from the train records that rolled.

    Args:
      config: the run's settings (``character``, ``encounter_chance``, ``experience``).
      records: the metrics records, every rolled train record carrying the game fields of
        :func:`train_record`.

    Returns:
      ``character``, ``encounter_chance``, ``experience``; ``abilities_fired`` (how many
      rolls fired each of the class's abilities, by name); ``encounters`` (how many times
      each monster appeared, by name: a roll with ``encounter_step`` 1, so that a monster
      that appears again right after it retreated counts twice); ``monster_steps`` (the
      rolls each monster acted on); ``final_level`` and ``final_xp`` (after the last roll;
      level 1 and 0 XP before any).

    Example:
      >>> from examples.bert.train_config import TrainConfig
      >>> rolls = [
      ...     {"kind": "train", "rolled": True, "monster": m, "encounter_step": e,
      ...      "level": 1, "xp": x, "abilities_fired": f}
      ...     for m, e, x, f in [(-1, 0, 0, []), (1, 1, 130, ["Rage"]), (1, 2, 260, [])]
      ... ]
      >>> out = game_summary(TrainConfig(character="barbarian", encounter_chance=0.5), rolls)
      >>> out["abilities_fired"], out["encounters"]["Loss Dragon"], out["final_xp"]
      ({'Rage': 1, 'Reckless Attack': 0}, 1, 260)
    """
    rolls = [r for r in records if r["kind"] == "train" and r.get("rolled")]
    fired = dict.fromkeys(game.ABILITIES[config.character], 0)
    encounters = dict.fromkeys(game.MONSTERS, 0)
    steps = dict.fromkeys(game.MONSTERS, 0)
    for r in rolls:
        for name in r["abilities_fired"]:
            fired[name] += 1
        if r["monster"] >= 0:
            name = game.MONSTERS[r["monster"]]
            steps[name] += 1
            encounters[name] += r["encounter_step"] == 1
    last = rolls[-1] if rolls else {"level": 1, "xp": 0}
    return {
        "character": config.character,
        "encounter_chance": config.encounter_chance,
        "experience": config.experience,
        "abilities_fired": fired,
        "encounters": encounters,
        "monster_steps": steps,
        "final_level": last["level"],
        "final_xp": last["xp"],
    }


def _result_fields(
    records: list[dict[str, Any]], *, diverged: bool, face_probs: np.ndarray | None
) -> dict[str, Any]:
    """The summary's fields that the metrics give: the final (and perturbed) evaluation, the
    best accuracy, the last training loss and the rolls. A diverged run has no final
    evaluation: an earlier one is not its result. ``face_probs``: the die's natural faces'
    odds (None without dice)."""
    sides = None if face_probs is None else len(face_probs)
    final = {} if diverged else last_of(records, "eval")
    perturbed = last_of(records, "eval_perturbed")
    rolls = [r for r in records if r["kind"] == "train" and r.get("rolled")]
    return {
        "eval_loss": final.get("loss"),
        "eval_accuracy": final.get("accuracy"),
        "eval_macro_f1": final.get("macro_f1"),
        "eval_examples": final.get("examples"),
        "best_eval_accuracy": max(
            (r["accuracy"] for r in records if r["kind"] == "eval"), default=None
        ),
        "perturbed_accuracy": perturbed.get("accuracy"),
        "perturbed_macro_f1": perturbed.get("macro_f1"),
        "perturbed_loss": perturbed.get("loss"),
        "train_loss_last": last_of(records, "train").get("loss"),
        "rolls": len(rolls),
        "mean_scale": float(np.mean([r["scale"] for r in rolls])) if rolls else None,
        "natural_counts": (
            np.bincount([r["natural"] for r in rolls], minlength=sides + 1)[1:].tolist()
            if sides is not None and rolls
            else None
        ),
    }
