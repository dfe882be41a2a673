"""Probes on captured activations: the paper's per-token linear probe, an MLP probe and a streaming ridge solver.

Activations come from `capture` as `{layer: [N, S, h, w, C]}` (N images, S steps, NHWC tokens, possibly bf16;
all arithmetic is fp32). Labels are per image at label resolution `[N, H, W]` with `H = fh*h`, `W = fw*w`:
saliency masks (nonzero = salient) or depth already z-scored (`metrics.zscore`).

Every (layer, step) pair is one probe. Probes whose activations share (h, w, C) form a group `[N, G, h, w, C]`
and are trained together: one jitted, `jax.vmap`-ed Optax step per batch, and a `lax.scan` over the batches so
that an epoch is one device call. All probes of a group see the same per-epoch permutation of the images.

Losses are exactly the paper's (prediction nearest-upsampled to label resolution) without building upsampled
tensors:
- saliency: every label pixel in a token's fh x fw block sees the same two logits, so the mean upsampled
  cross-entropy equals the mean over tokens of the soft-target CE against the block's class fractions.
- depth: Huber does not reduce to block statistics, so it is evaluated at label resolution: the labels are
  regrouped once into token-major blocks `[N, h, w, fh*fw]` and the `[N, h, w, 1]` prediction is broadcast
  against them (no upsampled tensor; the token-major copy made the loss ~2x faster on CPU than broadcasting
  against the strided `[N, h, fh, w, fw]` view).
`label_mode='downsample'` instead pools the labels to token resolution (majority vote / block mean) and the loss
is taken there; evaluation is at label resolution in both modes, so the two can be compared.
"""
from __future__ import annotations

import functools
import zlib
from pathlib import Path
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxprobe import metrics

TASKS = {"saliency": 2, "depth": 1}  # task -> probe output width
KINDS = ("linear", "mlp")
LABEL_MODES = ("upsample", "downsample")
METRICS = {"saliency": ("dice", "iou"), "depth": ("rmse", "spearman", "pearson")}
DEFAULT_LAMBDAS = tuple(10.0 ** np.arange(-6, 3))

Params = Any
ProbeId = tuple[str, int]  # (layer path, step index into the captured steps)


def _check_choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, valid))}")


# ----------------------------------------------------------------------------------------------- probes


def init_probe(key: jax.Array, kind: str, task: str, channels: int, *, hidden: int = 256) -> Params:
    """A fresh probe for `channels`-wide tokens.

    'linear': {'kernel': [C, out]}, no bias, zeros (the problem is convex; zeros make fits independent of keys).
    'mlp': one ReLU hidden layer, {'hidden': {'kernel': [C, hidden], 'bias'}, 'out': {'kernel': [hidden, out],
    'bias'}}, initialised like `flax.linen.Dense` (lecun-normal kernels, zero biases).
    """
    _check_choice("probe kind", kind, KINDS)
    _check_choice("task", task, TASKS)
    out = TASKS[task]
    if kind == "linear":
        return {"kernel": jnp.zeros((channels, out), jnp.float32)}
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
    return x @ params["kernel"]


