"""Probe families and their losses as pure functions of (params, activations), for a `tasks.Task` the caller
passes.

Spatial tasks: activations come from `capture` as `{layer: [N, S, h, w, C]}` (N images, S steps, NHWC tokens,
possibly bf16; all arithmetic is fp32). Labels are per image at label resolution `[N, H, W]` with `H = fh*h`,
`W = fw*w`: masks (nonzero = positive; task kind 'mask') or real values such as z-scored depth (kind 'dense').
Image-level tasks (kind 'label'): one feature vector per image, `{layer: [N, S, D]}`, and one label per image
`[N]`; see `jaxprobe.probing.tasks`.

Every (layer, step) pair is one probe. Probes whose activations share their trailing shape form a group
`[N, G, ...]` (`group_probes`), fit together by `jaxprobe.probing.fit` (SGD) or `jaxprobe.probing.ridge` (closed
form, spatial tasks) and scored together by `evaluate_group`.

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

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import kernels
from jaxprobe.hooks import all_finite
from jaxprobe.probing import metrics
from jaxprobe.probing.tasks import Task, check_task
from jaxprobe.validate import check_choice

KINDS = ("linear", "affine", "mlp")
LABEL_MODES = ("upsample", "downsample")

Params = Any
ProbeId = tuple[str, int]  # (layer path, step index into the captured steps)
# Host memory one `evaluate_sweep` call may spend on the predictions of the probes it scores at once: probes are
# scored a stacked chunk at a time (`evaluate_group`), but never fewer than one (an SD v1 layer's test split at
# 512^2 is ~390 MB alone), so memory stays at max(one probe's predictions, this budget).
EVAL_BYTES = 1 << 28


def init_probe(key: jax.Array, kind: str, task: Task, channels: int, *, hidden: int = 256) -> Params:
    """A fresh probe for `channels`-wide tokens (or feature vectors).

    'linear': {'kernel': [C, out]}, no bias, zeros (the problem is convex; zeros make fits independent of keys).
    'affine': the same plus {'bias': [out]}, zeros (image-level probes on unbalanced sets need the intercept).
    'mlp': one ReLU hidden layer, {'hidden': {'kernel': [C, hidden], 'bias'}, 'out': {'kernel': [hidden, out],
    'bias'}}, initialised like `flax.linen.Dense` (lecun-normal kernels, zero biases).
    """
    check_choice("probe kind", kind, KINDS)
    out = check_task(task).outputs
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
    x = _checked_input(params, acts)
    if "hidden" in params:
        x = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
        return x @ params["out"]["kernel"] + params["out"]["bias"]
    return x @ params["kernel"] + params["bias"] if "bias" in params else x @ params["kernel"]


def _checked_input(params: Params, acts: jax.Array) -> jax.Array:
    """acts as fp32, after checking that their width is the probe's input width (a mismatch would otherwise
    surface as a dot-shape error deep inside a jitted, vmapped step)."""
    kernel = params["hidden"]["kernel"] if "hidden" in params else params["kernel"]
    chex.assert_axis_dimension(acts, -1, kernel.shape[0])
    return acts.astype(jnp.float32)


def upsample(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Nearest upsampling by integer factors: [..., h, w] -> [..., H, W]."""
    fh, fw = factors(x.shape[-2:], out_hw, "predictions")
    return jnp.repeat(jnp.repeat(x, fh, axis=-2), fw, axis=-1)


@functools.partial(jax.jit, static_argnames="out_hw")
def predict(params: Params, acts: jax.Array, out_hw: tuple[int, int] | None = None) -> jax.Array:
    """Predictions of one probe: acts [..., N, h, w, C] -> [..., N, H, W] at label resolution `out_hw`, or, for
    image-level probes (`out_hw` None), feature vectors [..., N, D] -> [..., N].

    Two logits (mask and label tasks) give the argmax (bool); one output (dense tasks) the value; maps are
    nearest-upsampled.
    """
    logits = apply_probe(params, acts)
    out = jnp.argmax(logits, axis=-1).astype(bool) if logits.shape[-1] == 2 else logits[..., 0]
    return out if out_hw is None else upsample(out, out_hw)


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


