"""The paper's causal intervention, as a sampling hook: at chosen (layer, step)s the conditional half's activation
is replaced by one optimised so that the frozen probe of that layer and step predicts a modified label; denoising
continues from it.

The activation itself is the variable: `jax.grad` of the probe loss with respect to it (never the weights), Adam
(lr 5e-3, 128 iterations by default) in a `lax.scan`, run inside the UNet call by `hooks.apply`'s edit at each
chosen layer, in forward order, so a later layer is optimised on activations earlier edits already changed. The
whole edit-and-sample program is one jit: the sampling scan, a `lax.cond` on the step, the iteration scan.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import hooks, mesh
from jaxprobe.diffusion import sampling
from jaxprobe.probing import probes, saved
from jaxprobe.probing.tasks import Task
from jaxprobe.scene import edit_modes
from jaxprobe.validate import check_choice

# The paper draws each axis' shift from [-120, -90) u [90, 120) px at 512x512: the same fraction of any side.
SHIFT_RANGE = (90 / 512, 120 / 512)
DEPTH_RANGE = (-9.0, 9.0)  # the paper's min-max rescale of a shifted depth target: a strength knob


def draw_shifts(n: int, size: int, seed: int, *, fraction: tuple[float, float] = SHIFT_RANGE) -> np.ndarray:
    """[n, 2] integer (dx, dy) shifts, each axis drawn uniformly from +-[fraction[0], fraction[1]) x size."""
    low, high = (int(round(f * size)) for f in fraction)
    if not 0 < low < high <= size:
        raise ValueError(f"shift fraction {fraction} of a {size}-pixel side gives no shifts: need 0 < low < high")
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, (n, 2)) * rng.choice([-1, 1], (n, 2))


def _shift_index(length: int, d: int) -> np.ndarray:
    """Source index of every destination pixel along one axis for a shift by d (may fall outside 0..length-1)."""
    return np.arange(length) - d


def translate_mask(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """A mask [..., H, W] moved by dx pixels right and dy down; what moves in is background (0)."""
    mask = np.asarray(mask)
    rows, cols = _shift_index(mask.shape[-2], dy), _shift_index(mask.shape[-1], dx)
    inside = (rows >= 0) & (rows < mask.shape[-2])
    inside = inside[:, None] & ((cols >= 0) & (cols < mask.shape[-1]))[None, :]
    moved = mask[..., np.clip(rows, 0, mask.shape[-2] - 1)[:, None], np.clip(cols, 0, mask.shape[-1] - 1)[None, :]]
    return np.where(inside, moved, 0).astype(mask.dtype)


def shift_depth(depth: np.ndarray, dx: int, dy: int, *,
                value_range: tuple[float, float] | None = DEPTH_RANGE) -> np.ndarray:
    """A depth map [..., H, W] moved by (dx, dy) with edge fill (vacated rows and columns copy the last valid one),
    then min-max rescaled per map to `value_range`, as the paper's depth intervention does (None: not rescaled)."""
    depth = np.asarray(depth, np.float32)
    rows = np.clip(_shift_index(depth.shape[-2], dy), 0, depth.shape[-2] - 1)
    cols = np.clip(_shift_index(depth.shape[-1], dx), 0, depth.shape[-1] - 1)
    moved = depth[..., rows[:, None], cols[None, :]]
    if value_range is None:
        return moved
    lo, hi = moved.min(axis=(-2, -1), keepdims=True), moved.max(axis=(-2, -1), keepdims=True)
    unit = (moved - lo) / np.where(hi > lo, hi - lo, 1.0)
    return (value_range[0] + unit * (value_range[1] - value_range[0])).astype(np.float32)


def load_target(path, shape: tuple[int, int]) -> np.ndarray:
    """A user's target [H, W]: a .npy (a bool or 0/1 mask, or a float depth map) or a .png (nonzero = the object),
    at label resolution `shape`."""
    path = Path(path)
    if path.suffix == ".npy":
        target = np.load(path, allow_pickle=False)
    elif path.suffix == ".png":
        from PIL import Image
        target = np.asarray(Image.open(path).convert("L")) > 0
    else:
        raise ValueError(f"target {path}: expected a .npy or .png file")
    if target.shape != tuple(shape):
        raise ValueError(f"target {path} has shape {target.shape}; the labels are {tuple(shape)}")
    if not np.all(np.isfinite(target)):
        raise ValueError(f"target {path} holds NaN or inf")
    return target


