"""Probe families and their losses as pure functions of (params, activations), for every registered task.

Activations come from `capture` as `{layer: [N, S, h, w, C]}` (N images, S steps, NHWC tokens, possibly bf16;
all arithmetic is fp32). Labels are per image at label resolution `[N, H, W]` with `H = fh*h`, `W = fw*w`:
masks (nonzero = positive; task kind 'mask') or real values such as z-scored depth (kind 'dense'); see
`jaxprobe.probing.tasks`.

Every (layer, step) pair is one probe. Probes whose activations share (h, w, C) form a group `[N, G, h, w, C]`
(`group_probes`), fit together by `jaxprobe.probing.fit` (SGD) or `jaxprobe.probing.ridge` (closed form).

Losses are exactly the paper's (prediction nearest-upsampled to label resolution) without building upsampled
tensors:
- masks: every label pixel in a token's fh x fw block sees the same two logits, so the mean upsampled
  cross-entropy equals the mean over tokens of the soft-target CE against the block's class fractions.
- dense: Huber does not reduce to block statistics, so it is evaluated at label resolution: the labels are
  regrouped once into token-major blocks `[N, h, w, fh*fw]` and the `[N, h, w, 1]` prediction is broadcast
  against them (no upsampled tensor; the token-major copy made the loss ~2x faster on CPU than broadcasting
  against the strided `[N, h, fh, w, fw]` view).
`label_mode='downsample'` instead pools the labels to token resolution (majority vote / block mean) and the loss
is taken there; evaluation is at label resolution in both modes, so the two can be compared.
"""
from __future__ import annotations

import functools
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe.probing import metrics, tasks
from jaxprobe.validate import check_choice

KINDS = ("linear", "affine", "mlp")
LABEL_MODES = ("upsample", "downsample")

Params = Any
ProbeId = tuple[str, int]  # (layer path, step index into the captured steps)


def init_probe(key: jax.Array, kind: str, task: str, channels: int, *, hidden: int = 256) -> Params:
    """A fresh probe for `channels`-wide tokens.

    'linear': {'kernel': [C, out]}, no bias, zeros (the problem is convex; zeros make fits independent of keys).
    'affine': the same plus {'bias': [out]}, zeros (image-level probes on unbalanced sets need the intercept).
    'mlp': one ReLU hidden layer, {'hidden': {'kernel': [C, hidden], 'bias'}, 'out': {'kernel': [hidden, out],
    'bias'}}, initialised like `flax.linen.Dense` (lecun-normal kernels, zero biases).
    """
    check_choice("probe kind", kind, KINDS)
    out = tasks.get(task).outputs
    if kind in ("linear", "affine"):
        linear = {"kernel": jnp.zeros((channels, out), jnp.float32)}
        return linear if kind == "linear" else {**linear, "bias": jnp.zeros((out,), jnp.float32)}
    k1, k2 = jax.random.split(key)
    init = jax.nn.initializers.lecun_normal()
    return {"hidden": {"kernel": init(k1, (channels, hidden)), "bias": jnp.zeros((hidden,))},
            "out": {"kernel": init(k2, (hidden, out)), "bias": jnp.zeros((out,))}}


def apply_probe(params: Params, acts: jax.Array) -> jax.Array:
    """Per-token outputs of ONE probe: acts [..., h, w, C] -> logits [..., h, w, out] (fp32).

    A pure function of (params, acts), so it can be vmapped over stacked probes and differentiated w.r.t. the
    activations through a frozen probe.
    """
    x = acts.astype(jnp.float32)
    if "hidden" in params:
        x = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
        return x @ params["out"]["kernel"] + params["out"]["bias"]
    return x @ params["kernel"] + params["bias"] if "bias" in params else x @ params["kernel"]