def prepare_targets(labels, hw: tuple[int, int] | None, task: Task, label_mode: str = "upsample") -> jax.Array:
    """What `probe_loss` compares a probe's [N, h, w, out] output with, for an h x w token grid (`hw` None for
    image-level tasks).

    mask tasks: class fractions per token [N, h, w, 2] — the block's (negative, positive) histogram / (fh*fw)
      for 'upsample' (exact upsampled CE), a one-hot majority vote (ties -> positive) for 'downsample'.
    dense tasks: each token's block of labels [N, h, w, fh*fw] for 'upsample' (exact label-resolution Huber), the
      block mean [N, h, w, 1] for 'downsample'.
    label tasks: the one-hot label [N, 2] (label_mode does not apply).
    """
    check_choice("label_mode", label_mode, LABEL_MODES)
    kind = check_task(task).kind
    if kind == "label":
        positive = (jnp.asarray(labels) > 0).astype(jnp.float32)
        return jnp.stack([1.0 - positive, positive], axis=-1)
    if kind == "mask":
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
    and was the largest cost of a vmapped probe step; the kernel 'probe_logits' (`jaxprobe.kernels`) uses this on
    CPU only."""
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
    """`apply_probe` for the losses: the same values, with `_matmul`'s kernel gradient for the logits layer where
    the kernel 'probe_logits' picks it (not for an MLP's wide hidden layer: transposing its [hidden, C] gradient
    costs more than it saves)."""
    x = _checked_input(params, acts)
    if "hidden" in params:
        x = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
        params = params["out"]
    matmul = _matmul if kernels.choose("probe_logits") == "cpu_transposed_vjp" else jnp.matmul
    y = matmul(x, params["kernel"])
    return y + params["bias"] if "bias" in params else y


def _soft_ce(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Softmax cross-entropy over a short last (class) axis: optax's, or, where the kernel 'class_ce' picks it (CPU),
    the same arithmetic (max-shifted log-softmax, stop-gradient on the max) written class by class as elementwise
    ops on per-class planes, which XLA's CPU backend fuses into one loop; its reductions over a length-2 minor axis
    were ~3x slower (5x for the gradient)."""
    if kernels.choose("class_ce") == "optax":
        return optax.softmax_cross_entropy(logits, target)
    ls = [logits[..., k] for k in range(logits.shape[-1])]
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, ls))
    shifted = [l - m for l in ls]
    lse = jnp.log(functools.reduce(jnp.add, [jnp.exp(s) for s in shifted]))
    return -functools.reduce(jnp.add, [target[..., k] * (s - lse) for k, s in enumerate(shifted)])


def probe_loss(params: Params, acts: jax.Array, target: jax.Array, task: Task) -> jax.Array:
    """Per-image loss of one probe: acts [B, h, w, C] (label tasks: [B, D]), target from `prepare_targets`
    [B, ...] -> [B].

    mask tasks: mean over tokens of softmax CE vs the class fractions (== mean CE of the nearest-upsampled logits);
    dense tasks: mean over label pixels of Huber (delta 1), the [B, h, w, 1] prediction broadcast against the blocks;
    label tasks: softmax CE vs the one-hot label.
    """
    logits = _logits(params, acts)
    chex.assert_equal_shape_prefix((logits, target), logits.ndim - 1)
    kind = check_task(task).kind
    if kind == "label":
        return _soft_ce(logits, target)
    if kind == "mask":
        return _soft_ce(logits, target).mean(axis=(-2, -1))
    return optax.huber_loss(logits, target, delta=1.0).mean(axis=(-3, -2, -1))


