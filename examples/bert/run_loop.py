"""The training loop of :mod:`examples.bert.train`: the log, the stop flag, the evaluation,
the checkpoints. The step's metrics stay on the device until a log point, when
:class:`TrainLog` fetches them in one transfer and writes their records.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from examples.bert import data, optim, parallel, records, rundir, steps
from optax_dice import game

if TYPE_CHECKING:
    from examples.bert.train import Loaded
    from examples.bert.train_config import TrainConfig


def allow_transfers() -> contextlib.AbstractContextManager:
    """Allows the host round-trips that are meant (set-up, evaluation, checkpoints) under a
    caller's transfer guard."""
    return jax.transfer_guard_device_to_host("allow")


class LoopEnd(NamedTuple):
    """How the loop ended; ``step`` and ``start``: micro-steps done, and done before;
    ``stop_asked``: a SIGTERM came, perhaps too late to stop the run (in its last step, its
    final evaluation or its last save), which then ended anyway."""

    status: records.Status
    step: int
    start: int
    resumed: bool
    eval_s: float
    t_start: float
    stop_asked: bool = False


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
        """Whether to stop now; several processes agree at log points only (a collective)."""
        if jax.process_count() == 1:
            return self.requested
        if not log_point:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.asarray(flags).any())

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class TensorBoard:
    """Writes the records as TensorBoard scalars (``train/``, ``dice/``, ``eval/``,
    ``eval_perturbed/``) into ``<run>/tensorboard``, by micro-step, with ``tensorboardX``."""

    def __init__(self, out: str) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=os.path.join(out, rundir.TENSORBOARD_DIR))

    def write(self, batch: list[records.Record]) -> None:
        """Adds the records' scalars and flushes."""
        for r in batch:
            if isinstance(r, records.EvalRecord):
                for name in ("loss", "accuracy", "macro_f1"):
                    self._scalar(f"{r.kind}/{name}", getattr(r, name), r.micro_step)
                continue
            for name in ("loss", "grad_norm", "lr"):
                self._scalar(f"train/{name}", getattr(r, name), r.micro_step)
            if r.rolled:
                for name in ("scale", "natural", "scaled_loss"):
                    self._scalar(f"dice/{name}", getattr(r, name), r.micro_step)
        self.writer.flush()

    def _scalar(self, tag: str, value: float | None, step: int) -> None:
        if value is not None:  # a non-finite loss is written as null in metrics.jsonl, not here
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Closes the event file."""
        self.writer.close()


class TrainLog:
    """Holds the step's metrics on the device until a log point, then fetches them at once,
    writes their records, times the steady steps and moves the progress bar.

    Args:
      config: the run's settings.
      start: micro-steps done before this session.
      total: micro-steps of the whole run.
      out: the run folder; process 0 appends to its ``metrics.jsonl``.
    """

    def __init__(self, config: TrainConfig, start: int, total: int, out: str) -> None:
        self.config = config
        self.is_main = jax.process_index() == 0
        path = os.path.join(out, records.METRICS_FILE)
        self.file = records.MetricsLog(path, resume_micro_step=start) if self.is_main else None
        self.board = TensorBoard(out) if self.is_main and config.tensorboard else None
        self.pending: list[dict[str, jax.Array]] = []
        self.abilities = (
            game.ABILITIES[config.character] if config.uses_dice and config.uses_game else None
        )
        self.records: list[records.Record] = []  # this session's
        self.diverged_at: int | None = None  # the first micro-step with a non-finite loss
        self.diverged_loss = math.nan
        # The last k losses: at a roll per accumulated update, those it judges (their mean).
        k = config.accumulation_steps
        self.recent_losses: collections.deque[float] = collections.deque(maxlen=k)
        if self.is_main and start % k:
            previous = [r.loss for r in records.train_records(records.read_metrics(path))]
            self.recent_losses.extend(np.nan if x is None else x for x in previous[-(start % k) :])
        self.first_step_s: float | None = None
        self.steady_s, self.steady_steps, self.window_steps = 0.0, 0, 0
        self.t_loop = self.t_window = time.perf_counter()
        self.bar = tqdm(
            total=total, initial=start, disable=config.no_progress or not self.is_main,
            unit="step", dynamic_ncols=True, desc="train",
        )  # fmt: skip

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
        k, per_batch = self.config.accumulation_steps, self.config.mode == "per_mini_batch"
        batch = []
        for micro_step, m in enumerate(fetched, start=done - len(fetched) + 1):
            loss = float(m["loss"])
            if not math.isfinite(loss) and self.diverged_at is None:
                self.diverged_at, self.diverged_loss = micro_step, loss
            self.recent_losses.append(loss)
            judged = loss if per_batch else float(np.mean(self.recent_losses))
            batch.append(
                records.train_record(micro_step, m, k, loss_rolled=judged, abilities=self.abilities)
            )
        self.write(batch)
        self.bar.set_postfix(self._postfix(batch, now), refresh=False)
        self.bar.update(len(batch))
        self.restart_window()

    def _postfix(self, batch: list[records.TrainRecord], now: float) -> dict[str, str]:
        last = batch[-1]
        postfix = {"loss": f"{last.loss if last.loss is not None else math.nan:.3f}"}
        postfix["lr"] = f"{last.lr:.1e}"
        roll = next((r for r in reversed(batch) if r.rolled), None)
        if roll is not None:
            postfix["roll"] = f"{roll.natural}{roll.total - roll.natural:+d}={roll.total}"
            postfix["scale"] = f"{roll.scale:+.2f}"
            if self.config.experience:
                postfix["lvl"] = str(roll.level)
            if self.config.encounter_chance > 0:
                monster = roll.monster
                postfix["monster"] = game.MONSTERS[monster] if monster >= 0 else "-"
        if self.window_steps:
            rate = self.window_steps / max(now - self.t_window, 1e-9)
            postfix["ex/s"] = f"{rate * self.config.batch_size:.1f}"
        return postfix

    def say(self, message: str) -> None:
        """Prints on process 0, above the progress bar."""
        if self.is_main:
            self.bar.write(message)

    def write(self, batch: list[records.Record]) -> None:
        """Appends records to this session's, ``metrics.jsonl`` and TensorBoard's (process 0)."""
        self.records += batch
        if self.file is not None:
            self.file.write(batch)
        if self.board is not None:
            self.board.write(batch)

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
        """Closes the progress bar and the files."""
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()


def evaluate(
    eval_step: Callable[..., steps.EvalTotals],
    state: steps.TrainState,
    arrays: dict[str, np.ndarray],
    batch_size: int,
    num_labels: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
    """Loss, accuracy, macro-F1 and examples of the model on one split."""
    batches = data.eval_batches(
        arrays, batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    )
    return evaluate_batches(eval_step, state, batches, num_labels, mesh)


def evaluate_batches(
    eval_step: Callable[..., steps.EvalTotals],
    state: steps.TrainState,
    batches: Iterable[dict[str, np.ndarray]],
    num_labels: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
    """:func:`evaluate` on given batches (this process's share of each, with ``weights``)."""
    totals = steps.zero_totals(num_labels, mesh)
    sharding = parallel.batch_sharding(mesh)
    for batch in batches:
        totals = eval_step(state.params, state.model_state, parallel.put_batch(batch, sharding),
                           totals)  # fmt: skip
    return steps.classification_metrics(jax.device_get(totals))


def evaluate_and_log(
    evaluate_on: Callable[..., dict[str, Any]],
    state: steps.TrainState,
    splits: dict[str, dict[str, np.ndarray]],
    step: int,
    log: TrainLog,
) -> float:
    """Evaluates on each split, writes the records, says the results; returns the seconds."""
    k, messages, seconds = log.config.accumulation_steps, [], 0.0
    for kind, arrays in splits.items():
        t0 = time.perf_counter()
        with allow_transfers():
            result = evaluate_on(state, arrays)
        record = records.eval_record(
            step, k, result, time.perf_counter() - t0, perturbed=kind == records.EVAL_PERTURBED
        )
        log.write([record])
        seconds += record.time_s
        text = f"accuracy {record.accuracy:.4f}, macro-F1 {record.macro_f1:.4f}"
        messages.append(text if messages else f"loss {result['loss']:.4f}, {text}")
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
        "micro_step": step, "step": step // config.accumulation_steps, "epoch": epoch,
        "batch_in_epoch": index, "examples_seen": step * config.batch_size,
        "train_time_s": train_time_s,
    }  # fmt: skip
    with allow_transfers():
        ckpt.save(step, state, meta)


