"""The jit-compiled train and eval steps, functional over the model's split state.

The model is split once with ``nnx.split`` into a graph definition (static) and two states:
the parameters and the rest (dropout's RNG keys and counters), each kept as plain nested
dicts of arrays (``nnx.to_pure_dict``). The steps merge them into the model inside
``jax.jit``, so nothing but plain containers of arrays crosses the jit boundary: JAX
flattens and rebuilds those in C++, where ``nnx.Variable`` objects would cost Python work per
leaf and per call (4-5 ms for BERT-base's 663 leaves on a CPU host; benchmarks/host_time.py).
The train state is donated so XLA updates it in place, and the shardings are explicit
(``NamedSharding``: batch split over the mesh, everything else replicated).

The optimizer sees the parameters with their small leaves grouped (:func:`group_leaves`:
biases and LayerNorm vectors concatenated by rank and trailing shape), so that it spends a
few kernels on them rather than a few per vector; its per-parameter choices must therefore
depend on a leaf's rank only, as the training script's weight-decay mask does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

import optax_dice
from examples.bert import parallel
from optax_dice.game import NO_MONSTER

Batch = dict[str, jax.Array]
#: A model state as plain nested dicts of arrays (``nnx.to_pure_dict``).
Params = dict[str, Any]


class TrainState(NamedTuple):
    """Everything that changes as training runs (and all a checkpoint needs to resume).

    Attributes:
      step: micro-steps made so far (int32); the data position and the schedule follow it.
      params: the model's ``nnx.Param`` state, as nested dicts of arrays.
      model_state: the rest of the model's state (dropout's RNG keys and counts), likewise.
      opt_state: the optimizer's state over the grouped parameters (:func:`group_leaves`),
        the dice key included.
    """

    step: jax.Array
    params: Params
    model_state: Params
    opt_state: optax.OptState


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.GraphDef, Params, Params]:
    """Splits a model into its train and eval graph definitions and its two states.

    Returns:
      ``(train graphdef, eval graphdef, params, model_state)``; the graph definitions differ
      only in dropout being on or off; the states are nested dicts of arrays
      (``nnx.merge(graphdef, params, model_state)`` rebuilds the model). The model is left in
      training mode.
    """
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    train_graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return train_graphdef, eval_graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)


def _pure(state: nnx.State | Params) -> Params:
    return nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state


def init_train_state(
    params: Params | nnx.State,
    model_state: Params | nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh,
) -> TrainState:
    """Builds the first train state, replicated over the mesh (``nnx.State`` arguments are
    turned into nested dicts of arrays, as :func:`split_model` returns them)."""
    params, model_state = _pure(params), _pure(model_state)
    state = TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(group_leaves(params)),
    )
    return parallel.replicate(state, mesh)


def _forward(graphdef: nnx.GraphDef, params: Params, model_state: Params, batch: Batch):
    # nnx.merge makes fresh Variable objects from the plain arrays, owned by the current trace,
    # so that dropout may advance its counts.
    model = nnx.merge(graphdef, params, model_state)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    _, _, model_state = nnx.split(model, nnx.Param, ...)
    return logits, nnx.to_pure_dict(model_state)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accumulation_steps: int,
    mesh: Mesh,
    *,
    uses_dice: bool,
    rolls_per_update: bool = False,
    log_grad_norm: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted train step ``(state, batch) -> (state, metrics)``.

    One call is one micro-batch: forward, backward, ``tx.update`` (which rolls the dice and,
    under ``MultiSteps``, applies an update every ``accumulation_steps`` calls), given the
    micro-batch's mean loss as ``value=`` (the Cleric's Healing Word judges it). The state is
    donated. Metrics stay on the device; nothing is copied to the host.

    Args:
      graphdef: the model's training graph definition (see :func:`split_model`).
      tx: the optimizer (a plain ``GradientTransformation`` too: it is given extra-args
        support, which drops ``value`` for the transformations that do not take it). It
        updates the parameters as :func:`group_leaves` groups them, the state
        :func:`init_train_state` made.
      schedule: its learning-rate schedule, of the applied-update count.
      accumulation_steps: micro-batches per applied update.
      mesh: the device mesh; the batch is split on its first axis over it.
      uses_dice: whether ``tx`` holds a ``dice_roll`` whose last roll to report.
      rolls_per_update: whether the dice roll once per applied update (their roll is then
        reported on the micro-step that applies it), not on every micro-batch.
      log_grad_norm: whether to compute the gradient's norm for the metrics. With False the
        metric is NaN and the step computes only the norms ``tx`` itself computes (one for
        clipping), as a PyTorch loop that logs ``clip_grad_norm_``'s result does; the
        benchmarks that compare the two use it.

    Returns:
      The step. Metrics: ``loss`` (the micro-batch's mean cross-entropy, before any roll),
      ``grad_norm``, ``lr`` (of the update this micro-batch feeds), and the dice state after
      the step: ``rolled`` (see :func:`dice_metrics`), ``natural``, ``total``, ``scale`` (the
      factor applied; 0, 0, 1 without dice),
      and the game's ``dice_scale``, ``monster``, ``encounter_step``, ``level``, ``xp`` and
      ``fired`` (see :class:`optax_dice.DiceGameState`). Without game mechanics these are
      fixed (``scale``, -1, 0, 1, 0, 0), so every step's metrics have one structure.
    """

    tx_extra = optax.with_extra_args_support(tx)  # any optimizer takes value= then

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        def loss_fn(params: Params, model_state: Params) -> tuple[jax.Array, Params]:
            logits, model_state = _forward(graphdef, params, model_state, batch)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
            return loss.mean(), model_state

        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.model_state
        )
        # The loss goes to the optimizer as optax's extra argument ``value``, always: the
        # Cleric's Healing Word needs it, and every other part ignores it (optax.chain,
        # MultiSteps and optax_dice.accumulate hand extra arguments only to the
        # transformations that take them), so a run without a Cleric computes exactly what it
        # did before. An unused argument costs nothing under jit.
        updates, opt_state = tx_extra.update(
            group_leaves(grads), state.opt_state, group_leaves(state.params), value=loss
        )
        params = optax.apply_updates(state.params, ungroup_leaves(updates, state.params))
        metrics = {
            "loss": loss,
            "grad_norm": global_norm(grads) if log_grad_norm else jnp.float32(jnp.nan),
            "lr": jnp.asarray(schedule(state.step // accumulation_steps), jnp.float32),
            **dice_metrics(
                optax_dice.find_dice_state(opt_state) if uses_dice else None,
                optax_dice.find_dice_state(state.opt_state) if uses_dice else None,
                applied=(state.step + 1) % accumulation_steps == 0 if rolls_per_update else None,
            ),
        }
        new_state = TrainState(state.step + 1, params, model_state, opt_state)
        return new_state, metrics

    replicated = parallel.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(replicated, parallel.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


#: Leaves of at most this many elements are grouped (see :func:`group_leaves`).
GROUPED_SIZE = 2**16


def _group_keys(tree: Any) -> list[str]:
    keys = []
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        if jnp.size(leaf) > GROUPED_SIZE:
            keys.append(f"leaf{i:04d}")
        else:
            trailing = "x".join(map(str, jnp.shape(leaf)[1:]))
            keys.append(f"group_{jnp.ndim(leaf)}d_{leaf.dtype}_{trailing}")
    return keys


def group_leaves(tree: Any) -> dict[str, jax.Array]:
    """The small leaves of ``tree`` (at most :data:`GROUPED_SIZE` elements) concatenated along
    their first axis, by rank, trailing shape and dtype; the large ones as they are.

    An optimizer updates each array of its tree with its own kernels; on a GPU a kernel per
    bias and LayerNorm vector costs more in launches than in work. Every group keeps its
    leaves' rank, so rules by ``ndim`` (AdamW's weight-decay mask: matrices decay, vectors do
    not) say the same of a group as of its leaves.
    """
    groups: dict[str, list[jax.Array]] = {}
    for key, leaf in zip(_group_keys(tree), jax.tree.leaves(tree), strict=True):
        groups.setdefault(key, []).append(jnp.reshape(leaf, (-1, *jnp.shape(leaf)[1:])))
    return {key: jnp.concatenate(leaves) for key, leaves in groups.items()}


def ungroup_leaves(groups: dict[str, jax.Array], like: Any) -> Any:
    """The inverse of :func:`group_leaves`: a tree of ``like``'s structure and shapes."""
    offsets = dict.fromkeys(groups, 0)
    leaves = []
    for key, leaf in zip(_group_keys(like), jax.tree.leaves(like), strict=True):
        rows = (jnp.shape(leaf) or (1,))[0]
        part = jax.lax.slice_in_dim(groups[key], offsets[key], offsets[key] + rows)
        leaves.append(jnp.reshape(part, jnp.shape(leaf)))
        offsets[key] += rows
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all the leaves of ``tree`` together, in float32, as ``optax.tree.norm``.

    Leaves of one shape and dtype are stacked and reduced together: XLA fuses the stack into
    one reduction, where a reduction per leaf (BERT-base has 201) is a kernel per leaf, most
    of them too small to fill a GPU. The sum's order differs from a leaf-by-leaf sum's, so the
    result may differ from ``optax.tree.norm``'s in the last bits.
    """
    groups: dict[tuple[tuple[int, ...], Any], list[jax.Array]] = {}
    for leaf in jax.tree.leaves(tree):
        groups.setdefault((leaf.shape, leaf.dtype), []).append(leaf)
    squares = [jnp.sum(jnp.square(jnp.stack(g).astype(jnp.float32))) for g in groups.values()]
    return jnp.sqrt(sum(squares, jnp.float32(0)))


def dice_metrics(
    dice: optax_dice.DiceRollState | optax_dice.DiceGameState | None,
    previous: optax_dice.DiceRollState | optax_dice.DiceGameState | None = None,
    *,
    applied: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """The metrics of the dice state after a step (on the device: no host transfer).

    Args:
      dice: the state :func:`optax_dice.find_dice_state` found after the step, or None
        without dice.
      previous: the same state before the step (None without dice).
      applied: for dice that roll once per applied update, whether this step applied one (a
        boolean array); None for dice that roll on every micro-batch.

    Returns:
      ``rolled`` (bool: whether this micro-step made the roll it reports: the state's
      ``count`` advanced, or, for a roll per applied update, the step applied it), ``natural``,
      ``total``, ``scale`` (the factor applied), ``dice_scale`` (the rule's), ``monster`` (-1:
      none), ``encounter_step``, ``level``, ``xp`` and ``fired`` (the bit mask of the class's
      abilities fired). Fields a state lacks take the values of a game with nothing on (no
      dice: not rolled, natural 0, total 0, scale 1), so the structure never varies.
    """
    if dice is None:
        rolled = jnp.zeros([], jnp.bool_)
    elif applied is None:
        rolled = dice.count != (dice.count if previous is None else previous.count)
    else:
        rolled = jnp.asarray(applied, jnp.bool_)
    int32 = functools.partial(jnp.full, [], dtype=jnp.int32)
    if dice is None:
        natural, total, scale = int32(0), int32(0), jnp.ones([], jnp.float32)
    else:
        natural, total, scale = dice.natural, dice.total, dice.scale.astype(jnp.float32)
    metrics = {
        "rolled": rolled,
        "natural": natural,
        "total": total,
        "scale": scale,
        "dice_scale": scale,
        "monster": int32(NO_MONSTER),
        "encounter_step": int32(0),
        "level": int32(1),
        "xp": int32(0),
        "fired": int32(0),
    }
    if isinstance(dice, optax_dice.DiceGameState):
        metrics.update(
            dice_scale=dice.dice_scale.astype(jnp.float32),
            monster=dice.monster,
            encounter_step=dice.encounter_step,
            level=dice.level,
            xp=dice.xp,
            fired=dice.fired,
        )
    return metrics


class EvalTotals(NamedTuple):
    """Running sums over the validation batches (on the device).

    Attributes:
      loss_sum: the summed cross-entropy of the real examples.
      count: the number of real examples.
      confusion: ``[true label, predicted label]`` counts.
    """

    loss_sum: jax.Array
    count: jax.Array
    confusion: jax.Array


def zero_totals(num_labels: int, mesh: Mesh) -> EvalTotals:
    """Empty running sums, replicated over the mesh."""
    totals = EvalTotals(
        loss_sum=jnp.zeros([], jnp.float32),
        count=jnp.zeros([], jnp.float32),
        confusion=jnp.zeros([num_labels, num_labels], jnp.float32),
    )
    return parallel.replicate(totals, mesh)


def make_eval_step(
    graphdef: nnx.GraphDef, num_labels: int, mesh: Mesh
) -> Callable[[Params, Params, Batch, EvalTotals], EvalTotals]:
    """Builds the jitted eval step ``(params, model_state, batch, totals) -> totals``.

    The batch carries ``weights`` (0 for the padding of the last batch). The totals are
    donated and stay on the device until the evaluation ends.

    Args:
      graphdef: the model's eval graph definition (dropout off; see :func:`split_model`).
      num_labels: the number of classes.
      mesh: the device mesh.

    Returns:
      The step.
    """

    def eval_step(
        params: Params, model_state: Params, batch: Batch, totals: EvalTotals
    ) -> EvalTotals:
        logits, _ = _forward(graphdef, params, model_state, batch)
        weights = batch["weights"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        truth = jax.nn.one_hot(batch["labels"], num_labels, dtype=jnp.float32)
        predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_labels, dtype=jnp.float32)
        return EvalTotals(
            loss_sum=totals.loss_sum + jnp.sum(loss * weights),
            count=totals.count + jnp.sum(weights),
            confusion=totals.confusion + (truth * weights[:, None]).T @ predicted,
        )

    replicated = parallel.replicated(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(replicated, replicated, parallel.batch_sharding(mesh), replicated),
        out_shardings=replicated,
        donate_argnums=3,
    )


def classification_metrics(totals: EvalTotals) -> dict[str, float]:
    """Loss, accuracy and macro-F1 from the (host-side) totals.

    Macro-F1 averages the F1 of every class that occurs in the labels or the predictions.
    """
    confusion = np.asarray(totals.confusion, np.float64)
    count = float(totals.count)
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    denom = support + predicted
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    return {
        "loss": float(totals.loss_sum) / max(count, 1.0),
        "accuracy": float(tp.sum()) / max(count, 1.0),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "examples": int(count),
    }