def group_probes(acts: dict) -> list[tuple[list[ProbeId], jax.Array]]:
    """Stack every (layer, step) with an equal trailing shape ((h, w, C), or (D,) for image-level features):
    {layer: [N, S, ...]} -> [(probe ids [G], x [N, G, ...]), ...].

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


def truth_of(labels, task: Task) -> np.ndarray:
    """What predictions are scored against: `labels > 0` for mask and label tasks, the values for dense tasks."""
    return np.asarray(labels) if task.kind == "dense" else np.asarray(labels > 0)


def score(pred, truth, task: Task, probability=None) -> dict[str, np.ndarray]:
    """{metric: per-image scores [..., N]} of predictions [..., N(, H, W)] against truth broadcastable to them;
    the task's ranking metrics (`metrics.SCORE_METRICS`, e.g. 'ap') score `probability`, the positive class's
    probability at the predictions' shape, instead of the predicted classes."""
    axis = (-2, -1) if task.spatial else ()
    out = {}
    for m in task.metrics:
        if m in metrics.SCORE_METRICS:
            if probability is None:
                raise ValueError(f"metric {m!r} of task {task.name!r} needs the positive class's probability")
            out[m] = metrics.SCORE_METRICS[m](probability, truth, axis=axis)
        else:
            out[m] = getattr(metrics, m)(pred, truth, axis=axis)
    return out


def positive_probability(params: Params, acts: jax.Array, out_hw: tuple[int, int] | None = None) -> jax.Array:
    """The positive class's probability (softmax of a 2-logit probe) at `out_hw` as `predict` upsamples:
    acts [..., N, h, w, C] -> [..., N, H, W] (image-level: [..., N, D] -> [..., N]). `predict`'s argmax is
    positive where this exceeds 0.5, save for logits so close that the probability rounds to 0.5."""
    prob = jax.nn.softmax(apply_probe(params, acts), axis=-1)[..., 1]
    return prob if out_hw is None else upsample(prob, out_hw)


def _ranks(task: Task) -> bool:
    """Whether some metric of `task` scores the positive class's probability (`metrics.SCORE_METRICS`)."""
    return any(m in metrics.SCORE_METRICS for m in task.metrics)


@functools.partial(jax.jit, static_argnames=("out_hw", "with_probability"))
def _predict_group(params: Params, x: jax.Array, out_hw, with_probability: bool = False):
    """Predictions of G stacked probes, each on its own slice of x [N, G, ...] -> [G, N, ...], and the positive
    class's probability [G, N, ...] when `with_probability` (else None)."""
    pred = jax.vmap(predict, in_axes=(0, 1, None))(params, x, out_hw)
    prob = jax.vmap(positive_probability, in_axes=(0, 1, None))(params, x, out_hw) if with_probability else None
    return pred, prob


def evaluate_group(params: Params, x, labels, task: Task) -> dict[str, np.ndarray]:
    """Per-image scores of a stacked group of G probes (leaves [G, ...], as `fit.fit_group` returns them), all
    predicted in one vmapped call: x [N, G, ...], labels [N, ...] shared by the probes or [N, G, ...] one label
    set per probe (as `fit.fit_group` takes them) -> {metric: [G, N]} (the task's metrics, at label resolution).
    """
    task = check_task(task)
    x = jnp.asarray(x)
    labels = check_group_labels(labels, task, x.shape[1])
    check_acts("activations", x, len(labels), task, group=True)
    if task.spatial:
        factors(x.shape[2:4], labels.shape[-2:], f"labels of shape {tuple(labels.shape)} (activations "
                                                 f"{tuple(x.shape)})")
    return _evaluate_group(params, x, labels, task)


def _evaluate_group(params: Params, x, labels: jax.Array, task: Task) -> dict[str, np.ndarray]:
    """`evaluate_group` on already validated inputs."""
    per_probe = labels.ndim == (4 if task.spatial else 2)
    out_hw = tuple(labels.shape[-2:]) if task.spatial else None
    want = truth_of(labels, task)
    if per_probe:
        want = np.moveaxis(want, 1, 0)  # [G, N, ...] against predictions [G, N, ...]
    pred, prob = _predict_group(params, x, out_hw, _ranks(task))
    return score(np.asarray(pred), want, task, None if prob is None else np.asarray(prob))


