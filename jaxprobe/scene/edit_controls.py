"""The probe-free control of the intervention: the chosen layers' activations rolled by the edit's shift at the same
steps. Any method could make this edit without a probe; an edit that moves the object no further than it has not
shown that the probe's direction matters."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxprobe import hooks
from jaxprobe.diffusion import sampling


@dataclasses.dataclass(frozen=True)
class RollHook(sampling.Hook):
    """Roll the conditional half of `layers` (token outputs [B', T, C]) at the steps `extra['active']` marks.

    extra: {'active': bool [steps], 'shift': float [B, 2]: each image's (dx, dy) as fractions of the image's width and
    height}. Each layer's token grid rolls by the shift rounded to its own tokens (wrapping at the border, so
    nothing is invented), in forward order like `intervene.EditHook`.
    """

    layers: tuple[str, ...]

    def step(self, unet, params, extra, lat_in, t, context, i, b):
        hw = lat_in.shape[1:3]

        def edit(out):
            rolled = roll_tokens(hooks.to_spatial(out[-b:], hw), extra["shift"])
            return out.at[-b:].set(rolled.reshape(out[-b:].shape))

        edits = {layer: lambda out: jax.lax.cond(extra["active"][i], edit, lambda o: o, out) for layer in self.layers}
        pred, _ = hooks.apply(unet, params, lat_in, t, context, edit=edits)
        return pred, {}


def roll_tokens(grid: jax.Array, shift: jax.Array) -> jax.Array:
    """grid [B, h, w, C] with image k rolled by shift[k] = (dx, dy) fractions of its width and height, rounded to
    whole tokens (right and down for positive shifts)."""
    tokens = jnp.round(shift * jnp.asarray([grid.shape[2], grid.shape[1]], jnp.float32)).astype(jnp.int32)
    return jax.vmap(lambda x, s: jnp.roll(x, (s[1], s[0]), axis=(0, 1)))(grid, tokens)