def optimise_activation(params, x: jax.Array, target: jax.Array, task: Task, *, lr: float = 5e-3,
                        iterations: int = 128, relative: bool = False, stop_loss: float | None = None,
                        region: jax.Array | None = None) -> jax.Array:
    """Adam on the activation x [B, h, w, C] so that probe `params` predicts `target` (from
    `probes.prepare_targets`); each image's loss is its own, so the edit of one image ignores the others.

    relative: each image's Adam step is multiplied by its RMS (over tokens and channels of x, before the edit), so
      lr is a fraction of the activation's scale on any model (Adam's own step is ~lr whatever the scale).
    stop_loss: an image whose probe loss is <= stop_loss before an iteration is not updated by it (a masked scan:
      an image that starts there stays bit for bit).
    region: bool [B, h, w]; only those tokens change (the others stay bit for bit).
    """
    adam = optax.adam(lr)
    if relative:
        rms = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)), axis=(1, 2, 3),
                                                      keepdims=True)))
        adam = optax.chain(optax.scale_by_adam(), optax.scale(-lr), optax.stateless(lambda u, _: u * rms))

    def per_image_loss(a):
        return probes.probe_loss(params, a, target, task)

    def body(carry, _):
        a, state = carry
        if stop_loss is None:
            grad, moving = jax.grad(lambda a: per_image_loss(a).sum())(a), None
        else:
            losses, vjp = jax.vjp(per_image_loss, a)
            (grad,), moving = vjp(jnp.ones_like(losses)), (losses > stop_loss)[:, None, None, None]
        updates, state = adam.update(grad, state, a)
        new = optax.apply_updates(a, updates)
        if region is not None:
            new = jnp.where(region[..., None], new, a)
        if moving is not None:
            new = jnp.where(moving, new, a)
        return (new, state), None

    x32 = x.astype(jnp.float32)
    (edited, _), _ = jax.lax.scan(body, (x32, adam.init(x32)), None, length=iterations)
    return edited.astype(x.dtype)


MODES = ("adam", "min_norm")


@dataclasses.dataclass(frozen=True)
class EditHook(sampling.Hook):
    """Edit `layers` (token outputs [B', T, C] of the UNet) at the steps `extra['active']` marks.

    extra: {'probes': {layer: params stacked over every sampling step [steps, ...]}, 'active': bool [steps],
    'target': [B, H, W] labels the probes should read (a mask or a depth map)}, plus 'key' (a PRNG key) when
    `random_direction`: the control that moves each image's activation as far as the edit would (the same L2 norm
    per image, times `random_scale`: > 1 to match the edit's damage rather than its norm), in a random direction;
    plus 'region' (bool [B, H, W] at label resolution; a token is inside if any of its label pixels is) when `local`
    or `hold_background`, and optionally otherwise, to split the reported change by it; plus 'reference' when
    `hold_background`.

    Modes (combinable unless noted):
    - mode 'adam' (the paper's): `optimise_activation`, `iterations` of Adam at `lr` on every token;
      `relative`: the step scaled per image by the activation's RMS; `stop_loss`: an image stops once its probe
      loss (the task's: CE for masks, Huber for depth) is <= stop_loss. The loss, not IoU: it is what the edit
      lowers, for every task; a mask's CE has a floor above 0 where a token's label block is mixed.
    - mode 'min_norm': `edit_modes.min_norm_edit`, the closed-form smallest change that makes a linear or affine
      probe read the target (mask logit `margin`); lr, iterations, relative and stop_loss do not apply.
    - `local`: only tokens inside extra['region'] change; the others stay bit for bit (the random direction too).
    - `uncond_too`: the conditional half's change is added to the unconditional half's activation as well, so
      classifier-free guidance, which multiplies the difference of the halves by its scale, does not multiply the
      edit (the paper's edits the conditional half only).
    - `hold_background`: after every step, the latent outside extra['region'] is the unedited sample's
      (extra['reference'] [B, steps, h, w, c], its latents after each step): blended sampling, so whatever the
      edit does, the scene outside the region is the plain sample's up to the VAE's reach across the border.

    `step`'s aux, per image [B], summed over the edited layers (0 at steps not edited; sum over kept steps and
    pass to `edit_modes.change_ratios` for ||delta a|| / ||a||): 'delta_sq' and 'act_sq', the squared L2 norms of
    the change of the conditional activation and of the activation before it; 'delta_sq_in', 'act_sq_in',
    'delta_sq_out', 'act_sq_out', the same inside and outside extra['region'] (NaN without a region).
    """

    layers: tuple[str, ...]
    task: Task
    lr: float = 5e-3
    iterations: int = 128
    random_direction: bool = False
    random_scale: float = 1.0
    mode: str = "adam"
    relative: bool = False
    stop_loss: float | None = None
    local: bool = False
    margin: float = 1.0
    hold_background: bool = False
    uncond_too: bool = False

    def __post_init__(self):
        check_choice("edit mode", self.mode, MODES)
        if self.mode == "min_norm" and (self.relative or self.stop_loss is not None):
            raise ValueError("mode 'min_norm' is one closed-form step: relative and stop_loss apply to mode 'adam'")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")

    def step(self, unet, params, extra, lat_in, t, context, i, b):
        hw = lat_in.shape[1:3]
        if (self.local or self.hold_background) and "region" not in extra:
            raise ValueError("a local edit or a held background needs extra['region'] (bool [B, H, W] at label "
                             "resolution)")
        if self.hold_background and "reference" not in extra:
            raise ValueError("holding the background needs extra['reference'] (the unedited latents after each "
                             "step, [B, steps, h, w, c])")
        sums = []

        def edit(index, layer):
            def optimise(cond, region):
                probe = jax.tree.map(lambda p: p[i], extra["probes"][layer])
                if self.mode == "min_norm":
                    new = edit_modes.min_norm_edit(probe, cond, extra["target"], self.task, margin=self.margin,
                                                   region=region if self.local else None)
                else:
                    target = probes.prepare_targets(extra["target"], cond.shape[1:3], self.task)
                    new = optimise_activation(probe, cond, target, self.task, lr=self.lr,
                                              iterations=self.iterations, relative=self.relative,
                                              stop_loss=self.stop_loss, region=region if self.local else None)
                if self.random_direction:
                    key = jax.random.fold_in(jax.random.fold_in(extra["key"], i), index)
                    direction = jax.random.normal(key, cond.shape, jnp.float32)
                    if self.local:
                        direction = jnp.where(region[..., None], direction, 0.0)
                    new = (cond + self.random_scale * _equal_norm(direction, new - cond)).astype(cond.dtype)
                return new, edit_modes.change_sums(cond, new, region)

            def skip(cond, region):
                zero = jnp.zeros(cond.shape[:3], jnp.float32)
                return cond, edit_modes.token_sums(zero, zero, region)

            def run(out):
                cond = hooks.to_spatial(out[-b:], hw)
                region = edit_modes.token_region(extra["region"], cond.shape[1:3]) if "region" in extra else None
                new, layer_sums = jax.lax.cond(extra["active"][i], optimise, skip, cond, region)
                sums.append(layer_sums)
                new = new.reshape(out[-b:].shape)
                if self.uncond_too and out.shape[0] == 2 * b:  # under CFG
                    out = out.at[:b].add((new - out[-b:]).astype(out.dtype))
                return out.at[-b:].set(new.astype(out.dtype))
            return run

        edits = {layer: edit(k, layer) for k, layer in enumerate(self.layers)}
        pred, _ = hooks.apply(unet, params, lat_in, t, context, edit=edits)
        return pred, jax.tree.map(lambda *v: sum(v), *sums)

    def after_step(self, extra, lat, i):
        if not self.hold_background:
            return lat
        inside = edit_modes.token_region(extra["region"], lat.shape[1:3])[..., None]
        return jnp.where(inside, lat, extra["reference"][:, i].astype(lat.dtype))


