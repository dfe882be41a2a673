"""Device meshes: how a launcher spreads its work over devices and hosts, as a config change.

A mesh has two axes: `data` splits batches of images (sampling, capture, interventions, the concept study's
activations, training) and `probe` splits the stacked probes of a fit. A launcher builds the mesh from
`config.mesh` and sets it with `jax.set_mesh`; the library reads it back with `current()` and places its inputs with
`shard`/`replicate`. Without a mesh every function runs on the default device, so library users who never set one
see no change. XLA's SPMD partitioner does the rest (computation follows the inputs' shardings).

Multi-host (TPU VM pods, several GPU machines, or processes on one CPU machine): `initialize` starts JAX's
distributed runtime; every process runs the same program, and `shard` builds global arrays from host data that every
process holds in full, so the same code runs on one host or many.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

AXES = ("data", "probe")


def config(data: int = -1, probe: int = 1) -> ml_collections.ConfigDict:
    """The `config.mesh` block of every launcher config: devices along each axis; -1 = all the devices left."""
    return ml_collections.ConfigDict({"data": data, "probe": probe})


def initialize(distributed: bool) -> None:
    """Start JAX's distributed runtime; a no-op when not asked. Coordinator, process count and id come from the
    environment: TPU VM metadata, SLURM or Open MPI, else JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID."""
    if not distributed:
        return
    env = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
    bad = [v for v in env.values() if not os.environ.get(v, "0").isdigit()]
    if bad:
        raise ValueError(f"--distributed: {bad[0]}={os.environ[bad[0]]!r} must be an integer >= 0")
    try:
        jax.distributed.initialize(**{k: int(os.environ[v]) for k, v in env.items() if v in os.environ})
    except ValueError as e:  # no cluster environment found ('coordinator_address should be defined.')
        raise ValueError(f"--distributed found no cluster to join ({e}): on a TPU VM, SLURM or Open MPI it is "
                         "found by itself; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0), "
                         "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process, or drop --distributed") from e


def sizes(data: int = -1, probe: int = 1, n_devices: int | None = None) -> tuple[int, int]:
    """(data, probe) axis sizes for `n_devices` (default: all devices of all processes); ValueError naming the
    valid sizes when they do not multiply to the device count."""
    n = jax.device_count() if n_devices is None else n_devices
    if data == 0 or probe == 0 or data < -1 or probe < -1 or (data == -1 and probe == -1):
        raise ValueError(f"config.mesh: data={data}, probe={probe}; each is a device count >= 1, or -1 (the devices "
                         f"left) for one of them")
    fixed = data * probe * -1 if -1 in (data, probe) else data * probe
    if (-1 in (data, probe) and n % fixed) or (-1 not in (data, probe) and fixed != n):
        valid = ", ".join(f"data={d} probe={n // d}" for d in divisors(n))
        raise ValueError(f"config.mesh: data={data} x probe={probe} does not fit the {n} devices here; valid: {valid} "
                         f"(or -1 for one axis)")
    return (n // fixed if data == -1 else data), (n // fixed if probe == -1 else probe)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def make(data: int = -1, probe: int = 1, devices=None) -> jax.sharding.Mesh:
    """A ('data', 'probe') mesh over `devices` (default: every device of every process). Auto axes: jit places
    intermediate values itself."""
    devices = jax.devices() if devices is None else list(devices)
    shape = sizes(data, probe, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def from_config(c: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The mesh of a launcher config's `mesh` block."""
    return make(c.mesh.data, c.mesh.probe)


def current() -> jax.sharding.Mesh | None:
    """The mesh set with `jax.set_mesh`, or None (run on the default device)."""
    mesh = jax.sharding.get_mesh()
    return None if mesh.empty else mesh


def axis_size(name: str) -> int:
    mesh = current()
    return 1 if mesh is None else mesh.shape[name]


def check_batch(batch: int, what: str) -> None:
    """A batch split over the data axis must divide evenly: ValueError naming the valid batch sizes."""
    d = axis_size("data")
    if batch % d:
        raise ValueError(f"{what}={batch} does not split over the mesh's data axis of {d} devices; use a multiple of "
                         f"{d} ({', '.join(str(d * k) for k in range(1, 5))}, ...) or a data axis in "
                         f"{divisors(batch)}")


def shard(x, spec: P = P("data")):
    """Host data (every process holds all of it) -> a global array laid out by `spec` on the current mesh; without
    a mesh, x as a device array on the default device."""
    mesh = current()
    if mesh is None:
        return jax.tree.map(jax.numpy.asarray, x)
    sharding = NamedSharding(mesh, spec)

    def put(a):
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
            return a  # already placed (e.g. params replicated once per pipeline)
        if isinstance(a, jax.Array) and a.is_fully_addressable and jax.process_count() == 1:
            return jax.device_put(a, sharding)
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, x)


def replicate(tree):
    """A pytree copied to every device of the current mesh (no-op without one)."""
    return tree if current() is None else shard(tree, P())


def pad_count(n: int, batch_size: int = 0) -> int:
    """How many copies of the last image pad a batch of n images to at least `batch_size` and to a split of the
    mesh's data axis (0 for a full batch off a mesh): every sharded program pads this way and drops the copies
    after."""
    target = max(n, batch_size)
    return target - n + -target % axis_size("data")


def pad_last(x, pad: int):
    """A batch (a list, or an array over images) with `pad` copies of its last entry appended; None stays None."""
    if not pad or x is None:
        return x
    if isinstance(x, list):
        return x + x[-1:] * pad
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.repeat(x[-1:], pad, axis=0)])


def pad_rows(x: np.ndarray, axis: int = 0, multiple: int | None = None) -> np.ndarray:
    """x with zero rows appended along `axis` up to a multiple of the data axis (rows the caller never reads)."""
    m = axis_size("data") if multiple is None else multiple
    pad = -x.shape[axis] % m
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return np.pad(x, widths)


def gather(x) -> np.ndarray:
    """A (possibly multi-host) array -> the whole of it as numpy on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def check_single_process(job: str) -> None:
    """Jobs that write a workdir run as one process for now (on any number of its devices); multi-host runs of the
    core (sampling, capture, probe fits, training steps) work, but a job's store and reports are not yet split by
    process."""
    if jax.process_count() > 1:
        raise ValueError(f"the {job} runs as one process (with every device of its host); this run has "
                         f"{jax.process_count()} processes. Multi-host workdirs are not supported yet: run it without "
                         f"--distributed on one host")


def local_rows(x) -> tuple[int, np.ndarray]:
    """(first row, the rows of x [B, ...] that this process holds): what a host stores of an array split over the
    data axis. With one process, all of x; when the rows this process holds are not one contiguous block (or x is
    split along another axis), x is gathered and the process keeps block p of P equal blocks."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return 0, np.asarray(x)
    spans = {}
    for s in x.addressable_shards:
        rows = range(*s.index[0].indices(x.shape[0]))
        if any(i != slice(None) for i in s.index[1:]):
            spans = None
            break
        spans[(rows.start, rows.stop)] = s.data
    if spans:
        ordered = sorted(spans)
        if all(a[1] == b[0] for a, b in zip(ordered, ordered[1:])):
            return ordered[0][0], np.concatenate([np.asarray(spans[k]) for k in ordered])
    per = -(-x.shape[0] // jax.process_count())
    start = min(x.shape[0], jax.process_index() * per)
    return start, gather(x)[start:start + per]


def is_main() -> bool:
    """Whether this process writes shared outputs (reports, merged results): process 0."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
