"""The run folder: claimed atomically (``.lock``, ``O_EXCL``) before anything is written;
``config.json`` (:func:`config_json`), the records (:mod:`examples.bert.records`),
``checkpoints/<micro-step>/`` (:class:`Checkpointer`), ``run.png`` and ``tensorboard/``.
:func:`run_status` says where a run stands (no JAX backend); :func:`resumed_config` resolves
``--resume DIR``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import re
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

from examples.bert import records
from examples.bert.flags import flag_name
from examples.bert.records import CONFIG_FILE, read_json
from examples.bert.records import write_json as write_json  # study.py and train.py use it
from examples.bert.train_config import RESUME_FLAGS, TrainConfig

if TYPE_CHECKING:
    from examples.bert.data import ClassificationData

FIGURE_FILE = "run.png"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"
RUNS_DIR = "runs"
RunStatus = Literal["missing", "unfinished", "completed", "diverged"]


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message says what to do."""


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run folder holds a complete checkpoint (a step folder of digits)."""
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def run_status(workdir: str | os.PathLike) -> RunStatus:
    """Where the run in ``workdir`` stands, from the folder itself.

    Returns:
      ``"completed"`` or ``"diverged"`` (final, per its summary); ``"unfinished"`` (a
      ``config.json`` but no final summary); ``"missing"`` (no run).

    Example:
      >>> run_status("/no/such/folder")
      'missing'
    """
    status = records.read_status(workdir)
    if status in records.FINAL_STATUSES:
        return status  # type: ignore[return-value]
    if os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        return "unfinished"
    return "missing"


def finished_summary(run_dir: str | os.PathLike) -> records.Summary | None:
    """The summary of a run that ended for good (completed or diverged), else None."""
    summary = records.read_summary(run_dir)
    return summary if summary is not None and summary.finished else None


def default_output_dir(config: TrainConfig, runs_dir: str = RUNS_DIR) -> str:
    """``runs/bert-<dataset>-<mode>-seed<seed>-<date>-<time>``; :func:`reserve` adds ``-2``,
    ``-3``, ... when another run took that name in the same second."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(str(config.dataset))).strip("_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(runs_dir, f"bert-{name or 'data'}-{config.mode}-seed{config.seed}-{stamp}")


