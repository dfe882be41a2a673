"""Record UNet activations at chosen layers and steps from ONE sampling pass.

Layers are selected by diffusers-style path patterns (`down_blocks_0/*/attn1/to_out_0` or the dotted
`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`), matched against the module paths that Flax's
`capture_intermediates` can record. The sampler's scan body returns the selected intermediates of the conditional
CFG half at every step; steps are picked afterwards (the scan output has a fixed shape per step).
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxprobe import sampling
from jaxprobe.models import convert

# The paper's probe sites: every self-attention output before the residual add (16 in SD v1).
DEFAULT_LAYERS = ("*attn1/to_out_0",)


@functools.lru_cache(maxsize=8)
def module_paths(unet) -> tuple[str, ...]:
    """Every module path whose `__call__` output `capture_intermediates` records, in call order."""
    def run():
        variables = unet.init(jax.random.key(0), *unet.dummy_inputs())
        _, state = unet.apply(variables, *unet.dummy_inputs(), capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]
    flat = traverse_util.flatten_dict(jax.eval_shape(run))
    return tuple("/".join(k[:-1]) for k in flat if k[-1] == "__call__" and len(k) > 1)


def _normalise(pattern: str) -> str:
    """Dotted diffusers names -> Flax paths; '/' patterns pass through."""
    if "/" in pattern or "." not in pattern:
        return pattern
    return "/".join(convert.torch_key_to_path(pattern))


def select_layers(unet, patterns: Sequence[str] | str = DEFAULT_LAYERS) -> tuple[str, ...]:
    """Module paths matching any of `patterns` (fnmatch), in call order; a pattern matching nothing is an error."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    paths = module_paths(unet)
    chosen = set()
    for raw in patterns:
        pat = _normalise(raw)
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pat)]
        if not hits:
            near = difflib.get_close_matches(pat, paths, n=5, cutoff=0.3)
            raise ValueError(f"layer pattern {raw!r} matches no UNet module; nearest valid paths: "
                             + (", ".join(near) if near else ", ".join(paths[:5])))
        chosen.update(hits)
    return tuple(p for p in paths if p in chosen)


def select_steps(steps: Sequence[int] | None, num_steps: int) -> tuple[int, ...]:
    """Step indices (None = all); negative indices count from the end, out-of-range ones are an error."""
    if steps is None:
        return tuple(range(num_steps))
    out = []
    for s in steps:
        if not -num_steps <= s < num_steps:
            raise ValueError(f"step {s} is out of range for {num_steps} sampling steps (0..{num_steps - 1})")
        out.append(s % num_steps)
    return tuple(out)


def capture_model_fn(unet, layers: tuple[str, ...], *, cfg: bool, store_dtype=None) -> sampling.ModelFn:
    """A sampler model_fn that also returns {layer: activation of the conditional half} at every step."""
    wanted = frozenset(layers)

    def keep(mdl, method_name):
        return method_name == "__call__" and "/".join(mdl.path) in wanted

    def fn(params, latent_in, t, context, i):
        del i
        t = jnp.broadcast_to(t, (latent_in.shape[0],))
        pred, state = unet.apply({"params": params}, latent_in, t, context, capture_intermediates=keep,
                                 mutable=["intermediates"])
        flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
        acts = {k[: -len("/__call__")]: v[0] for k, v in flat.items()}
        acts = {k: (v[v.shape[0] // 2:] if cfg else v) for k, v in acts.items()}
        if store_dtype is not None:
            acts = {k: v.astype(store_dtype) for k, v in acts.items()}
        return pred, acts

    return fn


def to_spatial(x: jax.Array, latent_hw: tuple[int, int]) -> jax.Array:
    """Token sequences [..., T, C] -> [..., h, w, C], with h/w the latent size divided by the layer's stride."""
    tokens = x.shape[-2]
    stride = math.isqrt(latent_hw[0] * latent_hw[1] // tokens)
    h, w = latent_hw[0] // stride, latent_hw[1] // stride
    if h * w != tokens:
        raise ValueError(f"cannot lay {tokens} tokens out on the {latent_hw} latent grid")
    return x.reshape(x.shape[:-2] + (h, w, x.shape[-1]))


def capture_activations(pipe, prompts, *, layers=DEFAULT_LAYERS, steps=None, seed=0, guidance_scale=7.5,
                        num_inference_steps=15, scheduler="lms", store_dtype=None, **sample_kw):
    """Generate images and capture activations in one pass.

    Returns:
      (images uint8 [B,H,W,3], {layer path: array [B, n_steps, h, w, C]}) for the conditional CFG half.
    """
    paths = select_layers(pipe.unet, layers)
    step_idx = np.asarray(select_steps(steps, num_inference_steps))
    unet = pipe.unet.clone(dtype=jnp.dtype(sample_kw.get("dtype", jnp.float32)))
    fn = _capture_fn(unet, paths, guidance_scale > 1.0, store_dtype)
    out = sampling.sample(pipe, prompts, seed=seed, guidance_scale=guidance_scale, model_fn=fn,
                          num_inference_steps=num_inference_steps, scheduler=scheduler, **sample_kw)
    latent_hw = out.latents.shape[1:3]
    acts = {}
    for p in paths:
        a = out.aux[p][step_idx]  # [n_steps, B, T, C] for attention outputs, [n_steps, B, h, w, C] for convs
        acts[p] = jnp.swapaxes(to_spatial(a, latent_hw) if a.ndim == 4 else a, 0, 1)
    return out.images, acts


@functools.lru_cache(maxsize=16)
def _capture_fn(unet, paths, cfg, store_dtype):
    # Cached so that `sampling.sample`'s jit cache (keyed on model_fn) is hit on every batch.
    return capture_model_fn(unet, paths, cfg=cfg, store_dtype=store_dtype)
