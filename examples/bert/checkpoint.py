"""Orbax checkpoints of a run: the train state and a JSON note of where the run stood.

A checkpoint is one orbax step folder under ``<output dir>/checkpoints/<micro-step>/`` with
two items: ``state`` (the :class:`~examples.bert.steps.TrainState`: step, parameters,
dropout RNG state, optimizer state with the dice key) and ``meta`` (JSON: the data position,
elapsed time). Orbax writes into a temporary folder and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def abstract_like(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``tree``'s arrays, to restore into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Saves and restores a run's checkpoints with an ``orbax`` ``CheckpointManager``.

    Saves are asynchronous: the arrays are copied off the device before :meth:`save` returns
    (so the train step may then donate them) and written in the background.

    Args:
      output_dir: the run's output folder; checkpoints go to its ``checkpoints/``.
      max_to_keep: how many of the latest checkpoints to keep (None: all).
    """

    def __init__(self, output_dir: str | os.PathLike, *, max_to_keep: int | None = 2) -> None:
        self.directory = os.path.abspath(os.path.join(output_dir, CHECKPOINT_DIR))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Starts saving ``state`` and ``meta`` as checkpoint ``step`` (skipped if it exists)."""
        if step in self.manager.all_steps():
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``step`` into the structure, dtypes and shardings of ``like``.

        Args:
          step: the checkpoint's step.
          like: a state (or abstract state) of the same structure, e.g. a fresh one.

        Returns:
          ``(state, meta)``.
        """
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_like(like)), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        """Blocks until every save has been written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