def check_writable(out: str) -> None:
    """Raises RunFolderError, before anything is loaded, for a folder that cannot be made or
    written (a file, under a file, or without write permission)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunFolderError(f"--output-dir {out} is a file, not a folder: name a folder.")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RunFolderError(
            f"--output-dir {out}: {parent} is a file, so no folder can be made under it: "
            "name another folder."
        )
    target = out if os.path.isdir(out) else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"--output-dir {out}: {target} is not writable (permission denied): name a "
            "folder you may write to."
        )


def reserve(out: str) -> str:
    """Makes a new, empty folder ``out`` (or ``out-2``, ``out-3``, ... when taken: ``os.mkdir``
    is atomic, so two runs never get the same one); raises RunFolderError if it cannot."""
    check_writable(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    candidate, n = out, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{out}-{n}"
        except OSError as err:
            raise RunFolderError(f"--output-dir {out}: cannot make it ({err.strerror}).") from err


def claim(out: str, *, new: bool) -> str:
    """Claims the run folder for this process (made if missing; its lock created with
    ``O_EXCL``, so of two runs exactly one gets it). Release it with :func:`release`.

    Args:
      out: the folder (returned).
      new: a new run, which needs a new or empty folder (else a resumed one).

    Raises:
      RunFolderError: the folder is a file, is not empty (for a new run), cannot be made,
        or another live run holds it.
    """
    check_writable(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"--output-dir {out}: cannot make it ({err.strerror}).") from err
    _lock(out)
    if new:
        try:
            check_unused(out)
        except RunFolderError:
            release(out)
            raise
    return out


def check_unused(out: str) -> None:
    """Raises RunFolderError when ``out`` holds anything but a lock: a new run needs it empty."""
    if os.path.isdir(out) and set(os.listdir(out)) - {LOCK_FILE}:
        raise RunFolderError(
            f"--output-dir {out} exists and is not empty: choose another, or continue "
            f"that run with --resume {out}."
        )


def _lock(out: str) -> None:
    """Creates ``out/.lock`` with this process's pid and host; takes over a stale one."""
    path = os.path.join(out, LOCK_FILE)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(path)
            if owner is None:  # its process is gone: a killed run's lock
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            raise RunFolderError(
                f"--output-dir {out} is in use by another run ({owner}): wait for it, or "
                f"choose another folder (delete {path} if no run uses it)."
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise RunFolderError(f"--output-dir {out}: could not take its lock {path}.")


def _lock_owner(path: str) -> str | None:
    """Who holds a lock file ("pid N on HOST"), or None when that process is gone."""
    try:
        with open(path) as f:
            pid_text, _, host = f.read().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return "an unknown process"
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return f"process {pid} on {host}"


def release(out: str) -> None:
    """Gives up the claim on a folder (removes the lock if this process holds it)."""
    path = os.path.join(out, LOCK_FILE)
    with contextlib.suppress(OSError, ValueError):
        with open(path) as f:
            mine = int(f.read().split()[0]) == os.getpid()
        if mine:
            os.remove(path)


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _saved_settings(run: str | os.PathLike) -> dict[str, Any]:
    """The settings in a run folder's ``config.json`` that are fields (a None saved for a real
    default keeps the default); RunFolderError without a readable one."""
    path = os.path.join(run, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunFolderError(f"--resume {run}: no {CONFIG_FILE} there, not a run folder.")
    try:
        saved = dict(read_json(path)["args"])
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise RunFolderError(f"--resume {run}: its {CONFIG_FILE} is unreadable ({err}).") from err
    defaults = _defaults()
    return {
        k: v
        for k, v in saved.items()
        if k in defaults and not (v is None and defaults[k] is not None)
    }


def _differences(saved: dict[str, Any], settings: dict[str, Any], same: Any) -> list[str]:
    """The settings (but those in ``same``) that differ from a saved run's, as flags."""
    defaults = _defaults()
    return [
        f"{flag_name(k)} (the run has {saved.get(k, defaults[k])!r}, not {v!r})"
        for k, v in settings.items()
        if k not in same and v != saved.get(k, defaults[k])
    ]


def resumed_config(typed: dict[str, Any]) -> TrainConfig:
    """The config that ``--resume DIR`` continues, from ``DIR/config.json``.

    Args:
      typed: the settings typed (``resume`` among them), from
        :func:`examples.bert.train_config.typed_flags`.

    Raises:
      RunFolderError: not a run folder, a typed setting (but ``RESUME_FLAGS``) other than the
        run's, another ``--output-dir``, or nothing to resume from.
    """
    run = typed["resume"]
    saved = _saved_settings(run)
    # What was typed against the saved run: --threshold 12 against a saved 99 is a change.
    changed = _differences(saved, typed, RESUME_FLAGS)
    if changed:
        raise RunFolderError(
            f"--resume continues a run with its saved settings; drop {', '.join(changed)} "
            "(start a new run to change them)."
        )
    other = typed.get("output_dir")
    if other is not None and os.path.abspath(other) != os.path.abspath(run):
        raise RunFolderError(
            f"--resume {run} continues the run in its own folder, not in --output-dir "
            f"{other}: drop --output-dir (or give the same folder)."
        )
    if finished_summary(run) is None and not has_checkpoint(run):
        raise RunFolderError(
            f"--resume {run}: no checkpoint in {os.path.join(run, CHECKPOINT_DIR)} (it "
            "was deleted, or the run stopped before its first save), so there is nothing to "
            "resume from; start a new run with another --output-dir."
        )
    how = {k: v for k, v in typed.items() if k in RESUME_FLAGS}
    no_progress = typed.get("no_progress", False) or saved.get("no_progress", False)
    return TrainConfig(**{**saved, **how, "output_dir": run, "no_progress": no_progress})


def same_run(config: TrainConfig, workdir: str | os.PathLike) -> list[str]:
    """The settings in which ``config`` differs from the run saved in ``workdir`` (empty when
    the same, or none saved)."""
    try:
        return _differences(_saved_settings(workdir), config.saved(), ("no_progress",))
    except RunFolderError:
        return []


class CheckpointError(RuntimeError):
    """No checkpoint of a run folder could be restored; the message says which and why."""


class Checkpointer:
    """A run's orbax checkpoints: ``checkpoints/<micro-step>/`` with ``state`` (the
    :class:`~examples.bert.steps.TrainState`) and ``meta`` (JSON). Saves are asynchronous (the
    arrays are copied off the device before :meth:`save` returns, so they may be donated) and
    renamed into place when complete, so a killed save leaves the previous one the latest.

    Args:
      output_dir: the run folder.
      max_to_keep: how many of the latest checkpoints to keep (None: all).
    """

    def __init__(self, output_dir: str | os.PathLike, *, max_to_keep: int | None = 2) -> None:
        import orbax.checkpoint as ocp  # only a run that saves or restores needs orbax

        self._ocp = ocp
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
        ocp = self._ocp
        items = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=items, force=True)

    def restore(self, step: int, like: Any = None) -> tuple[Any, dict[str, Any]]:
        """``(state, meta)`` of checkpoint ``step``, shaped, typed and sharded like ``like`` (as
        saved, nested dicts of arrays, when None)."""
        import jax

        abstract = None
        if like is not None:
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
            )
        ocp = self._ocp
        items = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=items)
        return restored.state, dict(restored.meta)

    def restore_latest_good(self, like: Any, say: Any = print) -> tuple[Any, dict[str, Any], int]:
        """``(state, meta, step)`` of the latest checkpoint that restores (into ``like``);
        ``say`` names the damaged ones, which are deleted. CheckpointError when none does."""
        _quiet_closed_loop_noise()  # a failing restore's reads may call back at any time
        failed: list[str] = []
        damaged: list[int] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, like)
            except Exception as err:  # orbax and tensorstore raise many kinds: all mean damage
                failed.append(f"micro-step {step} ({_short(err)})")
                damaged.append(step)
                say(
                    f"The checkpoint at micro-step {step} in {self.directory} is damaged or "
                    f"does not match this run: {_short(err)}"
                )
                continue
            if failed:
                say(
                    f"Using the previous good checkpoint, at micro-step {step}, instead (the "
                    f"damaged one{'s' if len(damaged) > 1 else ''} deleted, to be saved again)."
                )
                for bad in damaged:
                    self.manager.delete(bad)
            return state, meta, step
        raise CheckpointError(
            f"no checkpoint in {self.directory} can be restored "
            f"({'; '.join(failed) or 'there is none'}): start a new run with another "
            "--output-dir."
        )

    def close(self) -> None:
        """Waits for the saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def _quiet_closed_loop_noise() -> None:
    """Drops the unraisable ``RuntimeError: Event loop is closed`` that tensorstore's reads in
    flight report after a failed restore (and nothing else)."""
    previous = sys.unraisablehook
    if getattr(previous, "quiet_closed_loop", False):
        return

    def hook(unraisable: Any) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.quiet_closed_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _short(err: BaseException) -> str:
    """The first line of an error, cut to 200 characters, with its type."""
    lines = str(err).strip().splitlines() or [""]
    text = lines[0][:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def config_json(
    config: TrainConfig,
    *,
    model_dir: str | os.PathLike,
    dataset: ClassificationData,
    total_updates: int,
    odds: Any,
    machine: dict[str, Any],
    dice_key: str,
) -> dict[str, Any]:
    """``config.json``: the settings, and what they amounted to on this data and machine.

    Args:
      config: the run's settings.
      model_dir: the model's folder.
      dataset: the loaded data.
      total_updates: the run's applied updates.
      odds: None, an :class:`optax_dice.Odds` or an :class:`optax_dice.OddsEstimate`.
      machine: ``devices``, ``processes`` and ``platform``.
      dice_key: how the dice's key is made, as text.
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
            "dice_key": dice_key,
            **records.odds_fields(odds),
        },
        **machine,
        "versions": versions,
    }


def data_changes(workdir: str | os.PathLike, dataset: ClassificationData) -> list[str]:
    """How the data loaded now differs from the data the run in ``workdir`` began with."""
    try:
        saved = read_json(os.path.join(workdir, CONFIG_FILE)).get("data", {})
    except (OSError, ValueError):
        return []
    now = {
        "label_names": list(dataset.label_names),
        "train_examples": len(dataset.train["labels"]),
        "validation_examples": len(dataset.validation["labels"]),
        "seq_len": dataset.seq_len,
    }
    return [
        f"{name} {saved[name]!r} then, {value!r} now"
        for name, value in now.items()
        if name in saved and saved[name] != value
    ]