class _Session(NamedTuple):
    state: steps.TrainState
    start: int
    train_time_before: float
    ckpt: rundir.Checkpointer
    train_step: Callable[..., Any]
    evaluate_on: Callable[..., dict[str, Any]]


def _start(
    config: TrainConfig, run: Loaded, out: str, *, resume: bool, say: Callable[..., None]
) -> _Session:
    """The train state (a resumed run's from its latest good checkpoint) and the steps."""
    k, mesh = config.accumulation_steps, run.mesh
    with allow_transfers():
        train_graphdef, eval_graphdef, params, model_state = steps.split_model(run.model)
        state = steps.init_train_state(params, model_state, run.tx, mesh)
        del params, model_state
        ckpt = rundir.Checkpointer(out, max_to_keep=config.keep_checkpoints)
        start, meta = 0, {}
        if resume:
            try:
                state, meta, start = ckpt.restore_latest_good(state, say=say)
            except rundir.CheckpointError:
                ckpt.close()
                raise
            say(f"Resumed from the checkpoint at micro-step {start} in {ckpt.directory}.")
    train_step = steps.make_train_step(
        train_graphdef, run.tx, run.schedule, k, mesh, uses_dice=config.uses_dice,
        rolls_per_update=optim.rolls_per_update(config),
    )  # fmt: skip
    evaluate_on = functools.partial(
        evaluate, steps.make_eval_step(eval_graphdef, run.dataset.num_labels, mesh),
        batch_size=config.eval_batch_size or config.batch_size,
        num_labels=run.dataset.num_labels, mesh=mesh,
    )  # fmt: skip
    return _Session(
        state, start, float(meta.get("train_time_s", 0.0)), ckpt, train_step, evaluate_on
    )


