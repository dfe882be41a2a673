"""Fit every probe of a sweep by SGD: the probes of a shape group are stacked and trained together, one jitted,
`jax.vmap`-ed Optax step per batch and a `lax.scan` over the batches, so that an epoch is one device call. All
probes of a group see the same per-epoch permutation of the images. The probes of a group share one label set (the
scene study: every layer and step reads the same images) or each has its own (the concept study: concept k's
probes read concept k's positives and negatives). The task is a `tasks.Task` value the caller passes (spatial
probes on token grids, or image-level probes on feature vectors). Fits checkpoint per epoch (orbax) and resume
bit-identically.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import chex
import optax
import orbax.checkpoint as ocp
from jax.sharding import PartitionSpec as P

from jaxprobe import kernels, mesh, train
from jaxprobe.probing.probes import (
    KINDS,
    Params,
    ProbeId,
    check_acts,
    check_group_labels,
    check_labels,
    check_sweep,
    group_probes,
    init_probe,
    prepare_targets,
    probe_key,
    probe_loss,
    unstack,
)
from jaxprobe.probing.tasks import Task, check_task
from jaxprobe.validate import check_choice

# The 'cpu_chunked' fit (`chunk_size`) keeps a chunk's stacked first-layer kernels within this many bytes.
CHUNK_BYTES = 8 << 20


@flax.struct.dataclass
class FitState:
    """Training state of a group of G probes: every leaf of `params`/`opt_state` has a leading [G] axis."""
    epoch: jax.Array  # int32 scalar: epochs completed
    params: Params
    opt_state: Any


@functools.partial(jax.jit, static_argnames=("kind", "task", "channels", "lr", "hidden"))
def init_state(keys: jax.Array, kind: str, task: Task, channels: int, *, lr: float = 1e-3,
               hidden: int = 256) -> FitState:
    """Stacked fresh probes and Adam states for the G probes of a group; keys [G] (one per probe)."""
    params = jax.vmap(lambda k: init_probe(k, kind, task, channels, hidden=hidden))(keys)
    return FitState(epoch=jnp.asarray(0, jnp.int32), params=params, opt_state=jax.vmap(optax.adam(lr).init)(params))


@functools.partial(jax.jit, static_argnames=("task", "batch_size", "lr", "per_probe", "num_images"),
                   donate_argnums=0)
def run_epoch(state: FitState, x: jax.Array, target: jax.Array, seed, *, task: Task, batch_size: int = 4,
              lr: float = 1e-3, per_probe: bool = False, num_images: int | None = None) -> tuple[FitState, jax.Array]:
    """One epoch for a group, as one device call: x [N, G, h, w, C], target [N, ...] shared by the G probes, or
    [N, G, ...] one per probe when `per_probe` -> (state, mean loss [G]).

    The images are shuffled by a permutation that depends only on (seed, epoch), shared by all probes. A last
    partial batch is padded and masked, so its loss is the mean over its real images (PyTorch's drop_last=False).
    `num_images`: only the first n rows of x are images (the rest pad x to a multiple of the mesh's data axis).
    """
    chex.assert_rank(x, 5 if task.spatial else 3)
    chex.assert_axis_dimension(target, 0, x.shape[0])
    if per_probe:
        chex.assert_axis_dimension(target, 1, x.shape[1])
    n = x.shape[0] if num_images is None else num_images
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    perm = jax.random.permutation(jax.random.fold_in(jax.random.key(seed), state.epoch), n)
    idx = jnp.concatenate([perm, jnp.zeros(pad, perm.dtype)]).reshape(n_batches, batch_size)
    weight = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]).reshape(n_batches, batch_size)
    optimizer = optax.adam(lr)

    def step_one(params, opt_state, xb, tb, wb):
        def loss_fn(p):
            return jnp.sum(wb * probe_loss(p, xb, tb, task)) / jnp.sum(wb)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.vmap(step_one, in_axes=(0, 0, 1, 1 if per_probe else None, None))

    def body(carry, batch):
        bidx, wb = batch
        params, opt_state, loss = step(*carry, x[bidx], target[bidx], wb)
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(body, (state.params, state.opt_state), (idx, weight))
    return FitState(epoch=state.epoch + 1, params=params, opt_state=opt_state), losses.mean(axis=0)


def fit_group(x: jax.Array, labels, task: Task, *, kind: str = "linear", epochs: int = 30, batch_size: int = 4,
              lr: float = 1e-3, seed: int = 0, label_mode: str = "upsample", hidden: int = 256,
              keys: jax.Array | None = None, checkpoint_dir: str | Path | None = None,
              stop_after_epoch: int | None = None) -> Params:
    """Fit the G probes of one shape group at once: x [N, G, h, w, C], labels [N, H, W] shared by all probes or
    [N, G, H, W] one label map per probe (image-level tasks: x [N, G, D], labels [N] or [N, G]) -> params
    (leaves [G, ...]).

    Args:
      keys: [G] init keys, one per probe (only the MLP uses them); default fold_in(key(seed), g).
      checkpoint_dir: if given, the state is saved there after every epoch (orbax) and a later call resumes from
        the newest checkpoint; the result is bit-identical to an uninterrupted fit.
      stop_after_epoch: stop once this many epochs are done (after checkpointing); simulates a kill in tests.

    On CPU a group too large for the cache is fit a chunk of probes at a time (`chunk_size`), with the same result.
    """
    task = check_task(task)
    labels = check_group_labels(labels, task, x.shape[1])
    check_acts("activations", x, len(labels), task, group=True)
    if keys is None:
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(x.shape[1]))
    return _fit(x, labels, task, kind=kind, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                label_mode=label_mode, hidden=hidden, keys=keys, checkpoint_dir=checkpoint_dir,
                stop_after_epoch=stop_after_epoch)


def _fit(x, labels, task, *, kind, epochs, batch_size, lr, seed, label_mode, hidden, keys, checkpoint_dir,
         stop_after_epoch=None) -> Params:
    """`fit_group` on already validated inputs."""
    check_choice("probe kind", kind, KINDS)
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    per_probe = labels.ndim == (4 if task.spatial else 2)
    hw = x.shape[2:4] if task.spatial else None
    if per_probe:  # [N, G, H, W] -> [N, G, ...]
        target = jax.vmap(lambda y: prepare_targets(y, hw, task, label_mode), 1, 1)(labels)
    else:
        target = prepare_targets(labels, hw, task, label_mode)
    fit = functools.partial(_fit_stacked, task=task, kind=kind, epochs=epochs, batch_size=batch_size, lr=lr,
                            seed=seed, hidden=hidden, per_probe=per_probe)
    g = x.shape[1]
    chunk = g if checkpoint_dir is not None or mesh.current() is not None else chunk_size(kind, task, x.shape[-1],
                                                                                          hidden, g)
    if chunk == g:
        return fit(x, target, keys, checkpoint_dir=checkpoint_dir, stop_after_epoch=stop_after_epoch)
    parts = [fit(x[:, i:i + chunk], target[:, i:i + chunk] if per_probe else target, keys[i:i + chunk],
                 stop_after_epoch=stop_after_epoch) for i in range(0, g, chunk)]
    return jax.tree.map(lambda *p: jnp.concatenate(p), *parts)


def chunk_size(kind: str, task: Task, channels: int, hidden: int, probes: int) -> int:
    """How many of a group's probes one stack fits at a time. All of them, except where the kernel 'probe_fit' is
    'cpu_chunked' (`jaxprobe.kernels`; CPU): as many as keep their stacked first-layer kernels within
    `CHUNK_BYTES`, and at least one. Each chunk runs all its epochs before the next starts, so its parameters and
    Adam moments stay in the CPU's cache from step to step instead of streaming through memory; the probes are
    independent and share their epochs' image order, so the results are those of one stack."""
    if kernels.choose("probe_fit") != "cpu_chunked":
        return probes
    width = hidden if kind == "mlp" else task.outputs
    return max(1, min(probes, CHUNK_BYTES // (4 * channels * width)))


def _fit_stacked(x, target, keys, *, task, kind, epochs, batch_size, lr, seed, hidden, per_probe,
                 checkpoint_dir=None, stop_after_epoch=None) -> Params:
    """The probes stacked in x [N, G, ...] fit together, one `run_epoch` call per epoch."""
    n, g = x.shape[:2]
    if mesh.current() is not None:
        x, target, keys = _pad_for_mesh(x, target, keys, per_probe)
    else:  # on the device once, not once per epoch call (a host array is transferred at every call)
        x, target = jnp.asarray(x), jnp.asarray(target)
    state = init_state(keys, kind, task, x.shape[-1], lr=lr, hidden=hidden)
    if mesh.current() is not None:  # images over the data axis, probes over the probe axis
        x = mesh.shard(x, P("data", "probe"))
        target = mesh.shard(target, P("data", "probe") if per_probe else P("data"))
        state = jax.tree.map(lambda a: mesh.shard(a, P("probe") if a.ndim else P()), state)
    mngr = None
    if checkpoint_dir is not None:
        mngr = train.checkpoints(checkpoint_dir)
        state = train.restore_latest(mngr, state)
    last = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
    for epoch in range(int(state.epoch), last):
        state, _ = run_epoch(state, x, target, seed, task=task, batch_size=batch_size, lr=lr, per_probe=per_probe,
                             num_images=n)
        if mngr is not None:
            mngr.save(epoch + 1, args=ocp.args.StandardSave(state))
    if mngr is not None:
        mngr.wait_until_finished()
        mngr.close()
    if mesh.current() is None:
        return state.params
    return jax.tree.map(lambda a: jnp.asarray(mesh.gather(a)[:g]), state.params)


def _pad_for_mesh(x, target, keys, per_probe: bool):
    """Zero images appended up to a multiple of the data axis (`run_epoch` never draws them) and copies of the
    last probe up to a multiple of the probe axis (dropped after the fit)."""
    g = x.shape[1]
    x = mesh.pad_rows(mesh.pad_rows(np.asarray(x), 0), 1, mesh.axis_size("probe"))
    target = mesh.pad_rows(np.asarray(target), 0)
    if per_probe:
        target = mesh.pad_rows(target, 1, mesh.axis_size("probe"))
    return x, target, mesh.pad_last(keys, x.shape[1] - g)


def fit_sweep(acts: dict, labels, task: Task, *, kind: str = "linear", epochs: int = 30, batch_size: int = 4,
              lr: float = 1e-3, seed: int = 0, label_mode: str = "upsample", hidden: int = 256,
              checkpoint_dir: str | Path | None = None) -> dict[ProbeId, Params]:
    """Fit one probe per (layer, step) of `acts` {layer: [N, S, h, w, C]} on labels [N, H, W] (image-level tasks:
    {layer: [N, S, D]} on labels [N]).

    Defaults are the paper's (linear, Adam lr 1e-3, 30 epochs, batch 4, upsampled predictions). Shape groups are
    fit with `fit_group`; with `checkpoint_dir`, each group checkpoints into its own sub-directory.
    Returns {(layer, step index): params of that probe}.
    """
    task = check_task(task)
    labels = check_labels(labels, task)
    check_sweep(acts, labels, task)
    fitted = {}
    for ids, x in group_probes(acts):
        sub = None if checkpoint_dir is None else Path(checkpoint_dir) / ("group_" + "x".join(map(str, x.shape[2:])))
        keys = jnp.stack([probe_key(seed, pid) for pid in ids])
        stacked = _fit(x, labels, task, kind=kind, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       label_mode=label_mode, hidden=hidden, keys=keys, checkpoint_dir=sub)
        fitted.update(unstack(ids, stacked))
    return fitted


