"""A finished run's model, back from its folder (``config.json`` and the latest checkpoint),
with no data loaded and no optimizer built: ``load_final_model(workdir)``."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from examples.bert import records, rundir
from examples.bert.config import BertConfig
from examples.bert.model import BertForSequenceClassification
from examples.bert.train_config import TrainConfig
from optax_dice import key_from_seed


class RestoreError(ValueError):
    """The folder holds no run whose model can be restored; the message says why."""


def load_final_model(
    workdir: str | os.PathLike,
) -> tuple[BertForSequenceClassification, TrainConfig]:
    """The model of the run in ``workdir``, at its latest checkpoint, and its settings.

    Args:
      workdir: a run folder (a finished run's: its last checkpoint is its final model).

    Returns:
      ``(model, config)``: the model in evaluation mode, float32 parameters, the run's dtype.

    Raises:
      RestoreError: no ``config.json``, or no checkpoint, in ``workdir``.
    """
    path = os.path.join(workdir, records.CONFIG_FILE)
    if not os.path.isfile(path):
        raise RestoreError(f"{workdir} holds no run ({records.CONFIG_FILE} is missing).")
    description = records.read_json(path)
    config = TrainConfig.from_dict({k: v for k, v in description["args"].items() if k in _FIELDS})
    num_labels = len(description["data"]["label_names"])
    bert_config = BertConfig.from_json(os.path.join(description["model_dir"], "config.json"))
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32

    def create() -> BertForSequenceClassification:
        return BertForSequenceClassification(
            bert_config, num_labels, dtype=dtype, rngs=nnx.Rngs(key_from_seed(config.seed))
        )

    graphdef, params, rest = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    saved = _restore_latest(workdir)
    nnx.replace_by_pure_dict(params, _pure(saved["params"]))
    nnx.replace_by_pure_dict(rest, _pure(saved["model_state"]))
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model, config


def _restore_latest(workdir: str | os.PathLike) -> dict[str, Any]:
    """The latest checkpoint's train state, as nested dicts of arrays."""
    ckpt = rundir.Checkpointer(workdir, max_to_keep=None)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise RestoreError(f"{workdir} holds no checkpoint to restore the model from.")
        with jax.transfer_guard_device_to_host("allow"):
            return ckpt.restore(step)[0]
    finally:
        ckpt.close()


def _pure(tree: Any) -> Any:
    """A saved ``nnx.State`` (variables as ``{"value": array}``) as a pure dict of arrays."""
    if isinstance(tree, dict):
        if set(tree) == {"value"}:
            return tree["value"]
        return {k: _pure(v) for k, v in tree.items()}
    return tree


_FIELDS = {name for name in TrainConfig.__dataclass_fields__}
