"""A run's records, typed and defined once: the lines of ``metrics.jsonl`` (:class:`TrainRecord`,
:class:`EvalRecord`) and ``summary.json`` (:class:`Summary`), read and written only here.

``micro_step`` counts micro-batches done, ``step`` applied updates done. All JSON is strict (a
non-finite loss is ``null``). Reading records starts no JAX backend.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from optax_dice import game

if TYPE_CHECKING:
    from examples.bert.train_config import TrainConfig

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"

TRAIN, EVAL, EVAL_PERTURBED = "train", "eval", "eval_perturbed"
Status = Literal["completed", "diverged", "stopped", "interrupted"]
FINAL_STATUSES = ("completed", "diverged")


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN).

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` of ``value``: always valid, strict JSON."""
    return json.dumps(strict_json(value), allow_nan=False, default=_jsonable, **kwargs)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Writes ``data`` as indented, strict JSON, atomically (through a renamed temporary)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(dumps(data, indent=2, sort_keys=False))
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON file."""
    with open(path) as f:
        return json.load(f)


@dataclasses.dataclass(frozen=True)
class TrainRecord:
    """One micro-step: its loss (None when not finite); on a roll, the roll's fields
    (``scaled_loss``: the judged loss x scale); with the game, the game's state after it
    (``dice_scale`` the rule's part of ``scale``, ``monster`` -1 for none)."""

    micro_step: int
    step: int
    loss: float | None
    grad_norm: float | None
    lr: float
    applied: bool
    rolled: bool
    natural: int | None = None
    total: int | None = None
    scale: float | None = None
    scaled_loss: float | None = None
    dice_scale: float | None = None
    monster: int | None = None
    encounter_step: int | None = None
    level: int | None = None
    xp: int | None = None
    abilities_fired: tuple[str, ...] | None = None
    kind: str = TRAIN

    # The roll's fields and the game's: left out of the line when None.
    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "natural", "total", "scale", "scaled_loss",
        "dice_scale", "monster", "encounter_step", "level", "xp", "abilities_fired",
    )  # fmt: skip

    @property
    def has_game(self) -> bool:
        """Whether the record carries the game's state."""
        return self.level is not None

    def to_json(self) -> dict[str, Any]:
        """The line of ``metrics.jsonl`` (the roll's and game's fields only when present)."""
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "kind" and not (value is None and f.name in self.OPTIONAL):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One evaluation, on the validation split (``"eval"``) or its perturbed copy."""

    micro_step: int
    step: int
    loss: float | None
    accuracy: float
    macro_f1: float
    examples: int
    time_s: float
    kind: str = EVAL

    @property
    def perturbed(self) -> bool:
        """Whether it is the evaluation on the perturbed copy."""
        return self.kind == EVAL_PERTURBED

    def to_json(self) -> dict[str, Any]:
        """The line of ``metrics.jsonl``."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


#: A line of ``metrics.jsonl``.
Record = TrainRecord | EvalRecord


def record_from_json(line: dict[str, Any]) -> Record:
    """A record from one line of ``metrics.jsonl`` (unknown keys are ignored)."""
    cls = TrainRecord if line["kind"] == TRAIN else EvalRecord
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in line.items() if k in names}
    if values.get("abilities_fired") is not None:
        values["abilities_fired"] = tuple(values["abilities_fired"])
    return cls(**values)


