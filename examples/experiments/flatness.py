"""Weight-space probes of a trained model: relative weight noise and the line between two models.

:func:`perturb_weights` moves every row of every weight matrix by a share ``sigma`` of its norm,
in a random direction (the filter-normalised perturbation of Li et al., 2018): a row is what
feeds one unit, the column ``kernel[..., j]`` of a dense layer or one token's embedding; biases
and LayerNorm are kept. :func:`interpolate` is the line ``(1 - alpha) * a + alpha * b`` between
two parameter sets (Goodfellow et al., 2015). Both map the ``nnx.Param`` state of
:func:`examples.bert.steps.split_model` to a state of the same structure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KERNEL, EMBEDDING = "kernel", "embedding"  # the leaf names of nnx.Linear's and nnx.Embed's


def matrix_kind(path: tuple[Any, ...]) -> str | None:
    """``"kernel"`` or ``"embedding"`` for a weight matrix's tree path, else None."""
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    for name in reversed(names):
        if name in (KERNEL, EMBEDDING):
            return name
    return None


def _row_norms(w: jax.Array, kind: str) -> jax.Array:
    # kernel [..., out]: a row per output unit; embedding [n, d]: per token (kept dims)
    axes = tuple(range(w.ndim - 1)) if kind == KERNEL else (w.ndim - 1,)
    return jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))


