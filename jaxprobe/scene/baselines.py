"""The paper's two control baselines for probing.

- Randomized model: the same network with every weight tensor permuted elementwise (biases kept), so each tensor
  keeps its value distribution but loses everything training arranged. `capture.capture_sweep` runs it on exactly
  the trained model's UNet inputs at every step.
- VAE decoder: the output of the decoder's mid-block attention (`decoder/mid_block/attentions_0`, with its
  residual, as diffusers' `decoder.mid_block.attentions.0` returns it) when decoding a latent of each denoising
  step: does the VAE alone already encode the scene? Two models, by the latent decoded (`VAE_LATENTS`):
  - `vae`, the paper's: the noisy latent x_t, the scheduler's latent that the UNet reads at step k (for LMS
    x0 + sigma_k * eps, before `scale_model_input`). Step 0 is pure noise, so a probe there is at chance. The
    paper's code (probe_src/vis_partially_denoised_latents.py) labels as step k the latent *after* k + 1 scheduler
    steps; here step k is the latent *entering* step k, so that the VAE row at step k sees what the UNet probed at
    step k sees: their step k is our step k + 1.
  - `vae_x0`: the step's predicted clean latent x0, which already carries the UNet's output at that step (what
    the UNet's prediction alone makes decodable, not the paper's baseline).

A third control is a probe's, not a model's: `shuffled` fits the probes on the trained UNet's activations with every
fit image given another fit image's label (a control task, Hewitt & Liang 2019), scored against the true labels.
It reads what a probe gets from the labels' common layout alone, and its probes are the edit study's shuffled-label
control.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import hooks

VAE_LAYER = "decoder/mid_block/attentions_0"
VAE_LATENTS = {"vae": "xt", "vae_x0": "x0"}  # VAE baseline -> the sampler's kept latent it decodes
VAE_MODELS = tuple(VAE_LATENTS)
SHUFFLED = "shuffled"


def activations_of(model: str) -> str:
    """The model whose stored activations `model`'s probes are fit on: its own, but the shuffled-label control's
    are the trained UNet's."""
    return "trained" if model == SHUFFLED else model


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """`labels` [N, ...] permuted among the images (seeded): along one random cycle through them each image takes
    the previous one's label, so that none keeps its own (for N > 1)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    source = np.empty(len(labels), int)
    source[order] = np.roll(order, 1)
    return labels[source]


def vae_models(models: Sequence[str]) -> tuple[str, ...]:
    """The VAE baselines among a sweep's `models`, in their order."""
    return tuple(m for m in models if m in VAE_MODELS)


def vae_latents(models: Sequence[str]) -> tuple[str, ...]:
    """The sampler's latents (`sampling.Hook.keep_latents`) that the VAE baselines `models` decode."""
    return tuple(VAE_LATENTS[m] for m in models)


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
    """Decode UNet-space latents (the scheduler's x_t or x0, divided here by the VAE factor) and capture `layers`.

    Traceable. latents [B, h, w, c] -> {layer path: [B, H', W', C']} (the decoder mid block: H' = h, C' the widest
    VAE channel count, 512 for SD v1).
    """
    paths = hooks.select_layers(vae, layers)
    return hooks.apply(vae, vae_params, latents / vae.config.scaling_factor, record=paths, method="decode")[1]
