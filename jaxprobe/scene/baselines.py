"""The paper's two control baselines for probing.

- Randomized model: the same network with every weight tensor permuted elementwise (biases kept), so each tensor
  keeps its value distribution but loses everything training arranged. `capture.capture_sweep` runs it on exactly
  the trained model's UNet inputs at every step.
- VAE decoder: the output of the decoder's mid-block attention (`decoder/mid_block/attentions_0`, with its
  residual, as diffusers' `decoder.mid_block.attentions.0` returns it) when decoding the predicted clean latent of
  each denoising step: does the VAE alone already encode the scene?
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import hooks

VAE_LAYER = "decoder/mid_block/attentions_0"


def randomize_params(params, seed: int):
    """Every weight leaf (any leaf not named `bias`: kernels, norm scales, embeddings) flattened, permuted and
    reshaped; biases are returned unchanged. Same pytree structure and dtypes.

    Leaf number `index` (in `jax.tree` order) is permuted by `np.random.default_rng([seed, index])`: its own
    stream per tensor, reproducible from the seed. Host-side numpy because `jax.random.permutation` compiles one
    sort per tensor size (18 s for the 304 leaves of the tiny test UNet on CPU; 85 s as one jit).
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for index, (path, leaf) in enumerate(leaves):
        if _leaf_name(path) == "bias":
            out.append(leaf)
        else:
            flat = np.random.default_rng([seed, index]).permutation(np.ravel(np.asarray(leaf)))
            out.append(jnp.asarray(flat.reshape(np.shape(leaf))))
    return jax.tree_util.tree_unflatten(treedef, out)


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def vae_decoder_activations(vae, vae_params, latents: jax.Array, *, layers: Sequence[str] = (VAE_LAYER,)):
    """Decode UNet-space latents (scaled by the VAE factor, like the scheduler's x0) and capture `layers`.

    Traceable. latents [B, h, w, c] -> {layer path: [B, H', W', C']} (the decoder mid block: H' = h, C' the widest
    VAE channel count, 512 for SD v1).
    """
    paths = hooks.select_layers(vae, layers)
    return hooks.apply(vae, vae_params, latents / vae.config.scaling_factor, record=paths, method="decode")[1]