@jax.jit
def perturb_weights(params: Any, sigma: jax.Array | float, key: jax.Array) -> Any:
    """Every row ``r`` of every weight matrix moved to ``r + sigma * ||r|| * e / ||e||``,
    ``e ~ N(0, I)`` drawn per row; other leaves unchanged.

    Args:
      params: a parameter tree (an ``nnx.State`` or any pytree).
      sigma: the relative size of the perturbation (0 leaves ``params`` unchanged).
      key: the noise's PRNG key; every matrix gets its own key folded in from its position.

    Returns:
      The perturbed tree, same structure, shapes and dtypes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = {"dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
      >>> p = perturb_weights(w, 0.1, jax.random.key(0))
      >>> d = p["dense"]["kernel"] - w["dense"]["kernel"]
      >>> [round(float(x), 4) for x in jnp.linalg.norm(d, axis=0) / 2.0]  # ||row|| = 2
      [0.1, 0.1]
      >>> bool((p["dense"]["bias"] == w["dense"]["bias"]).all())
      True
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = []
    for i, (path, w) in enumerate(flat):
        kind = matrix_kind(path)
        if kind is None or jnp.ndim(w) < 2:
            leaves.append(w)
            continue
        eps = jax.random.normal(jax.random.fold_in(key, i), w.shape, jnp.float32)
        direction = eps / _row_norms(eps, kind)
        moved = w.astype(jnp.float32) + sigma * _row_norms(w, kind) * direction
        leaves.append(moved.astype(w.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


@jax.jit
def interpolate(a: Any, b: Any, alpha: jax.Array | float) -> Any:
    """The point ``(1 - alpha) * a + alpha * b`` of the line through two parameter trees.

    Args:
      a: the parameters at ``alpha = 0``.
      b: the parameters at ``alpha = 1``, of the same structure.
      alpha: where on the line (values outside [0, 1] extrapolate).

    Returns:
      The interpolated tree, in ``a``'s dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> interpolate({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 1.5)["w"].tolist()
      [1.5, 1.5]
    """
    return jax.tree.map(lambda x, y: ((1 - alpha) * x + alpha * y).astype(x.dtype), a, b)


# ------------------------------------------------------------------ a finished run, probed


def probe_config(config: Any) -> Any:
    """The run's TrainConfig as the probes load its data: every validation example (the run
    may have evaluated a subsample: ``--max-eval-samples``), unperturbed, clean labels."""
    import dataclasses

    return dataclasses.replace(config, perturbed_eval=False, label_noise=0.0, max_eval_samples=0)


def sorted_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, multiple: int = 8
) -> list[dict[str, np.ndarray]]:
    """The split in batches of examples of similar length, each cut to its longest example
    (rounded up to ``multiple`` tokens): the same predictions as the padded batches, in about
    two thirds of the time on the tweets (mean 33 of 48 tokens), a few shapes to compile.

    Args:
      arrays: a tokenised split (:data:`examples.bert.data.ARRAY_KEYS`), one process's.
      batch_size: examples per batch (the last is padded, with weight 0).
      multiple: the token counts the batches are cut to are multiples of this.

    Returns:
      The batches, shortest first, each with ``weights``.

    Example:
      >>> import numpy as np
      >>> mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
      >>> split = {"input_ids": mask * 7, "attention_mask": mask,
      ...          "token_type_ids": 0 * mask, "labels": np.array([0, 1, 2])}
      >>> [(b["labels"].tolist(), b["input_ids"].shape[1]) for b in sorted_batches(split, 2, 2)]
      [([1, 2], 2), ([0, 1], 4)]
    """
    from examples.bert import data

    order = np.argsort(arrays["attention_mask"].sum(axis=1), kind="stable")
    batches = []
    for batch in data.eval_batches({k: arrays[k][order] for k in data.ARRAY_KEYS}, batch_size):
        longest = int(batch["attention_mask"].sum(axis=1).max())
        cut = min(-(-longest // multiple) * multiple, batch["attention_mask"].shape[1])
        batches.append({k: v[:, :cut] if v.ndim == 2 else v for k, v in batch.items()})
    return batches


class FinalModel:
    """A finished run's final model (:func:`examples.experiments.runner.load_model`), with
    every example of its validation split (:func:`probe_config`) and its eval step."""

    def __init__(self, run_dir: str) -> None:
        from examples.bert import parallel, steps, train, weights
        from examples.experiments import runner

        with jax.transfer_guard_device_to_host("allow"):
            model, config = runner.load_model(run_dir)
            dataset = train.load_data(probe_config(config), weights.resolve_model_dir(config.model))
            _, eval_graphdef, self.params, self.model_state = steps.split_model(model)
        self.validation, self.num_labels = dataset.validation, dataset.num_labels
        self.majority = dataset.majority_accuracy()
        self.mesh = parallel.make_mesh()
        batch_size = config.eval_batch_size or config.batch_size * 8
        self.batches = sorted_batches(self.validation, batch_size)
        self.eval_step = steps.make_eval_step(eval_graphdef, self.num_labels, self.mesh)

    def evaluate(self, params: Any) -> dict[str, Any]:
        """Loss, accuracy and macro-F1 of ``params`` on the whole validation split."""
        from examples.bert import run_loop, steps

        state = steps.TrainState(None, params, self.model_state, None)
        with jax.transfer_guard_device_to_host("allow"):
            return run_loop.evaluate_batches(
                self.eval_step, state, self.batches, self.num_labels, self.mesh
            )


def weight_noise(
    model: FinalModel,
    sigmas: list[float],
    draws: int,
    done: Mapping[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Accuracy on every validation example under :func:`perturb_weights`, for each sigma and
    draw; draw ``d`` uses key ``d``, so it is one random direction, the same at every sigma and
    in every run (common random numbers: differences between sigmas and between runs are not
    blurred by different draws). ``clean`` is the unperturbed accuracy, ``majority`` the
    majority class's share.

    Args:
      model: the finished run's model (or anything with ``params``, ``validation``,
        ``majority`` and ``evaluate``).
      sigmas: the relative sizes of the perturbation.
      draws: the draws per sigma.
      done: an earlier result on the same split: its draws are not measured again (a sigma it
        stopped in goes on from its next draw; with more ``draws`` now, each sigma goes on from
        there; with fewer, its first ``draws`` are kept).
      save: called with the result so far after each draw, so that a stopped probe resumes.

    Returns:
      ``sigmas`` (those with every draw measured), ``draws``, ``examples``, ``clean``,
      ``majority`` and ``accuracy`` (sigma, as ``f"{sigma:g}"``, -> the accuracy of each draw).
    """
    result = {"sigmas": [], "draws": draws, "examples": len(model.validation["labels"]),
              "majority": model.majority, "accuracy": {}}  # fmt: skip
    if done and done.get("examples") == result["examples"]:
        kept = {k: list(v)[:draws] for k, v in done["accuracy"].items()}
        result |= {"clean": done["clean"], "accuracy": kept}
    else:
        result["clean"] = model.evaluate(model.params)["accuracy"]

    def complete() -> list[float]:
        return [s for s in sigmas if len(result["accuracy"].get(f"{s:g}", ())) == draws]

    for sigma in sigmas:
        measured = result["accuracy"].setdefault(f"{sigma:g}", [])
        for d in range(len(measured), draws):
            moved = perturb_weights(model.params, sigma, jax.random.key(d))
            measured.append(model.evaluate(moved)["accuracy"])
            result["sigmas"] = complete()
            if save is not None:
                save({**result, "accuracy": {k: list(v) for k, v in result["accuracy"].items()}})
    result["sigmas"] = complete()
    return result


def line(
    a: FinalModel,
    b: FinalModel,
    alphas: list[float],
    done: Mapping[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[float]]:
    """Validation loss and accuracy along ``(1 - alpha) a + alpha b``, on ``a``'s validation
    split.

    Args:
      a: the model at ``alpha = 0``.
      b: the model at ``alpha = 1``.
      alphas: the points, in order.
      done: an earlier, unfinished line between the same models: its points are kept.
      save: called with the line so far after each point, so that a stopped probe resumes.

    Returns:
      ``alphas``, ``loss`` and ``accuracy``, lists in the order of ``alphas``.
    """
    kept = zip(*(done[k] for k in ("alphas", "loss", "accuracy")), strict=True) if done else ()
    points = {t: (loss, acc) for t, loss, acc in kept}
    result: dict[str, list[float]] = {}
    for alpha in alphas:
        if alpha not in points:
            p = a.evaluate(interpolate(a.params, b.params, alpha))
            points[alpha] = (p["loss"], p["accuracy"])
        have = [t for t in alphas if t in points]
        result = {"alphas": have, "loss": [points[t][0] for t in have],
                  "accuracy": [points[t][1] for t in have]}  # fmt: skip
        if save is not None:
            save(result)
    return result
