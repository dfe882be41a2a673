"""Closed-form ridge probes, streamed: per shape group, accumulate X^T X and X^T y batch by batch (nothing else is
kept), then solve every probe for a grid of lambdas with one eigendecomposition and pick lambda on validation.
Linear probes of spatial tasks only; the result plugs into `probes.apply_probe` / `probes.predict` like an SGD fit.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.probing.probes import (
    Params,
    ProbeId,
    blocks,
    check_labels,
    check_sweep,
    group_probes,
    unstack,
)
from jaxprobe.probing.tasks import Task, check_task

DEFAULT_LAMBDAS = tuple(10.0 ** np.arange(-6, 3))


@flax.struct.dataclass
class RidgeAccumulator:
    """Least-squares sufficient statistics of G probes, summed over tokens: enough to solve and to validate."""
    xtx: jax.Array  # [G, C, C]  sum of x x^T
    xty: jax.Array  # [G, C]     sum of x y
    yty: jax.Array  # [G]        sum of y^2
    count: jax.Array  # [G]      number of tokens

    @classmethod
    def zeros(cls, groups: int, channels: int) -> "RidgeAccumulator":
        z = functools.partial(jnp.zeros, dtype=jnp.float32)
        return cls(xtx=z((groups, channels, channels)), xty=z((groups, channels)), yty=z(groups), count=z(groups))

    def update(self, x: jax.Array, y: jax.Array) -> "RidgeAccumulator":
        """Add a batch: x [B, G, h, w, C] token activations, y [B, h, w] token targets (`ridge_targets`)."""
        return _ridge_update(self, x, y)


@functools.partial(jax.jit, donate_argnums=0)
def _ridge_update(acc: RidgeAccumulator, x: jax.Array, y: jax.Array) -> RidgeAccumulator:
    hi = jax.lax.Precision.HIGHEST  # sums over ~1e6 tokens: no reduced-precision (TF32/bf16) matmul passes

    def one(xtx, xty, yty, count, xg):
        xm = xg.reshape(-1, xg.shape[-1]).astype(jnp.float32)
        yv = y.reshape(-1).astype(jnp.float32)
        return (xtx + jnp.matmul(xm.T, xm, precision=hi), xty + jnp.matmul(xm.T, yv, precision=hi),
                yty + yv @ yv, count + yv.size)

    return RidgeAccumulator(*jax.vmap(one, in_axes=(0, 0, 0, 0, 1))(acc.xtx, acc.xty, acc.yty, acc.count, x))


def ridge_targets(labels, hw: tuple[int, int], task: Task) -> jax.Array:
    """Token-level regression targets [N, h, w]: dense tasks -> block mean; mask tasks -> positive fraction - 0.5.

    Least squares of a nearest-upsampled prediction at label resolution equals least squares on these block
    means (the within-block variance is a constant), so the ridge fit is the label-resolution fit. The 0.5 shift
    lets a bias-free probe put its threshold (fraction > 0.5) at zero.
    """
    if _spatial(task).kind == "mask":
        return blocks(jnp.asarray(labels) > 0, hw).mean(axis=(2, 4), dtype=jnp.float32) - 0.5
    return blocks(jnp.asarray(labels, jnp.float32), hw).mean(axis=(2, 4))


def _spatial(task: Task) -> Task:
    """`task`, if ridge can fit it: least squares on block means needs a spatial task."""
    if not check_task(task).spatial:
        raise ValueError(f"ridge probes fit spatial tasks (mask, dense); task {task.name!r} is of kind {task.kind!r}")
    return task


@jax.jit
def ridge_solve(acc: RidgeAccumulator, lambdas: jax.Array) -> jax.Array:
    """Weights [L, G, C] solving (X^T X / n + lam * s I) w = X^T y / n for each lam in lambdas [L].

    s = trace(X^T X / n) / C, the mean eigenvalue, so one lambda grid suits layers of any activation scale.
    One eigendecomposition per probe serves every lambda.
    """
    n = acc.count[:, None]
    a, b = acc.xtx / n[..., None], acc.xty / n
    scale = jnp.trace(a, axis1=-2, axis2=-1) / a.shape[-1]
    evals, evecs = jnp.linalg.eigh(a)
    proj = jnp.einsum("gcd,gc->gd", evecs, b, precision="highest")
    coef = proj / (evals + lambdas[:, None, None] * scale[None, :, None])
    return jnp.einsum("gcd,lgd->lgc", evecs, coef, precision="highest")


@jax.jit
def ridge_mse(acc: RidgeAccumulator, w: jax.Array) -> jax.Array:
    """Mean squared token error of weights w [L, G, C] on the data summarised by `acc` -> [L, G]."""
    quad = jnp.einsum("lgc,gcd,lgd->lg", w, acc.xtx, w, precision="highest")
    lin = jnp.einsum("lgc,gc->lg", w, acc.xty, precision="highest")
    return (quad - 2.0 * lin + acc.yty) / acc.count


def ridge_params(w: jax.Array, task: Task) -> Params:
    """Ridge weights [..., C] -> linear-probe params {'kernel': [..., C, out]} usable by `apply_probe`/`predict`.

    Mask tasks get logits (-x.w/2, x.w/2): the argmax is positive exactly when the predicted fraction exceeds 0.5.
    """
    kernel = jnp.stack([-w / 2, w / 2], axis=-1) if _spatial(task).kind == "mask" else w[..., None]
    return {"kernel": kernel}


def accumulate_ridge(accs: dict | None, acts: dict, labels,
                     task: Task) -> dict[tuple, tuple[list[ProbeId], RidgeAccumulator]]:
    """Add one batch of images {layer: [B, S, h, w, C]} with labels [B, H, W] to every shape group's accumulator.

    `accs` is None for the first batch, then what this returned; keys are the groups' (h, w, C). Call it once per
    sampling batch: nothing but the [G, C, C] statistics is kept.
    """
    labels = check_labels(labels, _spatial(task))
    check_sweep(acts, labels, task)
    accs = dict(accs or {})
    for ids, x in group_probes(acts):
        shape = tuple(x.shape[2:])
        prev_ids, acc = accs.get(shape, (ids, RidgeAccumulator.zeros(len(ids), shape[-1])))
        if prev_ids != ids:
            raise ValueError(f"batch has probes {ids} for shape {shape}, earlier batches had {prev_ids}")
        accs[shape] = (ids, acc.update(x, ridge_targets(labels, shape[:2], task)))
    return accs


def fit_ridge_sweep(acts: dict, labels, task: Task, *, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                    val: tuple[dict, Any] | None = None, val_fraction: float = 0.2, batch_size: int = 16,
                    seed: int = 0) -> tuple[dict[ProbeId, Params], dict[ProbeId, float]]:
    """Closed-form ridge probe per (layer, step), lambda chosen per probe by validation token MSE.

    Args:
      val: (acts, labels) of a validation split; default: a seeded random `val_fraction` of the given images.
      batch_size: images per streamed `accumulate_ridge` call.
    Returns:
      ({(layer, step): linear-probe params}, {(layer, step): chosen lambda}).
    """
    labels = check_labels(labels, _spatial(task))
    check_sweep(acts, labels, task)
    if val is None:
        n = len(labels)
        perm = np.random.default_rng(seed).permutation(n)
        n_val = int(round(n * val_fraction))
        if not 0 < n_val < n:
            raise ValueError(f"empty split: {n} images with val_fraction={val_fraction} give {n_val} validation and "
                             f"{n - n_val} training images; pass more images, another fraction or val=(acts, labels)")
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        val = ({k: a[val_idx] for k, a in acts.items()}, labels[val_idx])
        acts, labels = {k: a[train_idx] for k, a in acts.items()}, labels[train_idx]

    def stream(a: dict, y) -> dict:
        accs = None
        for i in range(0, len(y), batch_size):
            accs = accumulate_ridge(accs, {k: v[i:i + batch_size] for k, v in a.items()}, y[i:i + batch_size], task)
        return accs

    train_accs, val_accs = stream(acts, labels), stream(*val)
    lam = jnp.asarray(lambdas, jnp.float32)
    fitted, chosen = {}, {}
    for shape, (ids, acc) in train_accs.items():
        if shape not in val_accs:
            raise ValueError(f"validation activations lack the shape group {shape} (probes {ids})")
        w = ridge_solve(acc, lam)
        best = jnp.argmin(ridge_mse(val_accs[shape][1], w), axis=0)  # [G]
        w_best = w[best, jnp.arange(len(ids))]
        fitted.update(unstack(ids, ridge_params(w_best, task)))
        chosen.update({pid: float(lam[b]) for pid, b in zip(ids, np.asarray(best))})
    return fitted, chosen