def upsample(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Nearest upsampling by integer factors: [..., h, w] -> [..., H, W]."""
    fh, fw = _factors(x.shape[-2:], out_hw, "predictions")
    return jnp.repeat(jnp.repeat(x, fh, axis=-2), fw, axis=-1)


@functools.partial(jax.jit, static_argnames="out_hw")
def predict(params: Params, acts: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Label-resolution predictions of one probe: acts [..., N, h, w, C] -> [..., N, H, W].

    Two logits (saliency) give the argmax mask (bool); one output (depth) gives the depth map; both nearest-upsampled.
    """
    logits = apply_probe(params, acts)
    tokens = jnp.argmax(logits, axis=-1).astype(bool) if logits.shape[-1] == 2 else logits[..., 0]
    return upsample(tokens, out_hw)


# ---------------------------------------------------------------------------------------- labels & losses


def _factors(hw: Sequence[int], out_hw: Sequence[int], what: str) -> tuple[int, int]:
    (h, w), (H, W) = hw, out_hw
    if h == 0 or w == 0 or H % h or W % w:
        raise ValueError(f"{what} at label resolution {H}x{W} are not an integer multiple of the {h}x{w} token "
                         f"grid")
    return H // h, W // w


def _blocks(labels: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """labels [N, H, W] -> [N, h, fh, w, fw]: each token's block of label pixels (a reshape, no copy)."""
    n, H, W = labels.shape
    fh, fw = _factors(hw, (H, W), f"labels of shape {tuple(labels.shape)}")
    return labels.reshape(n, hw[0], fh, hw[1], fw)


def prepare_targets(labels, hw: tuple[int, int], task: str, label_mode: str = "upsample") -> jax.Array:
    """What `probe_loss` compares a probe's [N, h, w, out] output with, for an h x w token grid.

    saliency: class fractions per token [N, h, w, 2] — the block's (background, salient) histogram / (fh*fw) for
      'upsample' (exact upsampled CE), a one-hot majority vote (ties -> salient) for 'downsample'.
    depth: each token's block of labels [N, h, w, fh*fw] for 'upsample' (exact label-resolution Huber), the
      block mean [N, h, w, 1] for 'downsample'.
    """
    _check_choice("task", task, TASKS)
    _check_choice("label_mode", label_mode, LABEL_MODES)
    if task == "saliency":
        frac = _blocks(jnp.asarray(labels) > 0, hw).mean(axis=(2, 4), dtype=jnp.float32)
        if label_mode == "downsample":
            frac = (frac >= 0.5).astype(jnp.float32)
        return jnp.stack([1.0 - frac, frac], axis=-1)
    blocks = _blocks(jnp.asarray(labels, jnp.float32), hw)
    blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(*blocks.shape[:2], hw[1], -1)
    return blocks.mean(axis=-1, keepdims=True) if label_mode == "downsample" else blocks


def probe_loss(params: Params, acts: jax.Array, target: jax.Array, task: str) -> jax.Array:
    """Per-image loss of one probe: acts [B, h, w, C], target from `prepare_targets` [B, ...] -> [B].

    saliency: mean over tokens of softmax CE vs the class fractions (== mean CE of the nearest-upsampled logits);
    depth: mean over label pixels of Huber (delta 1), the [B, h, w, 1] prediction broadcast against the blocks.
    """
    _check_choice("task", task, TASKS)
    logits = apply_probe(params, acts)
    if task == "saliency":
        return optax.softmax_cross_entropy(logits, target).mean(axis=(-2, -1))
    return optax.huber_loss(logits, target, delta=1.0).mean(axis=(-3, -2, -1))


# -------------------------------------------------------------------------------------- vmapped fitting


@flax.struct.dataclass
class FitState:
    """Training state of a group of G probes: every leaf of `params`/`opt_state` has a leading [G] axis."""
    epoch: jax.Array  # int32 scalar: epochs completed
    params: Params
    opt_state: Any


@functools.partial(jax.jit, static_argnames=("kind", "task", "channels", "lr", "hidden"))
def init_state(keys: jax.Array, kind: str, task: str, channels: int, *, lr: float = 1e-3,
               hidden: int = 256) -> FitState:
    """Stacked fresh probes and Adam states for the G probes of a group; keys [G] (one per probe)."""
    params = jax.vmap(lambda k: init_probe(k, kind, task, channels, hidden=hidden))(keys)
    return FitState(epoch=jnp.asarray(0, jnp.int32), params=params, opt_state=jax.vmap(optax.adam(lr).init)(params))


@functools.partial(jax.jit, static_argnames=("task", "batch_size", "lr"), donate_argnums=0)
def run_epoch(state: FitState, x: jax.Array, target: jax.Array, seed, *, task: str, batch_size: int = 4,
              lr: float = 1e-3) -> tuple[FitState, jax.Array]:
    """One epoch for a group, as one device call: x [N, G, h, w, C], target [N, ...] -> (state, mean loss [G]).

    The images are shuffled by a permutation that depends only on (seed, epoch), shared by all probes. A last
    partial batch is padded and masked, so its loss is the mean over its real images (PyTorch's drop_last=False).
    """
    n = x.shape[0]
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

    step = jax.vmap(step_one, in_axes=(0, 0, 1, None, None))

    def body(carry, batch):
        bidx, wb = batch
        params, opt_state, loss = step(*carry, x[bidx], target[bidx], wb)
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(body, (state.params, state.opt_state), (idx, weight))
    return FitState(epoch=state.epoch + 1, params=params, opt_state=opt_state), losses.mean(axis=0)


def fit_group(x: jax.Array, labels, task: str, *, kind: str = "linear", epochs: int = 30, batch_size: int = 4,
              lr: float = 1e-3, seed: int = 0, label_mode: str = "upsample", hidden: int = 256,
              keys: jax.Array | None = None, checkpoint_dir: str | Path | None = None,
              stop_after_epoch: int | None = None) -> Params:
    """Fit the G probes of one shape group at once: x [N, G, h, w, C], labels [N, H, W] -> params (leaves [G, ...]).

    Args:
      keys: [G] init keys, one per probe (only the MLP uses them); default fold_in(key(seed), g).
      checkpoint_dir: if given, the state is saved there after every epoch (orbax) and a later call resumes from
        the newest checkpoint; the result is bit-identical to an uninterrupted fit.
      stop_after_epoch: stop once this many epochs are done (after checkpointing); simulates a kill in tests.
    """
    labels = _check_labels(labels, task)
    _check_acts("activations", x, len(labels), group=True)
    if keys is None:
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(x.shape[1]))
    return _fit(x, labels, task, kind=kind, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                label_mode=label_mode, hidden=hidden, keys=keys, checkpoint_dir=checkpoint_dir,
                stop_after_epoch=stop_after_epoch)


def _fit(x, labels, task, *, kind, epochs, batch_size, lr, seed, label_mode, hidden, keys, checkpoint_dir,
         stop_after_epoch=None) -> Params:
    """`fit_group` on already validated inputs."""
    _check_choice("probe kind", kind, KINDS)
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    target = prepare_targets(labels, x.shape[2:4], task, label_mode)
    state = init_state(keys, kind, task, x.shape[-1], lr=lr, hidden=hidden)
    mngr = None
    if checkpoint_dir is not None:
        mngr = ocp.CheckpointManager(Path(checkpoint_dir).absolute(), options=ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=False))
        if mngr.latest_step() is not None:
            state = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(state))
    last = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
    for epoch in range(int(state.epoch), last):
        state, _ = run_epoch(state, x, target, seed, task=task, batch_size=batch_size, lr=lr)
        if mngr is not None:
            mngr.save(epoch + 1, args=ocp.args.StandardSave(state))
    if mngr is not None:
        mngr.wait_until_finished()
        mngr.close()
    return state.params


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