def read_metrics(workdir: str | os.PathLike) -> list[Record]:
    """The records of a run folder's ``metrics.jsonl`` (or of that file); an incomplete last
    line (a killed run's) is skipped, a missing file has none."""
    path = os.fspath(workdir)
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    records: list[Record] = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                records.append(record_from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError):
                break
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl``.

    Args:
      path: the file.
      resume_micro_step: resuming from this micro-step's checkpoint: the records after it are
        dropped first, so the file reads as if the run had never stopped.
    """

    def __init__(self, path: str | os.PathLike, *, resume_micro_step: int | None = None) -> None:
        self.path = os.fspath(path)
        if resume_micro_step is not None:
            kept = [r for r in read_metrics(self.path) if r.micro_step <= resume_micro_step]
            with open(self.path, "w") as f:
                f.writelines(dumps(r.to_json()) + "\n" for r in kept)
        self._file = open(self.path, "a")

    def write(self, records: Iterable[Record]) -> None:
        """Appends records and flushes."""
        self._file.writelines(dumps(r.to_json()) + "\n" for r in records)
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


def train_record(
    micro_step: int,
    metrics: dict[str, Any],
    accumulation_steps: int,
    *,
    loss_rolled: float,
    abilities: Sequence[str] | None = None,
) -> TrainRecord:
    """The record of one micro-step from the train step's fetched metrics.

    Args:
      micro_step: micro-steps done.
      metrics: the step's metrics, on the host (``rolled``: whether the dice rolled).
      accumulation_steps: micro-batches per applied update.
      loss_rolled: the loss the roll judged (the update's mean when it rolls per update).
      abilities: with the game, the class's abilities by bit of the state's ``fired``.
    """
    k = accumulation_steps
    rolled = bool(metrics["rolled"])
    base = dict(
        micro_step=micro_step, step=micro_step // k, loss=_finite(metrics["loss"]),
        grad_norm=_finite(metrics["grad_norm"]), lr=float(metrics["lr"]),
        applied=micro_step % k == 0, rolled=rolled,
    )  # fmt: skip
    if not rolled:
        return TrainRecord(**base)
    scale = float(metrics["scale"])
    roll = dict(
        natural=int(metrics["natural"]), total=int(metrics["total"]), scale=scale,
        scaled_loss=_finite(loss_rolled * scale),
    )  # fmt: skip
    if abilities is None:
        return TrainRecord(**base, **roll)
    fired = int(metrics["fired"])
    return TrainRecord(
        **base, **roll,
        dice_scale=float(metrics["dice_scale"]), monster=int(metrics["monster"]),
        encounter_step=int(metrics["encounter_step"]), level=int(metrics["level"]),
        xp=int(metrics["xp"]),
        abilities_fired=tuple(name for bit, name in enumerate(abilities) if fired >> bit & 1),
    )  # fmt: skip


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def eval_record(
    micro_step: int,
    accumulation_steps: int,
    result: dict[str, Any],
    seconds: float,
    *,
    perturbed: bool,
) -> EvalRecord:
    """The record of an evaluation: ``loss``, ``accuracy``, ``macro_f1``, ``examples``."""
    return EvalRecord(
        micro_step, micro_step // accumulation_steps, _finite(result["loss"]),
        result["accuracy"], result["macro_f1"], result["examples"], seconds,
        EVAL_PERTURBED if perturbed else EVAL,
    )  # fmt: skip


def train_records(records: Iterable[Record]) -> list[TrainRecord]:
    """The train records."""
    return [r for r in records if isinstance(r, TrainRecord)]


def rolls(records: Iterable[Record]) -> list[TrainRecord]:
    """The train records of the micro-steps that rolled."""
    return [r for r in train_records(records) if r.rolled]


def evals(records: Iterable[Record], *, perturbed: bool = False) -> list[EvalRecord]:
    """The evaluations on the validation split (or on its perturbed copy)."""
    return [r for r in records if isinstance(r, EvalRecord) and r.perturbed == perturbed]


@dataclasses.dataclass(frozen=True)
class GameSummary:
    """The game's part of the summary: rolls that fired each ability, each monster's
    appearances and the rolls it acted on, the level and XP after the last roll."""

    character: str | None
    encounter_chance: float
    experience: bool
    abilities_fired: dict[str, int]
    encounters: dict[str, int]
    monster_steps: dict[str, int]
    final_level: int
    final_xp: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """``summary.json``: how a run ended, its results, set-up and timing. ``eval_*`` is the
    final evaluation (None when diverged); the ``OPTIONAL`` fields appear only when set."""

    status: Status
    output_dir: str
    micro_steps: int
    steps: int
    total_steps: int
    epochs: float
    resumed_from_micro_step: int | None
    diverged_at_micro_step: int | None
    eval_loss: float | None
    eval_accuracy: float | None
    eval_macro_f1: float | None
    eval_examples: int | None
    best_eval_accuracy: float | None
    perturbed_accuracy: float | None
    perturbed_macro_f1: float | None
    perturbed_loss: float | None
    train_loss_last: float | None
    rolls: int
    mean_scale: float | None
    natural_counts: list[int] | None
    majority_accuracy: float
    mode: str
    dice_position: str | None
    dice: dict[str, Any] | None
    expected_scale: float | None
    devices: int
    processes: int
    platform: str
    dtype: str
    batch_size: int
    seq_len: int
    first_step_s: float | None = None
    steady_steps_per_s: float | None = None
    steady_examples_per_s: float | None = None
    eval_time_s: float | None = None
    train_time_s: float | None = None
    wall_time_s: float | None = None
    expected_scale_exact: bool | None = None
    odds_estimate: dict[str, Any] | None = None
    game: GameSummary | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("expected_scale_exact", "odds_estimate", "game")

    @property
    def finished(self) -> bool:
        """Whether the run ended for good (completed or diverged)."""
        return self.status in FINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        """``summary.json``'s object (strict JSON: non-finite numbers as None)."""
        data, out = dataclasses.asdict(self), {}
        for name, value in data.items():
            if name == "devices":  # the optional fields sit between the odds and the machine
                out.update((k, data[k]) for k in self.OPTIONAL if data[k] is not None)
            if name not in self.OPTIONAL:
                out[name] = value
        return strict_json(out)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        """A summary from ``summary.json``'s object (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("game") is not None:
            values["game"] = GameSummary(**values["game"])
        return cls(**values)


def read_summary(workdir: str | os.PathLike) -> Summary | None:
    """The summary in a run folder, or None when it has none (or an unreadable one)."""
    path = os.path.join(workdir, SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        return Summary.from_json(read_json(path))
    except (json.JSONDecodeError, TypeError, OSError):
        return None


def read_status(workdir: str | os.PathLike) -> str | None:
    """The ``status`` of a run folder's ``summary.json`` (None without a readable one)."""
    try:
        status = read_json(os.path.join(workdir, SUMMARY_FILE)).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def write_summary(workdir: str | os.PathLike, summary: Summary) -> None:
    """Writes ``summary.json`` (atomically)."""
    write_json(os.path.join(workdir, SUMMARY_FILE), summary.to_json())


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What a summary says besides the records: ``odds`` (:func:`odds_fields`), the machine
    and ``timing`` (the summary's ``*_s`` fields)."""

    output_dir: str
    train_examples: int
    majority_accuracy: float
    seq_len: int
    odds: dict[str, Any]
    devices: int
    processes: int
    platform: str
    timing: dict[str, float | None]


def summarize(
    config: TrainConfig,
    records: Sequence[Record],
    facts: RunFacts,
    *,
    status: Status,
    micro_steps: int,
    total_updates: int,
    start: int | None,
    diverged_at: int | None,
    face_probs: np.ndarray | None,
) -> Summary:
    """The summary of a run from its settings, all its records and its facts.

    Args:
      config: the run's settings.
      records: every metrics record of the run.
      facts: its set-up, machine and timing.
      status: how it ended.
      micro_steps: micro-steps done.
      total_updates: the run's applied updates, when complete.
      start: micro-steps done before this session when resumed (None for a fresh run).
      diverged_at: the first micro-step with a non-finite loss, or None.
      face_probs: the exact odds of the die's natural faces (None without dice).
    """
    k = config.accumulation_steps
    final = None if status == "diverged" else (evals(records) or [None])[-1]
    perturbed = (evals(records, perturbed=True) or [None])[-1]
    train = train_records(records)
    rolled = rolls(records)
    sides = None if face_probs is None else len(face_probs)
    plays_game = config.uses_dice and config.uses_game
    return Summary(
        status=status, output_dir=os.path.abspath(facts.output_dir), micro_steps=micro_steps,
        steps=micro_steps // k, total_steps=total_updates,
        epochs=micro_steps * config.batch_size / facts.train_examples,
        resumed_from_micro_step=start, diverged_at_micro_step=diverged_at,
        eval_loss=_get(final, "loss"), eval_accuracy=_get(final, "accuracy"),
        eval_macro_f1=_get(final, "macro_f1"), eval_examples=_get(final, "examples"),
        best_eval_accuracy=max((r.accuracy for r in evals(records)), default=None),
        perturbed_accuracy=_get(perturbed, "accuracy"),
        perturbed_macro_f1=_get(perturbed, "macro_f1"), perturbed_loss=_get(perturbed, "loss"),
        train_loss_last=train[-1].loss if train else None, rolls=len(rolled),
        mean_scale=float(np.mean([r.scale for r in rolled])) if rolled else None,
        natural_counts=(
            np.bincount([r.natural for r in rolled], minlength=sides + 1)[1:].tolist()
            if sides is not None and rolled else None
        ),
        majority_accuracy=facts.majority_accuracy, mode=config.mode,
        dice_position=config.dice_position if config.uses_dice else None,
        dice=config.dice_kwargs if config.uses_dice else None,
        **facts.odds, devices=facts.devices, processes=facts.processes,
        platform=facts.platform, dtype=config.dtype, batch_size=config.batch_size,
        seq_len=facts.seq_len, **facts.timing,
        game=game_summary(config, records) if plays_game else None,
    )  # fmt: skip


def _get(record: EvalRecord | None, name: str) -> Any:
    return None if record is None else getattr(record, name)


def odds_fields(odds: Any) -> dict[str, Any]:
    """The odds as ``config.json`` and ``summary.json`` write them: ``expected_scale``, and
    for an estimate also ``expected_scale_exact: False`` and ``odds_estimate`` (its fields).

    Args:
      odds: None, an :class:`optax_dice.Odds` or an :class:`optax_dice.OddsEstimate`.

    Example:
      >>> odds_fields(None)
      {'expected_scale': None}
    """
    out = {"expected_scale": None if odds is None else odds.expected_scale}
    if odds is not None and not getattr(odds, "exact", True):
        out.update(expected_scale_exact=False, odds_estimate=dataclasses.asdict(odds))
    return out


def game_summary(config: TrainConfig, records: Sequence[Record]) -> GameSummary:
    """The game's part of the summary, counted from the train records that rolled.

    Args:
      config: the run's settings.
      records: the metrics records; every roll carries the game's fields.

    Example:
      >>> from examples.bert.train_config import TrainConfig
      >>> recs = [
      ...     TrainRecord(micro_step=i + 1, step=i + 1, loss=0.5, grad_norm=1.0, lr=1e-3,
      ...                 applied=True, rolled=True, natural=10, total=12, scale=0.5,
      ...                 scaled_loss=0.25, dice_scale=0.5, monster=m, encounter_step=e,
      ...                 level=1, xp=x, abilities_fired=f)
      ...     for i, (m, e, x, f) in enumerate([(-1, 0, 0, ()), (1, 1, 130, ("Rage",)),
      ...                                       (1, 2, 260, ())])
      ... ]
      >>> out = game_summary(TrainConfig(character="barbarian", encounter_chance=0.5), recs)
      >>> out.abilities_fired, out.encounters["Loss Dragon"], out.final_xp
      ({'Rage': 1, 'Reckless Attack': 0}, 1, 260)
    """
    rolled = rolls(records)
    fired = dict.fromkeys(game.ABILITIES[config.character], 0)
    encounters = dict.fromkeys(game.MONSTERS, 0)
    steps = dict.fromkeys(game.MONSTERS, 0)
    for r in rolled:
        for name in r.abilities_fired or ():
            fired[name] += 1
        if r.monster is not None and r.monster >= 0:
            name = game.MONSTERS[r.monster]
            steps[name] += 1
            encounters[name] += r.encounter_step == 1
    return GameSummary(
        character=config.character,
        encounter_chance=config.encounter_chance,
        experience=config.experience,
        abilities_fired=fired,
        encounters=encounters,
        monster_steps=steps,
        final_level=rolled[-1].level if rolled else 1,
        final_xp=rolled[-1].xp if rolled else 0,
    )
