"""Record UNet activations at chosen layers and steps from ONE jit-compiled sampling pass.

Layers are selected by diffusers-style path patterns (`down_blocks_0/*/attn1/to_out_0` or the dotted
`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`), matched against the module paths that Flax's
`capture_intermediates` can record. The sampling scan carries one buffer per layer shaped [B, S, ...] for the S
selected steps; step i writes its conditional-CFG-half activation into its slot (or nowhere when it is not
selected), so unselected steps are never stored.

- `capture_activations` / `capture_sweep`: generate images and capture the trained UNet, optionally also the
  randomized-weight UNet on the very same inputs and the VAE decoder on each step's predicted x0 (`baselines`).
- `capture_encoded`: real images encoded by the VAE and noised to each selected step's noise level (exact labels).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxprobe import baselines, sampling, schedulers
from jaxprobe.models import convert

# The paper's probe sites: every self-attention output before the residual add (16 in SD v1).
DEFAULT_LAYERS = ("*attn1/to_out_0",)


@functools.lru_cache(maxsize=8)
def module_paths(module) -> tuple[str, ...]:
    """Every module path whose `__call__` output `capture_intermediates` records on `module(*dummy_inputs())`,
    in call order (shapes only; nothing is computed)."""
    def run():
        variables = module.init(jax.random.key(0), *module.dummy_inputs())
        _, state = module.apply(variables, *module.dummy_inputs(), capture_intermediates=True,
                                mutable=["intermediates"])
        return state["intermediates"]
    flat = traverse_util.flatten_dict(jax.eval_shape(run))
    return tuple("/".join(k[:-1]) for k in flat if k[-1] == "__call__" and len(k) > 1)


def _normalise(pattern: str) -> str:
    """Dotted diffusers names -> Flax paths; '/' patterns pass through."""
    if "/" in pattern or "." not in pattern:
        return pattern
    return "/".join(convert.torch_key_to_path(pattern))


def select_layers(module, patterns: Sequence[str] | str = DEFAULT_LAYERS) -> tuple[str, ...]:
    """Module paths matching any of `patterns` (fnmatch), in call order; a pattern matching nothing is an error
    that lists the nearest valid paths."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise ValueError("no layer patterns given")
    paths = module_paths(module)
    chosen = set()
    for raw in patterns:
        pat = _normalise(raw)
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pat)]
        if not hits:
            near = difflib.get_close_matches(pat, paths, n=5, cutoff=0.3) or list(paths[:5])
            kind = {"UNet2DConditionModel": "UNet", "AutoencoderKL": "VAE"}.get(type(module).__name__,
                                                                               type(module).__name__)
            raise ValueError(f"layer pattern {raw!r} matches no {kind} module; "
                             f"nearest valid paths: {', '.join(near)}")
        chosen.update(hits)
    return tuple(p for p in paths if p in chosen)


def select_steps(steps: Sequence[int] | None, num_steps: int) -> tuple[int, ...]:
    """Step indices (None = all), in the given order; negative indices count from the end. Out-of-range or
    repeated steps are an error."""
    if steps is None:
        return tuple(range(num_steps))
    out = []
    for s in steps:
        if not -num_steps <= s < num_steps:
            raise ValueError(f"step {s} is out of range for {num_steps} sampling steps (0..{num_steps - 1})")
        if s % num_steps in out:
            raise ValueError(f"step {s} is selected twice (steps {list(steps)} for {num_steps} sampling steps)")
        out.append(s % num_steps)
    if not out:
        raise ValueError("no steps selected")
    return tuple(out)


def apply_capturing(module, params, paths: Sequence[str], *args, method=None):
    """`module.apply` that also returns {path: output of that submodule's first call} for `paths`. Traceable."""
    wanted = frozenset(paths)

    def keep(mdl, method_name):
        return method_name == "__call__" and "/".join(mdl.path) in wanted

    out, state = module.apply({"params": params}, *args, method=method, capture_intermediates=keep,
                              mutable=["intermediates"])
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    return out, {k[: -len("/__call__")]: v[0] for k, v in flat.items()}


