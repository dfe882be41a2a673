"""The edit's alternatives to the paper's re-drawing of the whole scene: a region the edit may touch, the smallest
change that makes a linear probe read the target (closed form), and how large a change was, inside and outside
the region.

The paper's Adam edit moves every token with a nonzero gradient by ~lr per iteration (Adam normalises each
element's step), so it re-draws the whole toy scene; these measure and bound that (`intervene.EditHook`'s modes).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from jaxprobe.probing import probes
from jaxprobe.probing.tasks import Task, check_task

# EditHook's aux keys: per image [B], summed over the edited layers (and by the caller over steps). 'delta' is the
# change of the conditional activation, 'act' the activation before the edit; '_in'/'_out' split the tokens by the
# region (NaN without one).
SUM_KEYS = ("delta_sq", "act_sq", "delta_sq_in", "act_sq_in", "delta_sq_out", "act_sq_out")


def edit_region(source, target, radius: int) -> np.ndarray:
    """The region a local edit may change: the object where it is (`source`) and where it should go (`target`),
    both [B, H, W] masks, united and dilated by `radius` label pixels (a square), so the edit can also redraw the
    object's border and what it uncovers."""
    union = (np.asarray(source) > 0) | (np.asarray(target) > 0)
    if radius <= 0:
        return union
    return ndimage.binary_dilation(union, structure=np.ones((1, 2 * radius + 1, 2 * radius + 1), bool))


def token_region(region: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """A region [B, H, W] at label resolution -> [B, h, w] tokens: a token is inside if any of its label pixels is."""
    return probes.blocks(jnp.asarray(region) > 0, hw).any(axis=(2, 4))


def min_norm_edit(params, x: jax.Array, labels: jax.Array, task: Task, *, margin: float = 1.0,
                  region: jax.Array | None = None) -> jax.Array:
    """The smallest change of each token of x [B, h, w, C] after which linear or affine probe `params` reads
    `labels` [B, H, W], per token along the probe's direction w (closed form, no iterations).

    mask tasks: the target class of a token is its label block's majority (ties positive), s = +-1; the logit
    margin z = logit_1 - logit_0 moves to s * margin where s * z < margin (else the token stays):
    delta = max(0, margin - s z) / |w|^2 * s w, w = kernel[:, 1] - kernel[:, 0]. margin > 0 is what makes the
    probe's argmax flip (a margin of 0 leaves a positive token on the tie, which argmax reads as negative).
    dense tasks: the output z moves to its block's mean t: delta = (t - z) / |w|^2 * w, w = kernel[:, 0].
    z is the probe's own output (`probes.apply_probe`), so the result is what the probe reads. A probe with w = 0
    (an unedited step's zero probe) changes nothing, and so do tokens outside `region` (bool [B, h, w]) if given.
    """
    kind = check_task(task).kind
    if "hidden" in params:
        raise ValueError("mode 'min_norm' is the closed form for linear and affine probes; an mlp probe has no "
                         "single direction: use mode 'adam'")
    if kind not in ("mask", "dense"):
        raise ValueError(f"mode 'min_norm' edits token maps; task kind {kind!r} has none")
    x32 = x.astype(jnp.float32)
    target = probes.prepare_targets(labels, x.shape[1:3], task, "downsample")
    logits = probes.apply_probe(params, x32)
    kernel = params["kernel"].astype(jnp.float32)
    if kind == "mask":
        w, z = kernel[:, 1] - kernel[:, 0], logits[..., 1] - logits[..., 0]
        sign = 2.0 * target[..., 1] - 1.0
        step = jnp.maximum(0.0, margin - sign * z) * sign
    else:
        w, z = kernel[:, 0], logits[..., 0]
        step = target[..., 0] - z
    wsq = jnp.sum(jnp.square(w))
    step = jnp.where(wsq > 0, step / jnp.where(wsq > 0, wsq, 1.0), 0.0)
    moved = (step != 0 if region is None else (step != 0) & region)[..., None]
    return jnp.where(moved, x32 + step[..., None] * w, x32).astype(x.dtype)


def change_sums(before: jax.Array, after: jax.Array, region: jax.Array | None) -> dict[str, jax.Array]:
    """{SUM_KEYS: [B]} for one edit of activations [B, h, w, C]: squared L2 norms of the change and of the
    activation before it, over all tokens and split by the token region [B, h, w] (NaN without one)."""
    before = before.astype(jnp.float32)
    return token_sums(jnp.sum(jnp.square(after.astype(jnp.float32) - before), axis=-1),
                      jnp.sum(jnp.square(before), axis=-1), region)


def token_sums(delta_sq: jax.Array, act_sq: jax.Array, region: jax.Array | None) -> dict[str, jax.Array]:
    """`change_sums` from per-token squared norms [B, h, w]."""
    total = lambda v: jnp.sum(v, axis=(1, 2))
    if region is None:
        nan = jnp.full(delta_sq.shape[:1], jnp.nan, jnp.float32)
        split = {"delta_sq_in": nan, "act_sq_in": nan, "delta_sq_out": nan, "act_sq_out": nan}
    else:
        split = {f"{name}_{side}": total(jnp.where(region == (side == "in"), v, 0.0))
                 for name, v in (("delta_sq", delta_sq), ("act_sq", act_sq)) for side in ("in", "out")}
    return {"delta_sq": total(delta_sq), "act_sq": total(act_sq), **split}


def change_ratios(sums: dict) -> dict[str, jax.Array]:
    """{'overall', 'in', 'out': ||delta a|| / ||a|| per image [B]} from `change_sums` or EditHook's aux, each
    summed over every axis but the first (aux kept at every step is [B, S])."""
    total = {k: jnp.sum(jnp.asarray(v).reshape(len(v), -1), axis=1) for k, v in sums.items()}
    ratio = lambda d, a: jnp.sqrt(d / a)
    return {"overall": ratio(total["delta_sq"], total["act_sq"]),
            "in": ratio(total["delta_sq_in"], total["act_sq_in"]),
            "out": ratio(total["delta_sq_out"], total["act_sq_out"])}
