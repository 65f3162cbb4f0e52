"""Data parallelism over every device (of every host after ``jax.distributed.initialize``):
one mesh axis, the batch split on it (each process feeds its rows), the rest replicated."""

from __future__ import annotations

import math
import socket
import sys
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float = 300,
) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``), or fails within a bound.

    It must come before any other JAX call. On clusters JAX knows (TPU pods, SLURM, MPI) the
    arguments may all be None; elsewhere give all three. A process other than 0 first waits
    for the coordinator's port; once joined, the processes check that each was told the same
    run. Processes that never join end with JAX's ``DEADLINE_EXCEEDED`` after ``timeout_s``.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: how many processes take part.
      process_id: this process's index, 0 .. num_processes - 1.
      timeout_s: how long to wait for every process to join.

    Raises:
      ConnectionError: the coordinator did not answer within ``timeout_s``.
      ValueError: the processes disagree about the run they form.
    """
    if coordinator_address is not None:
        print(
            f"Joining a run of {num_processes} processes as process {process_id}, coordinator "
            f"{coordinator_address} (waiting up to {timeout_s:g} s for all to join).",
            file=sys.stderr,
            flush=True,
        )
        if process_id:
            _wait_for_port(coordinator_address, timeout_s, process_id)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(1, math.ceil(timeout_s)),
    )
    if num_processes is None:
        return
    from jax.experimental import multihost_utils

    claims = np.asarray(multihost_utils.process_allgather(np.asarray([num_processes, process_id])))
    told = [(int(n), int(i)) for n, i in claims.reshape(-1, 2)]
    actual = [(jax.process_count(), index) for index in range(jax.process_count())]
    if told != actual:
        raise ValueError(
            f"The processes disagree: {jax.process_count()} joined the coordinator at "
            f"{coordinator_address}, and were told (--num-processes, --process-id) = {told}. "
            "Give every process the same --num-processes and each its own --process-id."
        )


def _wait_for_port(address: str, timeout_s: float, process_id: int) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"Process {process_id} could not reach the coordinator at {address} within "
                    f"{timeout_s:g} s ({err}). Is process 0 running, with the same "
                    "--coordinator-address, and is the port open?"
                ) from err
        time.sleep(0.2)


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
    """The global batch, sharded on its first axis (``sharding``: :func:`batch_sharding`), from
    this process's rows of it."""
    count = jax.process_count()
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count, *v.shape[1:]))
        for k, v in batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array of ``tree`` on every device of the mesh (with several processes,
    from each process's own copy, the same everywhere since it derives from the seed)."""
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _global_copy(x, sharding), tree)


def _global_copy(x: Any, sharding: NamedSharding) -> jax.Array:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _global_copy(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
