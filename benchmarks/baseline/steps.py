"""The train step as it stood before issue 20 (examples/bert/steps.py at commit 630073a),
kept unchanged as the "before" side of the benchmarks: the train state crosses the jit
boundary as ``nnx.State`` of ``nnx.Variable`` objects. Its eval step is left out.

The original docstring follows.

The jit-compiled train and eval steps, functional over the model's split state.

The model is split once with ``nnx.split`` into a graph definition (static) and two states:
the parameters and the rest (dropout's RNG keys and counters). The steps merge them inside
``jax.jit``, which is flax's recommended fast path: no NNX graph traversal per call, the
train state is donated so XLA updates it in place, and the shardings are explicit
(``NamedSharding``: batch split over the mesh, everything else replicated).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

import optax_dice
from examples.bert import parallel
from optax_dice.game import NO_MONSTER

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
    """Everything that changes as training runs (and all a checkpoint needs to resume).

    Attributes:
      step: micro-steps made so far (int32); the data position and the schedule follow it.
      params: the model's ``nnx.Param`` state.
      model_state: the rest of the model's state (dropout's RNG keys and counts).
      opt_state: the optimizer's state, the dice key included.
    """

    step: jax.Array
    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.GraphDef, nnx.State, nnx.State]:
    """Splits a model into its train and eval graph definitions and its two states.

    Returns:
      ``(train graphdef, eval graphdef, params, model_state)``; the graph definitions differ
      only in dropout being on or off. The model is left in training mode.
    """
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    train_graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return train_graphdef, eval_graphdef, params, model_state


def init_train_state(
    params: nnx.State, model_state: nnx.State, tx: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
    """Builds the first train state, replicated over the mesh."""
    state = TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
    )
    return parallel.replicate(state, mesh)


def _forward(graphdef: nnx.GraphDef, params: nnx.State, model_state: nnx.State, batch: Batch):
    # Fresh Variable objects, owned by the current trace (the state may come from an outer
    # one, e.g. jit's when called under grad), so that dropout may advance its counts.
    params, model_state = jax.tree.map(lambda x: x, (params, model_state))
    model = nnx.merge(graphdef, params, model_state)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    _, _, model_state = nnx.split(model, nnx.Param, ...)
    return logits, model_state


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accumulation_steps: int,
    mesh: Mesh,
    *,
    uses_dice: bool,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted train step ``(state, batch) -> (state, metrics)``.

    One call is one micro-batch: forward, backward, ``tx.update`` (which rolls the dice and,
    under ``MultiSteps``, applies an update every ``accumulation_steps`` calls), given the
    micro-batch's mean loss as ``value=`` (the Cleric's Healing Word judges it). The state is
    donated. Metrics stay on the device; nothing is copied to the host.

    Args:
      graphdef: the model's training graph definition (see :func:`split_model`).
      tx: the optimizer (a plain ``GradientTransformation`` too: it is given extra-args
        support, which drops ``value`` for the transformations that do not take it).
      schedule: its learning-rate schedule, of the applied-update count.
      accumulation_steps: micro-batches per applied update.
      mesh: the device mesh; the batch is split on its first axis over it.
      uses_dice: whether ``tx`` holds a ``dice_roll`` whose last roll to report.

    Returns:
      The step. Metrics: ``loss`` (the micro-batch's mean cross-entropy, before any roll),
      ``grad_norm``, ``lr`` (of the update this micro-batch feeds), and the dice state after
      the step: ``natural``, ``total``, ``scale`` (the factor applied; 0, 0, 1 without dice),
      and the game's ``dice_scale``, ``monster``, ``encounter_step``, ``level``, ``xp`` and
      ``fired`` (see :class:`optax_dice.DiceGameState`). Without game mechanics these are
      fixed (``scale``, -1, 0, 1, 0, 0), so every step's metrics have one structure.
    """

    tx_extra = optax.with_extra_args_support(tx)  # any optimizer takes value= then

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        def loss_fn(params: nnx.State, model_state: nnx.State) -> tuple[jax.Array, nnx.State]:
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
        updates, opt_state = tx_extra.update(grads, state.opt_state, state.params, value=loss)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "lr": jnp.asarray(schedule(state.step // accumulation_steps), jnp.float32),
            **dice_metrics(optax_dice.find_dice_state(opt_state) if uses_dice else None),
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


def dice_metrics(
    dice: optax_dice.DiceRollState | optax_dice.DiceGameState | None,
) -> dict[str, jax.Array]:
    """The metrics of the dice state after a step (on the device: no host transfer).

    Args:
      dice: the state :func:`optax_dice.find_dice_state` found, or None without dice.

    Returns:
      ``natural``, ``total``, ``scale`` (the factor applied), ``dice_scale`` (the rule's),
      ``monster`` (-1: none), ``encounter_step``, ``level``, ``xp`` and ``fired`` (the bit
      mask of the class's abilities fired). Fields a state lacks take the values of a game
      with nothing on (no dice: natural 0, total 0, scale 1), so the structure never varies.
    """
    int32 = functools.partial(jnp.full, [], dtype=jnp.int32)
    if dice is None:
        natural, total, scale = int32(0), int32(0), jnp.ones([], jnp.float32)
    else:
        natural, total, scale = dice.natural, dice.total, dice.scale.astype(jnp.float32)
    metrics = {
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