def run_loop(
    config: TrainConfig,
    run: Loaded,
    out: str,
    *,
    resume: bool,
    t_start: float,
    say: Callable[..., None],
) -> tuple[TrainLog, LoopEnd]:
    """Trains from the start (or latest good checkpoint) to the end, a stop or a divergence,
    evaluating and saving on schedule (Ctrl-C saves where it is); returns the log and the end."""
    session = _start(config, run, out, resume=resume, say=say)
    state, start, ckpt = session.state, session.start, session.ckpt
    k, total = config.accumulation_steps, run.total_updates * config.accumulation_steps
    sharding = parallel.batch_sharding(run.mesh)
    log = TrainLog(config, start, total, out)
    clock = lambda: session.train_time_before + time.perf_counter() - log.t_loop  # noqa: E731
    save = functools.partial(save_checkpoint, ckpt, run.batches, config)
    status, step, eval_s = "completed", start, 0.0
    with StopFlag() as stop:
        try:
            while step < total:
                state, metrics = session.train_step(
                    state, parallel.put_batch(run.batches(step), sharding)
                )
                log.add(metrics)
                step += 1
                update_done, last = step % k == 0, step == total
                log_now = step % config.log_every == 0 or step == start + 1
                halt = stop.agreed(log_now) or 0 < config.stop_after <= step
                eval_now = last or (update_done and _every(step // k, config.eval_every))
                save_now = last or halt or (update_done and _every(step // k, config.save_every))
                if log_now or eval_now or save_now:
                    log.flush(step)
                if log.diverged_at is not None:
                    # No evaluation and no checkpoint of a model whose loss is NaN or inf: the
                    # last checkpoint stays the last sound state.
                    status = "diverged"
                    say(
                        f"\nThe training loss became {log.diverged_loss} at micro-step "
                        f"{log.diverged_at} (update {log.diverged_at // k}): the run diverged "
                        f"and stopped at micro-step {step}. Lower --lr (now {config.lr}) or "
                        "check the data."
                    )
                    break
                if eval_now:
                    splits = {records.EVAL: run.dataset.validation}
                    if last and run.dataset.perturbed_validation is not None:
                        splits[records.EVAL_PERTURBED] = run.dataset.perturbed_validation
                    eval_s += evaluate_and_log(session.evaluate_on, state, splits, step, log)
                if save_now:
                    save(step, state, clock())
                    log.restart_window()
                if halt and not last:
                    status = "stopped" if 0 < config.stop_after <= step else "interrupted"
                    break
        except KeyboardInterrupt:
            status = "interrupted"
            if log.pending:
                log.flush(step)
            with contextlib.suppress(Exception):
                save(step, state, clock())
        finally:
            log.close()
            with allow_transfers():
                ckpt.close()
    if status == "interrupted":
        say(f"\nInterrupted at micro-step {step}; resume with --resume {out}")
    return log, LoopEnd(status, step, start, resume, eval_s, t_start, stop.requested)


def _every(update: int, every: int) -> bool:
    return bool(every) and update % every == 0
