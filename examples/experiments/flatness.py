"""Weight-space probes of a trained model: relative weight noise and the line between two models.

:func:`perturb_weights` moves every row of every weight matrix by a share ``sigma`` of its norm,
in a random direction (the filter-normalised perturbation of Li et al., 2018): a row is what
feeds one unit, the column ``kernel[..., j]`` of a dense layer or one token's embedding; biases
and LayerNorm are kept. :func:`interpolate` is the line ``(1 - alpha) * a + alpha * b`` between
two parameter sets (Goodfellow et al., 2015). Both map the ``nnx.Param`` state of
:func:`examples.bert.steps.split_model` to a state of the same structure.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

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


class FinalModel:
    """A finished run's final model (:func:`examples.experiments.runner.load_model`), with the
    validation split of its own settings and its eval step."""

    def __init__(self, run_dir: str) -> None:
        import dataclasses

        from examples.bert import parallel, steps, train, weights
        from examples.experiments import runner

        with jax.transfer_guard_device_to_host("allow"):
            model, config = runner.load_model(run_dir)
            clean = dataclasses.replace(config, perturbed_eval=False, label_noise=0.0)
            dataset = train.load_data(clean, weights.resolve_model_dir(config.model))
            _, eval_graphdef, self.params, self.model_state = steps.split_model(model)
        self.validation, self.num_labels = dataset.validation, dataset.num_labels
        self.majority = dataset.majority_accuracy()
        self.mesh = parallel.make_mesh()
        self.batch_size = config.eval_batch_size or config.batch_size * 8
        self.eval_step = steps.make_eval_step(eval_graphdef, self.num_labels, self.mesh)

    def evaluate(self, params: Any) -> dict[str, Any]:
        """Loss, accuracy and macro-F1 of ``params`` on the whole validation split."""
        from examples.bert import run_loop, steps

        state = steps.TrainState(None, params, self.model_state, None)
        with jax.transfer_guard_device_to_host("allow"):
            return run_loop.evaluate(
                self.eval_step, state, self.validation, self.batch_size, self.num_labels,
                self.mesh,
            )  # fmt: skip


def weight_noise(model: FinalModel, sigmas: list[float], draws: int) -> dict[str, Any]:
    """Accuracy on every validation example under :func:`perturb_weights`, for each sigma and
    draw (draw ``d`` of the ``i``-th sigma uses key ``1000 i + d``: the same draws for every
    run); ``clean`` is the unperturbed accuracy, ``majority`` the majority class's share."""

    def acc(params: Any) -> float:
        return model.evaluate(params)["accuracy"]

    accuracy = {f"{s:g}": [acc(perturb_weights(model.params, s, jax.random.key(1000 * i + d)))
                           for d in range(draws)] for i, s in enumerate(sigmas)}  # fmt: skip
    return {
        "sigmas": sigmas, "draws": draws, "examples": len(model.validation["labels"]),
        "clean": acc(model.params), "majority": model.majority, "accuracy": accuracy,
    }  # fmt: skip


def line(a: FinalModel, b: FinalModel, alphas: list[float]) -> dict[str, list[float]]:
    """Validation loss and accuracy along ``(1 - alpha) a + alpha b``."""
    points = [a.evaluate(interpolate(a.params, b.params, alpha)) for alpha in alphas]
    return {"alphas": alphas, "loss": [p["loss"] for p in points],
            "accuracy": [p["accuracy"] for p in points]}  # fmt: skip
