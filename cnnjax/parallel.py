"""Device mesh and shardings: data parallel over every device with `jax.sharding`.

One `data` mesh axis spans all devices of all processes. Batches are split along it; parameters,
optimizer state and in-memory datasets are replicated.
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with a `data` axis over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    # Auto axes: XLA's sharding propagation places intermediates; we pin inputs and outputs only.
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the `data` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Places a host pytree (the same on every process) replicated on the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), sharding, lambda idx: np.asarray(x)[idx]
        ),
        tree,
    )


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-process run before any device is touched.

    Explicit coordinator flags start `jax.distributed` anywhere (GPU hosts, CPU processes);
    without them it starts only where JAX can discover the peers itself: a multi-host TPU slice
    (TPU_WORKER_HOSTNAMES lists several hosts) or a SLURM job with several tasks.
    """
    if coordinator_address:
        # CPU processes talk through gloo (the default has no cross-process collectives); the
        # setting only concerns the CPU backend, so it is harmless on GPU hosts.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 or int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        jax.distributed.initialize()