def _probe_key(seed: int, probe: ProbeId) -> jax.Array:
    """Init key of one probe from its identity, so a probe is initialised the same in any group."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), zlib.crc32(probe[0].encode())), probe[1])


def _unstack(ids: list[ProbeId], stacked: Params) -> dict[ProbeId, Params]:
    return {pid: jax.tree.map(lambda p, g=g: p[g], stacked) for g, pid in enumerate(ids)}


def fit_sweep(acts: dict, labels, task: str, *, kind: str = "linear", epochs: int = 30, batch_size: int = 4,
              lr: float = 1e-3, seed: int = 0, label_mode: str = "upsample", hidden: int = 256,
              checkpoint_dir: str | Path | None = None) -> dict[ProbeId, Params]:
    """Fit one probe per (layer, step) of `acts` {layer: [N, S, h, w, C]} on labels [N, H, W].

    Defaults are the paper's (linear, Adam lr 1e-3, 30 epochs, batch 4, upsampled predictions). Shape groups are
    fit with `fit_group`; with `checkpoint_dir`, each group checkpoints into its own sub-directory.
    Returns {(layer, step index): params of that probe}.
    """
    labels = _check_labels(labels, task)
    _check_sweep(acts, labels)
    fitted = {}
    for ids, x in group_probes(acts):
        sub = None if checkpoint_dir is None else Path(checkpoint_dir) / "group_{}x{}x{}".format(*x.shape[2:])
        keys = jnp.stack([_probe_key(seed, pid) for pid in ids])
        stacked = _fit(x, labels, task, kind=kind, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       label_mode=label_mode, hidden=hidden, keys=keys, checkpoint_dir=sub)
        fitted.update(_unstack(ids, stacked))
    return fitted


def evaluate_sweep(fitted: dict[ProbeId, Params], acts: dict, labels,
                   task: str) -> dict[ProbeId, dict[str, np.ndarray]]:
    """Per-image scores at label resolution: {(layer, step): {metric: [N]}} (`METRICS[task]`).

    Saliency: Dice and IoU of the argmax mask vs `labels > 0`; depth: RMSE, Spearman, Pearson (z-scored labels).
    One probe at a time, so host memory stays at one [N, H, W] prediction.
    """
    labels = _check_labels(labels, task)
    _check_sweep(acts, labels)
    truth = np.asarray(labels > 0) if task == "saliency" else np.asarray(labels)
    out_hw = tuple(labels.shape[1:])
    scores = {}
    for (layer, step), params in fitted.items():
        if layer not in acts:
            raise ValueError(f"probe for layer {layer!r} has no activations; layers given: {', '.join(acts)}")
        pred = np.asarray(predict(params, acts[layer][:, step], out_hw))
        scores[(layer, step)] = {m: getattr(metrics, m)(pred, truth) for m in METRICS[task]}
    return scores


# ------------------------------------------------------------------------------------------ streaming ridge


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


def ridge_targets(labels, hw: tuple[int, int], task: str) -> jax.Array:
    """Token-level regression targets [N, h, w]: depth -> block mean; saliency -> salient fraction - 0.5.

    Least squares of a nearest-upsampled prediction at label resolution equals least squares on these block
    means (the within-block variance is a constant), so the ridge fit is the label-resolution fit. The 0.5 shift
    lets a bias-free probe put its threshold (fraction > 0.5) at zero.
    """
    _check_choice("task", task, TASKS)
    if task == "saliency":
        return _blocks(jnp.asarray(labels) > 0, hw).mean(axis=(2, 4), dtype=jnp.float32) - 0.5
    return _blocks(jnp.asarray(labels, jnp.float32), hw).mean(axis=(2, 4))


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


def ridge_params(w: jax.Array, task: str) -> Params:
    """Ridge weights [..., C] -> linear-probe params {'kernel': [..., C, out]} usable by `apply_probe`/`predict`.

    Saliency gets logits (-x.w/2, x.w/2): the argmax is 'salient' exactly when the predicted fraction exceeds 0.5.
    """
    _check_choice("task", task, TASKS)
    kernel = jnp.stack([-w / 2, w / 2], axis=-1) if task == "saliency" else w[..., None]
    return {"kernel": kernel}


def accumulate_ridge(accs: dict | None, acts: dict, labels,
                     task: str) -> dict[tuple, tuple[list[ProbeId], RidgeAccumulator]]:
    """Add one batch of images {layer: [B, S, h, w, C]} with labels [B, H, W] to every shape group's accumulator.

    `accs` is None for the first batch, then what this returned; keys are the groups' (h, w, C). Call it once per
    sampling batch: nothing but the [G, C, C] statistics is kept.
    """
    labels = _check_labels(labels, task)
    _check_sweep(acts, labels)
    accs = dict(accs or {})
    for ids, x in group_probes(acts):
        shape = tuple(x.shape[2:])
        prev_ids, acc = accs.get(shape, (ids, RidgeAccumulator.zeros(len(ids), shape[-1])))
        if prev_ids != ids:
            raise ValueError(f"batch has probes {ids} for shape {shape}, earlier batches had {prev_ids}")
        accs[shape] = (ids, acc.update(x, ridge_targets(labels, shape[:2], task)))
    return accs


def fit_ridge_sweep(acts: dict, labels, task: str, *, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                    val: tuple[dict, Any] | None = None, val_fraction: float = 0.2, batch_size: int = 16,
                    seed: int = 0) -> tuple[dict[ProbeId, Params], dict[ProbeId, float]]:
    """Closed-form ridge probe per (layer, step), lambda chosen per probe by validation token MSE.

    Args:
      val: (acts, labels) of a validation split; default: a seeded random `val_fraction` of the given images.
      batch_size: images per streamed `accumulate_ridge` call.
    Returns:
      ({(layer, step): linear-probe params}, {(layer, step): chosen lambda}).
    """
    labels = _check_labels(labels, task)
    _check_sweep(acts, labels)
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
        fitted.update(_unstack(ids, ridge_params(w_best, task)))
        chosen.update({pid: float(lam[b]) for pid, b in zip(ids, np.asarray(best))})
    return fitted, chosen


# ---------------------------------------------------------------------------------------------- validation


def _check_labels(labels, task: str) -> jax.Array:
    _check_choice("task", task, TASKS)
    labels = jnp.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [N, H, W], got shape {tuple(labels.shape)}")
    if labels.shape[0] == 0:
        raise ValueError("empty split: labels hold 0 images")
    if task == "depth" and not bool(jnp.isfinite(labels).all()):
        raise ValueError("depth labels contain NaN or inf")
    return labels


def _check_acts(name: str, a, n_labels: int, *, group: bool = False) -> None:
    """One activation array [N, S (or G), h, w, C]: rank, image count vs labels, finiteness."""
    if a.ndim != 5:
        layout = "[N, G, h, w, C]" if group else "[N, S, h, w, C]"
        raise ValueError(f"activations of {name} must be {layout}, got shape {tuple(a.shape)}")
    if a.shape[0] != n_labels:
        raise ValueError(f"activations of {name} hold {a.shape[0]} images but the labels hold {n_labels}")
    if not bool(jnp.isfinite(a).all()):
        raise ValueError(f"activations of {name} contain NaN or inf")


def _check_sweep(acts: dict, labels: jax.Array) -> None:
    if not acts:
        raise ValueError("no activations: the acts dict is empty")
    for layer, a in acts.items():
        _check_acts(f"layer {layer!r}", a, len(labels))
        _factors(a.shape[2:4], labels.shape[1:], f"labels of shape {tuple(labels.shape)} (layer {layer!r}, "
                                                  f"activations {tuple(a.shape)})")