class _KeepLatents(sampling.Hook):
    """The plain sample, keeping the latent entering every step: what a held background blends with."""

    keep_latents = ("xt",)


KEEP_LATENTS = _KeepLatents()  # sample(..., hook=KEEP_LATENTS, keep_steps=None), then `held_reference`


def held_reference(plain: sampling.SampleOutput) -> np.ndarray:
    """extra['reference'] of a held background, [B, steps, h, w, c]: the plain sample's latent after each step (the
    one entering the next, and the last), from a sample with `KEEP_LATENTS` at every step; on every process."""
    xt, last = mesh.gather(plain.kept["xt"]), mesh.gather(plain.latents)
    return np.concatenate([xt[:, 1:], last[:, None]], axis=1)


def _equal_norm(direction: jax.Array, like: jax.Array) -> jax.Array:
    """`direction` [B, ...] rescaled so each image's L2 norm equals that of `like` [B, ...]."""
    axes = tuple(range(1, direction.ndim))
    norm = lambda v: jnp.sqrt(jnp.sum(jnp.square(v.astype(jnp.float32)), axis=axes, keepdims=True))
    return direction * (norm(like) / jnp.maximum(norm(direction), 1e-12))


def edit_inputs(probe_set: saved.SavedProbes, layers: Sequence[str], steps: Sequence[int],
                num_steps: int) -> tuple[dict, np.ndarray]:
    """({layer: probe params stacked over all `num_steps` sampling steps (zeros where not edited)}, active [steps])
    for editing `layers` at `steps`; a (layer, step) without a saved probe is an error naming the ones there are."""
    missing = [(layer, s) for layer in layers for s in steps if (layer, s) not in probe_set.probes]
    if missing:
        have = {layer: probe_set.steps(layer) for layer in probe_set.layers()}
        raise ValueError(f"no saved {probe_set.task} probe for (layer, step) {missing[0]}; probes exist for "
                         + "; ".join(f"{layer} at steps {s}" for layer, s in have.items()))
    stacked = {}
    for layer in layers:
        zeros = jax.tree.map(np.zeros_like, probe_set.probes[(layer, steps[0])])
        per_step = [probe_set.probes[(layer, s)] if s in steps else zeros for s in range(num_steps)]
        stacked[layer] = jax.tree.map(lambda *a: jnp.stack(a), *per_step)
    active = np.zeros(num_steps, bool)
    active[list(steps)] = True
    return stacked, active
