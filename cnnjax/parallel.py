"""Device mesh and shardings: data parallel over every device with `jax.sharding`.

One `data` mesh axis spans all devices of all processes. Batches are split along it; parameters,
optimizer state and in-memory datasets are replicated.

Multi-process start-up (`--distributed=auto|on|off`, `initialize_distributed`): several hosts
(or CPU processes) run as one program with one mesh, joined by `jax.distributed` before any
device is touched; auto joins what JAX's own cluster detection finds (docs/decisions.md,
"Multi-host behaves like one host").
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnjax.errors import UserError, first_line

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


DISTRIBUTED_MODES = ("auto", "on", "off")  # --distributed


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str = "auto",
) -> None:
    """Joins a multi-process run before any device is touched (`--distributed=mode`).

    "auto": with a coordinator address (the flag or JAX_COORDINATOR_ADDRESS), start
    `jax.distributed` with it and the other flags; without one, start it when
    `detect_cluster` finds a cluster of several processes that `jax.distributed.initialize()`
    joins by itself; else run as one process. "on": always start it; a `UserError` (one line)
    when it cannot. "off": never (a coordinator flag with it is a `UserError`).
    """
    if mode not in DISTRIBUTED_MODES:
        raise UserError(f"--distributed={mode}: choose one of {', '.join(DISTRIBUTED_MODES)}.")
    if mode == "off":
        if coordinator_address:
            raise UserError(
                f"--distributed=off runs one process, but --coordinator_address="
                f"{coordinator_address} asks for several: drop one of the two flags."
            )
        return
    if mode == "auto" and not (coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        found = detect_cluster()
        if found is None or (found[1] is not None and found[1] < 2):
            return
    # CPU processes talk through gloo (the default has no cross-process collectives); the
    # setting only concerns the CPU backend, so it is harmless on GPU and TPU hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except Exception as e:  # noqa: BLE001 - JAX's ValueError, RuntimeError or XlaRuntimeError.
        raise UserError(
            f"could not join a multi-process run (--distributed={mode}): {first_line(e, 300)}. "
            "Pass --coordinator_address=HOST:PORT of process 0 with --num_processes and "
            "--process_id, start the processes under SLURM, Open MPI, Kubernetes or on a TPU "
            "slice, or run one process with --distributed=off."
        ) from e


def detect_cluster() -> tuple[str, int | None] | None:
    """(cluster, process count) of the multi-process cluster this process runs in, as
    `jax.distributed.initialize()` would detect it, or None outside one.

    JAX's own detectors (`jax._src.clusters`, private), tried in JAX's order: Open MPI
    (mpirun's OMPI_* variables), SLURM (SLURM_NTASKS ...), a GKE TPU slice
    (TPU_WORKER_HOSTNAMES or TPU_PROCESS_ADDRESSES, MEGASCALE_NUM_SLICES), a GCE TPU VM's slice
    (the metadata server's worker list), Kubernetes. Only environment variables are read,
    except on a Cloud TPU VM (libtpu and TPU chips present, TPU_SKIP_MDS_QUERY unset), where
    JAX asks the GCE metadata server for the slice as its own start-up does; when that fails,
    one warning line and None. Kubernetes counts only as an indexed Job (JOB_COMPLETION_INDEX,
    the only kind JAX joins), with the count None: only the cluster's API (which JAX asks
    while joining) knows it. mpi4py is left out, as JAX leaves it out unless asked.
    """
    try:
        from jax._src import clusters
    except ImportError:  # A JAX without the private module: only explicit flags start a run.
        return None
    for env in getattr(clusters.ClusterEnv, "_cluster_types", ()):
        name = _CLUSTERS.get(env.__name__)
        if name is None:
            continue  # mpi4py (opt-in in JAX too), or one this code does not know to be safe.
        if name == "Kubernetes Job":
            # Its is_env_present imports `kubernetes` and warns in every pod without it.
            if "KUBERNETES_SERVICE_HOST" in os.environ and "JOB_COMPLETION_INDEX" in os.environ:
                if env.is_env_present():
                    return name, None
            continue
        try:
            if env.is_env_present():
                return name, int(env.get_process_count())
        except Exception as e:  # noqa: BLE001 - the metadata server unreachable, a bad variable.
            print(
                f"warning: this looks like a {name}, but how many processes it runs is unknown "
                f"({first_line(e, 200)}); running as one process. --distributed=on joins it "
                "(or says why not).",
                flush=True,
            )
            return None
    return None


# JAX's cluster detectors `detect_cluster` calls, by class name: those that read environment
# variables only (the TPU ones ask the metadata server only on a Cloud TPU VM), and Kubernetes.
_CLUSTERS = {
    "OmpiCluster": "Open MPI job",
    "SlurmCluster": "SLURM job",
    "GkeTpuCluster": "GKE TPU slice",
    "GceTpuCluster": "TPU VM slice",
    "K8sCluster": "Kubernetes Job",
}
