"""Data parallelism over every device: one mesh axis, the batch split on it, the rest replicated.

On one host this spans the local devices (a GPU, a TPU slice, or ``--xla_force_host_platform_
device_count`` fake CPUs); after ``jax.distributed.initialize()`` it spans every device of
every host (a TPU pod, several GPU hosts), and each process feeds its own share of the rows.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``).

    It must come before any other JAX call. On Cloud TPU pods, SLURM, Open MPI and the other
    clusters JAX knows, the arguments are found automatically and may all be None; elsewhere
    give all three (the same coordinator ``host:port`` to every process).

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: how many processes take part.
      process_id: this process's index, 0 .. num_processes - 1.
    """
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def make_mesh() -> Mesh:
    """A 1-D mesh named ``"data"`` over all devices (of all processes)."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the first (batch) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over the devices and processes."""
    devices = mesh.devices.size
    if batch_size < 1:
        raise ValueError(f"The {what} must be positive, got {batch_size}.")
    if batch_size % devices:
        raise ValueError(
            f"The {what} {batch_size} does not divide over the {devices} devices of the mesh: "
            f"use a multiple of {devices}."
        )
    if batch_size % jax.process_count():
        raise ValueError(
            f"The {what} {batch_size} does not divide over {jax.process_count()} processes."
        )


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Makes global arrays from this process's rows of a batch, split over the mesh.

    Args:
      batch: this process's share of the global batch (all of it on one host).
      sharding: :func:`batch_sharding` of the mesh.

    Returns:
      The global batch, each array sharded on its first axis.
    """
    count = jax.process_count()
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count, *v.shape[1:]))
        for k, v in batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array of ``tree`` on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
