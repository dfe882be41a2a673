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
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import hooks
from jaxprobe.diffusion import sampling
from jaxprobe.probing import probes, saved


def optimise_activation(params, x: jax.Array, target: jax.Array, task: str, *, lr: float = 5e-3,
                        iterations: int = 128) -> jax.Array:
    """Adam on the activation x [B, h, w, C] so that probe `params` predicts `target` (from
    `probes.prepare_targets`); each image's loss is its own, so the edit of one image ignores the others."""
    optimizer = optax.adam(lr)

    def loss(a):
        return probes.probe_loss(params, a, target, task).sum()

    def body(carry, _):
        a, state = carry
        updates, state = optimizer.update(jax.grad(loss)(a), state, a)
        return (optax.apply_updates(a, updates), state), None

    x32 = x.astype(jnp.float32)
    (edited, _), _ = jax.lax.scan(body, (x32, optimizer.init(x32)), None, length=iterations)
    return edited.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class EditHook(sampling.Hook):
    """Edit `layers` (token outputs [B', T, C] of the UNet) at the steps `extra['active']` marks.

    extra: {'probes': {layer: params stacked over every sampling step [steps, ...]}, 'active': bool [steps],
    'target': [B, H, W] labels the probes should read (a mask or a depth map)}.
    """

    layers: tuple[str, ...]
    task: str
    lr: float = 5e-3
    iterations: int = 128

    def step(self, unet, params, extra, lat_in, t, context, i, b):
        hw = lat_in.shape[1:3]

        def edit(layer):
            def optimise(out):
                cond = hooks.to_spatial(out[-b:], hw)
                probe = jax.tree.map(lambda p: p[i], extra["probes"][layer])
                target = probes.prepare_targets(extra["target"], cond.shape[1:3], self.task)
                new = optimise_activation(probe, cond, target, self.task, lr=self.lr, iterations=self.iterations)
                return out.at[-b:].set(new.reshape(out[-b:].shape))
            return lambda out: jax.lax.cond(extra["active"][i], optimise, lambda o: o, out)

        pred, _ = hooks.apply(unet, params, lat_in, t, context, edit={layer: edit(layer) for layer in self.layers})
        return pred, {}


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