def upsample(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Nearest upsampling by integer factors: [..., h, w] -> [..., H, W]."""
    fh, fw = factors(x.shape[-2:], out_hw, "predictions")
    return jnp.repeat(jnp.repeat(x, fh, axis=-2), fw, axis=-1)


@functools.partial(jax.jit, static_argnames="out_hw")
def predict(params: Params, acts: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Label-resolution predictions of one probe: acts [..., N, h, w, C] -> [..., N, H, W].

    Two logits (mask tasks) give the argmax mask (bool); one output (dense tasks) the value map; both nearest-upsampled.
    """
    logits = apply_probe(params, acts)
    tokens = jnp.argmax(logits, axis=-1).astype(bool) if logits.shape[-1] == 2 else logits[..., 0]
    return upsample(tokens, out_hw)


def factors(hw: Sequence[int], out_hw: Sequence[int], what: str) -> tuple[int, int]:
    (h, w), (H, W) = hw, out_hw
    if h == 0 or w == 0 or H % h or W % w:
        raise ValueError(f"{what} at label resolution {H}x{W} are not an integer multiple of the {h}x{w} token "
                         f"grid")
    return H // h, W // w


def blocks(labels: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """labels [N, H, W] -> [N, h, fh, w, fw]: each token's block of label pixels (a reshape, no copy)."""
    n, H, W = labels.shape
    fh, fw = factors(hw, (H, W), f"labels of shape {tuple(labels.shape)}")
    return labels.reshape(n, hw[0], fh, hw[1], fw)


def prepare_targets(labels, hw: tuple[int, int], task: str, label_mode: str = "upsample") -> jax.Array:
    """What `probe_loss` compares a probe's [N, h, w, out] output with, for an h x w token grid.

    mask tasks: class fractions per token [N, h, w, 2] — the block's (negative, positive) histogram / (fh*fw)
      for 'upsample' (exact upsampled CE), a one-hot majority vote (ties -> positive) for 'downsample'.
    dense tasks: each token's block of labels [N, h, w, fh*fw] for 'upsample' (exact label-resolution Huber), the
      block mean [N, h, w, 1] for 'downsample'.
    """
    check_choice("label_mode", label_mode, LABEL_MODES)
    if tasks.get(task).kind == "mask":
        frac = blocks(jnp.asarray(labels) > 0, hw).mean(axis=(2, 4), dtype=jnp.float32)
        if label_mode == "downsample":
            frac = (frac >= 0.5).astype(jnp.float32)
        return jnp.stack([1.0 - frac, frac], axis=-1)
    grouped = blocks(jnp.asarray(labels, jnp.float32), hw)
    grouped = grouped.transpose(0, 1, 3, 2, 4).reshape(*grouped.shape[:2], hw[1], -1)
    return grouped.mean(axis=-1, keepdims=True) if label_mode == "downsample" else grouped


@jax.custom_vjp
def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [..., C] @ kernel [C, out], whose kernel gradient is formed as g^T x -> [out, C], then transposed.

    XLA's CPU dot for the plain x^T g -> [C, out] (contraction over the tokens, `out` = 2 logits) is ~20x slower
    and was the largest cost of a vmapped probe step."""
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(res, g):
    x, kernel = res
    tok, c, o = list(range(x.ndim - 1)), x.ndim - 1, x.ndim
    # the barrier keeps XLA from folding the transpose back into the dot (which would restore the slow x^T g)
    dk = jax.lax.optimization_barrier(jnp.einsum(g, [*tok, o], x, [*tok, c], [o, c])).T
    return g @ kernel.T, dk


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _logits(params: Params, acts: jax.Array) -> jax.Array:
    """`apply_probe` for the losses: the same values, with `_matmul`'s faster kernel gradient for the logits layer
    (not for an MLP's wide hidden layer: transposing its [hidden, C] gradient costs more than it saves)."""
    x = acts.astype(jnp.float32)
    if "hidden" in params:
        x = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
        params = params["out"]
    y = _matmul(x, params["kernel"])
    return y + params["bias"] if "bias" in params else y


def _soft_ce(logits: jax.Array, target: jax.Array) -> jax.Array:
    """`optax.softmax_cross_entropy` over a short last (class) axis, written class by class: the same arithmetic
    (max-shifted log-softmax, stop-gradient on the max) as elementwise ops on per-class planes, which XLA's CPU
    backend fuses into one loop; its reductions over a length-2 minor axis were ~3x slower (5x for the gradient)."""
    ls = [logits[..., k] for k in range(logits.shape[-1])]
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, ls))
    shifted = [l - m for l in ls]
    lse = jnp.log(functools.reduce(jnp.add, [jnp.exp(s) for s in shifted]))
    return -functools.reduce(jnp.add, [target[..., k] * (s - lse) for k, s in enumerate(shifted)])


def probe_loss(params: Params, acts: jax.Array, target: jax.Array, task: str) -> jax.Array:
    """Per-image loss of one probe: acts [B, h, w, C], target from `prepare_targets` [B, ...] -> [B].

    mask tasks: mean over tokens of softmax CE vs the class fractions (== mean CE of the nearest-upsampled logits);
    dense tasks: mean over label pixels of Huber (delta 1), the [B, h, w, 1] prediction broadcast against the blocks.
    """
    logits = _logits(params, acts)
    if tasks.get(task).kind == "mask":
        return _soft_ce(logits, target).mean(axis=(-2, -1))
    return optax.huber_loss(logits, target, delta=1.0).mean(axis=(-3, -2, -1))


def group_probes(acts: dict) -> list[tuple[list[ProbeId], jax.Array]]:
    """Stack every (layer, step) with equal (h, w, C): -> [(probe ids [G], x [N, G, h, w, C]), ...].

    Layers are concatenated along the step axis, so a group with one layer is its array as is (no copy).
    """
    by_shape: dict[tuple, list[str]] = {}
    for layer, a in acts.items():
        by_shape.setdefault(tuple(a.shape[2:]), []).append(layer)
    groups = []
    for layers in by_shape.values():
        ids = [(layer, s) for layer in layers for s in range(acts[layer].shape[1])]
        x = acts[layers[0]] if len(layers) == 1 else jnp.concatenate([acts[layer] for layer in layers], axis=1)
        groups.append((ids, x))
    return groups


def probe_key(seed: int, probe: ProbeId) -> jax.Array:
    """Init key of one probe from its identity, so a probe is initialised the same in any group."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), zlib.crc32(probe[0].encode())), probe[1])


def unstack(ids: list[ProbeId], stacked: Params) -> dict[ProbeId, Params]:
    return {pid: jax.tree.map(lambda p, g=g: p[g], stacked) for g, pid in enumerate(ids)}




def evaluate_sweep(fitted: dict[ProbeId, Params], acts: dict, labels,
                   task: str) -> dict[ProbeId, dict[str, np.ndarray]]:
    """Per-image scores at label resolution: {(layer, step): {metric: [N]}} (the task's metrics).

    Mask tasks are scored against `labels > 0`, dense tasks against the labels as they are.
    One probe at a time, so host memory stays at one [N, H, W] prediction.
    """
    labels = check_labels(labels, task)
    check_sweep(acts, labels)
    spec = tasks.get(task)
    truth = np.asarray(labels > 0) if spec.kind == "mask" else np.asarray(labels)
    out_hw = tuple(labels.shape[1:])
    scores = {}
    for (layer, step), params in fitted.items():
        if layer not in acts:
            raise ValueError(f"probe for layer {layer!r} has no activations; layers given: {', '.join(acts)}")
        pred = np.asarray(predict(params, acts[layer][:, step], out_hw))
        scores[(layer, step)] = {m: getattr(metrics, m)(pred, truth) for m in spec.metrics}
    return scores


@jax.jit
def _sum_of_zeros(a: jax.Array) -> jax.Array:
    return jnp.sum(a * 0, dtype=jnp.float32)  # 0 unless an entry is NaN or +-inf (then NaN); cannot overflow


def all_finite(a) -> bool:
    """Whether every entry of `a` is finite, in one fused pass (~3x faster on CPU than `isfinite(a).all()`, which
    reduces a bool array; it costs more than a probe-fitting epoch on a large group)."""
    a = jnp.asarray(a)
    return not jnp.issubdtype(a.dtype, jnp.inexact) or bool(jnp.isfinite(_sum_of_zeros(a)))


def check_labels(labels, task: str) -> jax.Array:
    """labels [N, H, W] of `task` as a jax array, or a clear error (shape, emptiness, non-finite dense labels)."""
    spec = tasks.get(task)
    labels = jnp.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [N, H, W], got shape {tuple(labels.shape)}")
    if labels.shape[0] == 0:
        raise ValueError("empty split: labels hold 0 images")
    if spec.kind == "dense" and not all_finite(labels):
        raise ValueError(f"{spec.name} labels contain NaN or inf")
    return labels


def check_group_labels(labels, task: str, probes: int) -> jax.Array:
    """A group's labels: [N, H, W] shared by its probes, or [N, G, H, W] with one label map per probe."""
    labels = jnp.asarray(labels)
    if labels.ndim != 4:
        return check_labels(labels, task)
    if labels.shape[1] != probes:
        raise ValueError(f"per-probe labels {tuple(labels.shape)} hold {labels.shape[1]} label maps for a group "
                         f"of {probes} probes")
    check_labels(labels.reshape(-1, *labels.shape[2:]), task)
    return labels


def check_acts(name: str, a, n_labels: int, *, group: bool = False) -> None:
    """One activation array [N, S (or G), h, w, C]: rank, image count vs labels, finiteness."""
    if a.ndim != 5:
        layout = "[N, G, h, w, C]" if group else "[N, S, h, w, C]"
        raise ValueError(f"activations of {name} must be {layout}, got shape {tuple(a.shape)}")
    if a.shape[0] != n_labels:
        raise ValueError(f"activations of {name} hold {a.shape[0]} images but the labels hold {n_labels}")
    if not all_finite(a):
        raise ValueError(f"activations of {name} contain NaN or inf")


def check_sweep(acts: dict, labels: jax.Array) -> None:
    if not acts:
        raise ValueError("no activations: the acts dict is empty")
    for layer, a in acts.items():
        check_acts(f"layer {layer!r}", a, len(labels))
        factors(a.shape[2:4], labels.shape[1:], f"labels of shape {tuple(labels.shape)} (layer {layer!r}, "
                                                  f"activations {tuple(a.shape)})")