def evaluate_sweep(fitted: dict[ProbeId, Params], acts: dict, labels,
                   task: Task) -> dict[ProbeId, dict[str, np.ndarray]]:
    """Per-image scores: {(layer, step): {metric: [N]}} (the task's metrics), for acts {layer: [N, S, ...]} and
    labels [N, H, W] (label tasks: [N]). Mask and label tasks are scored against `labels > 0`, dense tasks against
    the labels as they are.

    A layer's probes are scored a stacked chunk at a time (`evaluate_group`), as many as `EVAL_BYTES` of
    predictions allow and at least one, so host memory stays bounded by one chunk's [G, N, H, W] predictions.
    """
    task = check_task(task)
    labels = check_labels(labels, task)
    check_sweep(acts, labels, task)
    chunk = chunk_size(labels.size, task)
    by_layer: dict[str, list[int]] = {}
    for layer, step in fitted:
        if layer not in acts:
            raise ValueError(f"probe for layer {layer!r} has no activations; layers given: {', '.join(acts)}")
        by_layer.setdefault(layer, []).append(step)
    scores = {}
    for layer, steps in by_layer.items():
        for i in range(0, len(steps), chunk):
            ids = [(layer, s) for s in steps[i:i + chunk]]
            stacked = jax.tree.map(lambda *p: jnp.stack(p), *[fitted[pid] for pid in ids])
            x = acts[layer][:, [s for _, s in ids]]
            got = _evaluate_group(stacked, jnp.asarray(x), labels, task)
            scores.update({pid: {m: v[g] for m, v in got.items()} for g, pid in enumerate(ids)})
    return {pid: scores[pid] for pid in fitted}


def chunk_size(values: int, task: Task) -> int:
    """How many items of `values` scored values each (a probe's predictions, an image's pixels) `task`'s metrics
    may score at once within `EVAL_BYTES`, and at least one: the widest intermediate is a float64 copy of them (8
    bytes a value), or `metrics.AP_BYTES` for a ranking metric."""
    return max(1, EVAL_BYTES // (values * (metrics.AP_BYTES if _ranks(task) else 8)))


def check_labels(labels, task: Task) -> jax.Array:
    """labels of `task` ([N, H, W] maps, or [N] for label tasks) as a jax array, or a clear error (shape,
    emptiness, non-finite dense labels)."""
    task = check_task(task)
    labels = jnp.asarray(labels)
    want = 3 if task.spatial else 1
    if labels.ndim != want:
        layout = "[N, H, W]" if task.spatial else "[N] (one label per image)"
        raise ValueError(f"labels of task {task.name!r} must be {layout}, got shape {tuple(labels.shape)}")
    if labels.shape[0] == 0:
        raise ValueError("empty split: labels hold 0 images")
    if task.kind == "dense" and not all_finite(labels):
        raise ValueError(f"{task.name} labels contain NaN or inf")
    return labels


def check_group_labels(labels, task: Task, probes: int) -> jax.Array:
    """A group's labels: [N, H, W] shared by its probes, or [N, G, H, W] with one label map per probe (label
    tasks: [N] or [N, G])."""
    task = check_task(task)
    labels = jnp.asarray(labels)
    if labels.ndim != (4 if task.spatial else 2):
        return check_labels(labels, task)
    if labels.shape[1] != probes:
        raise ValueError(f"per-probe labels {tuple(labels.shape)} hold {labels.shape[1]} label sets for a group "
                         f"of {probes} probes")
    check_labels(labels.reshape(-1, *labels.shape[2:]), task)
    return labels


def check_acts(name: str, a, n_labels: int, task: Task, *, group: bool = False) -> None:
    """One activation array [N, S (or G), h, w, C] ([N, S, D] for label tasks): rank, image count vs labels,
    finiteness."""
    rank, layout = (5, "h, w, C") if check_task(task).spatial else (3, "D")
    if a.ndim != rank:
        raise ValueError(f"activations of {name} must be [N, {'G' if group else 'S'}, {layout}] for task "
                         f"{task.name!r}, got shape {tuple(a.shape)}")
    if a.shape[0] != n_labels:
        raise ValueError(f"activations of {name} hold {a.shape[0]} images but the labels hold {n_labels}")
    if not all_finite(a):
        raise ValueError(f"activations of {name} contain NaN or inf")


def check_sweep(acts: dict, labels: jax.Array, task: Task) -> None:
    if not acts:
        raise ValueError("no activations: the acts dict is empty")
    for layer, a in acts.items():
        check_acts(f"layer {layer!r}", a, len(labels), task)
        if task.spatial:
            factors(a.shape[2:4], labels.shape[1:], f"labels of shape {tuple(labels.shape)} (layer {layer!r}, "
                                                      f"activations {tuple(a.shape)})")