def to_spatial(x: jax.Array, latent_hw: tuple[int, int]) -> jax.Array:
    """Token sequences [..., T, C] -> [..., h, w, C], with h/w the latent size divided by the layer's stride."""
    tokens = x.shape[-2]
    stride = math.isqrt(latent_hw[0] * latent_hw[1] // tokens)
    h, w = latent_hw[0] // stride, latent_hw[1] // stride
    if h * w != tokens:
        raise ValueError(f"cannot lay {tokens} tokens out on the {latent_hw} latent grid")
    return x.reshape(x.shape[:-2] + (h, w, x.shape[-1]))


def check_finite(acts: Mapping[str, jax.Array], what: str = "activations") -> None:
    """Raise a ValueError naming every layer whose activations contain NaN or inf (one device->host transfer)."""
    flags = jax.device_get({k: jnp.all(jnp.isfinite(v)) for k, v in acts.items()})
    bad = [k for k in acts if not flags[k]]
    if bad:
        raise ValueError(f"non-finite (NaN/inf) {what} at layer(s): {', '.join(bad)}; check the weights, the "
                         "dtype (bf16 overflow?) and the inputs")


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """One sampling pass. images uint8 [B,H,W,3]; acts {layer: [B,S,h,w,C]} (conditional CFG half, S selected
    steps in the requested order); randomized: the same layers of the randomized-weight UNet on the same inputs,
    or None; vae {VAE layer: [B,S,H',W',C']} of the decoder on each selected step's predicted x0, or None;
    latents [B,h,w,c] final (UNet space, as `sampling.SampleOutput.latents`)."""

    images: np.ndarray
    acts: dict[str, jax.Array]
    randomized: dict[str, jax.Array] | None
    vae: dict[str, jax.Array] | None
    latents: jax.Array


def capture_sweep(pipe, prompts, *, layers=DEFAULT_LAYERS, steps=None, seed=0, guidance_scale=7.5,
                  num_inference_steps=15, scheduler="lms", store_dtype=None, randomized_seed: int | None = None,
                  vae_baseline: bool = False, dtype=jnp.float32, height=None, width=None, latents=None,
                  negative_prompt: str = "") -> CaptureResult:
    """Generate images and capture the trained UNet (and optionally both baselines) in ONE jitted pass.

    Sampling is exactly `sampling.sample` with the same arguments (the trained UNet's prediction drives it).
    `randomized_seed`: also run `baselines.randomize_params(unet params, randomized_seed)` on the trained
    model's conditional UNet inputs (x_t, t, text) at every step and capture the same layers. `vae_baseline`:
    decode each selected step's predicted x0 and capture `baselines.VAE_LAYER`. `store_dtype` (e.g. bf16) is
    the dtype the activations are kept in.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    paths = select_layers(pipe.unet, layers)
    step_idx = select_steps(steps, num_inference_steps)
    req = sampling.prepare(pipe, prompts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                           seed=seed, height=height, width=width, scheduler=scheduler, latents=latents,
                           negative_prompt=negative_prompt)
    dtype = jnp.dtype(dtype)
    store_dtype = None if store_dtype is None else jnp.dtype(store_dtype)
    run = _compiled_sweep(_modules(pipe), req.sched, req.guidance, dtype, paths, len(step_idx), store_dtype,
                          randomized_seed is not None, vae_baseline)
    slots = np.full(num_inference_steps, -1, np.int32)
    slots[list(step_idx)] = np.arange(len(step_idx))
    rparams = None if randomized_seed is None else _randomized_params(pipe, randomized_seed, dtype)
    images, lat, bufs = run(sampling.params_for(pipe, dtype), rparams, jnp.asarray(req.ids), req.noise, req.plan,
                            jnp.asarray(slots))
    latent_hw = lat.shape[1:3]
    spatial = {kind: {k: to_spatial(v, latent_hw) if v.ndim == 4 else v for k, v in acts.items()}
               for kind, acts in bufs.items() if kind != "x0"}
    for kind, acts in spatial.items():
        check_finite(acts, f"{kind} activations")
    return CaptureResult(images=np.asarray(images), acts=spatial["acts"], randomized=spatial.get("randomized"),
                         vae=spatial.get("vae"), latents=lat)


def capture_activations(pipe, prompts, *, layers=DEFAULT_LAYERS, steps=None, seed=0, guidance_scale=7.5,
                        num_inference_steps=15, scheduler="lms", store_dtype=None, **sample_kw):
    """Generate images and capture activations in one pass (`capture_sweep` without baselines).

    `sample_kw`: dtype, height, width, latents, negative_prompt as in `sampling.sample`.
    Returns:
      (images uint8 [B,H,W,3], {layer path: array [B, n_steps, h, w, C]}) for the conditional CFG half.
    """
    out = capture_sweep(pipe, prompts, layers=layers, steps=steps, seed=seed, guidance_scale=guidance_scale,
                        num_inference_steps=num_inference_steps, scheduler=scheduler, store_dtype=store_dtype,
                        **sample_kw)
    return out.images, out.acts


def _store(x: jax.Array, store_dtype) -> jax.Array:
    return x if store_dtype is None else x.astype(store_dtype)


def _keep(buf: jax.Array, x: jax.Array, slot: jax.Array) -> jax.Array:
    """Write x [B, ...] into buf [B, S, ...] at step slot `slot`; slot < 0 (step not selected) leaves buf as is."""
    s = jnp.maximum(slot, 0)
    old = jax.lax.dynamic_index_in_dim(buf, s, axis=1, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(buf, jnp.where(slot >= 0, x.astype(buf.dtype), old), s, axis=1)


def _modules(pipe) -> tuple:
    """(unet, text encoder, vae): the jit cache key. Flax modules hash by config, so pipelines of one architecture
    (checkpoints of a training run, a pipeline with edited params) share one compilation."""
    return pipe.unet, pipe.text_encoder, pipe.vae


@functools.lru_cache(maxsize=16)
def _compiled_sweep(modules, sched, guidance, dtype, paths, n_keep, store_dtype, randomized, vae_baseline):
    """One jitted program: text encoder, the denoising scan with its capture buffers, image decode and the VAE
    baseline. Cached so that every batch of a sweep reuses the compilation."""
    unet, text, vae = (m.clone(dtype=dtype) for m in modules)
    cfg = sampling.uses_cfg(guidance)
    weights = jnp.asarray(guidance, jnp.float32)

    def unet_step(p, lat_in, t, context):
        return apply_capturing(unet, p, paths, lat_in, jnp.broadcast_to(t, (lat_in.shape[0],)), context)

    def step(params, rparams, plan, context, lat, state, i):
        """One denoising step -> (next latents, scheduler state, {kind: per-step outputs to keep})."""
        b = lat.shape[0]
        lat_in = sampling.model_input(sched, plan, lat, i, cfg, context.dtype)
        t = plan.timesteps[i]
        pred, acts = unet_step(params["unet"], lat_in, t, context)
        kept = {"acts": {k: v[-b:] for k, v in acts.items()}}  # conditional half (second, as diffusers)
        if randomized:  # the same conditional inputs; only its captured layers are computed (XLA drops the rest)
            kept["randomized"] = unet_step(rparams, lat_in[-b:], t, context[-b:])[1]
        lat, state, x0 = sampling.guided_step(sched, plan, state, pred, i, lat, weights[i])
        if vae_baseline:
            kept["x0"] = x0
        kept = {k: v if k == "x0" else {n: _store(a, store_dtype) for n, a in v.items()} for k, v in kept.items()}
        return lat, state, kept

    @jax.jit
    def run(params, rparams, ids, noise, plan, slots):
        context = text.apply({"params": params["text_encoder"]}, ids)
        lat = noise * plan.init_noise_sigma
        state = sched.init_state(plan, lat)
        shapes = jax.eval_shape(step, params, rparams, plan, context, lat, state, 0)[2]
        bufs = jax.tree.map(lambda s: jnp.zeros((s.shape[0], n_keep) + s.shape[1:], s.dtype), shapes)

        def body(carry, i):
            lat, state, bufs = carry
            lat, state, kept = step(params, rparams, plan, context, lat, state, i)
            return (lat, state, jax.tree.map(lambda buf, x: _keep(buf, x, slots[i]), bufs, kept)), None

        (lat, _, bufs), _ = jax.lax.scan(body, (lat, state, bufs), jnp.arange(plan.timesteps.shape[0]))
        if vae_baseline:  # one selected step at a time: [S, B, h, w, c] -> {layer: [S, B, H', W', C']}
            acts = jax.lax.map(lambda z: baselines.vae_decoder_activations(vae, params["vae"], z),
                               jnp.swapaxes(bufs.pop("x0"), 0, 1))
            bufs["vae"] = {k: _store(jnp.swapaxes(v, 0, 1), store_dtype) for k, v in acts.items()}
        return sampling.decode_to_uint8(vae, params["vae"], lat), lat, bufs

    return run


@functools.lru_cache(maxsize=4)
def _randomized_params(pipe, seed, dtype):
    """The randomized UNet's params, permuted once per (pipeline, seed) and cast to the compute dtype."""
    params = baselines.randomize_params(pipe.params["unet"], seed)
    return params if dtype == jnp.float32 else sampling.cast_params(params, dtype)


def randomized_pipeline(pipe, seed: int):
    """The same pipeline with the UNet's weights permuted (the paper's randomized baseline; for encoded mode, where
    `capture_encoded` runs it like any pipeline)."""
    return dataclasses.replace(pipe, params={**pipe.params, "unet": _randomized_params(pipe, seed, jnp.float32)})


def capture_encoded(pipe, images, prompts, *, layers=DEFAULT_LAYERS, steps=None, seed=0, num_inference_steps=15,
                    scheduler="lms", store_dtype=None) -> dict[str, jax.Array]:
    """Capture the UNet on real images noised to each selected step's level (labels of the images stay exact).

    images uint8 [B,H,W,3] are VAE-encoded (posterior mean x scaling_factor); for each selected step k the latent
    is noised with `add_noise` to the scheduler's t_k (one unit noise per image, from seed + k or seed[k], shared
    by all steps), scaled with `scale_model_input` as in sampling, and the UNet is applied once on the conditional text
    embedding only (no CFG). One jit, `lax.map` over the steps.
    Returns {layer: [B, S, h, w, C]}.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {images.shape}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {images.shape[0]} images")
    sampling.check_size(pipe, images.shape[1], images.shape[2])
    paths = select_layers(pipe.unet, layers)
    step_idx = select_steps(steps, num_inference_steps)
    sched = schedulers.get_scheduler(scheduler, pipe.scheduler_config)
    plan = sched.set_timesteps(num_inference_steps)
    f = pipe.vae_scale_factor
    latent_shape = (images.shape[1] // f, images.shape[2] // f, pipe.unet.config.in_channels)
    seeds = [seed + k for k in range(len(prompts))] if isinstance(seed, int) else list(seed)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} images")
    noise = sampling.initial_noise(seeds, latent_shape)
    run = _compiled_encoded(_modules(pipe), sched, paths, None if store_dtype is None else jnp.dtype(store_dtype))
    acts = run(pipe.params, jnp.asarray(pipe.tokenize(prompts)), jnp.asarray(images), noise, plan,
               jnp.asarray(step_idx, jnp.int32))
    acts = {k: to_spatial(v, latent_shape[:2]) if v.ndim == 4 else v for k, v in acts.items()}
    check_finite(acts, "encoded-mode activations")
    return acts


@functools.lru_cache(maxsize=8)
def _compiled_encoded(modules, sched, paths, store_dtype):
    unet, text, vae = modules

    @jax.jit
    def run(params, ids, images, noise, plan, steps):
        context = text.apply({"params": params["text_encoder"]}, ids)
        x = images.astype(jnp.float32) / 255.0 * 2.0 - 1.0  # diffusers' VaeImageProcessor normalisation
        mean, _ = vae.apply({"params": params["vae"]}, x, method="encode")
        clean = mean * vae.config.scaling_factor

        def one(k):
            lat_in = sched.scale_model_input(plan, sched.add_noise(plan, clean, noise, k), k)
            t = jnp.broadcast_to(plan.timesteps[k], (lat_in.shape[0],))
            acts = apply_capturing(unet, params["unet"], paths, lat_in, t, context)[1]
            return {name: _store(a, store_dtype) for name, a in acts.items()}

        return {k: jnp.swapaxes(v, 0, 1) for k, v in jax.lax.map(one, steps).items()}  # [S, B, ...] -> [B, S, ...]

    return run
