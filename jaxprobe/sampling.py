"""Text-to-image sampling: the whole denoising loop is one `lax.scan` inside one `jit`.

The scan body calls a `model_fn(params, latent_in, t, context, i) -> (noise_pred, aux)`. The default calls the
UNet and returns no aux; capture (`jaxprobe.capture`) and interventions pass their own model_fn, so the same
sampler records activations or edits them at chosen steps without a second sampling pass.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import schedulers

ModelFn = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """images uint8 [B,H,W,3]; latents [B,h,w,c] (final, unscaled by the VAE factor); aux stacked over steps;
    x0 [steps,B,h,w,c] predicted clean latents per step when asked for (the VAE baseline decodes them)."""

    images: np.ndarray
    latents: jax.Array
    aux: Any = None
    x0: jax.Array | None = None


def unet_model_fn(unet) -> ModelFn:
    """The plain UNet call: noise prediction for a (CFG-doubled) batch, no aux."""

    def fn(params, latent_in, t, context, i):
        del i
        t = jnp.broadcast_to(t, (latent_in.shape[0],))
        return unet.apply({"params": params}, latent_in, t, context), None

    return fn


def denoise(model_fn: ModelFn, sched, plan, unet_params, latents, context, *,
            guidance_scale: float | Sequence[float], return_x0: bool = False):
    """Run every step of `plan` with classifier-free guidance. Traceable; call it inside jit.

    Args:
      model_fn: see module docstring.
      sched, plan: a scheduler and its `set_timesteps` plan (`jaxprobe.schedulers`).
      latents: [B,h,w,c] initial latents, already multiplied by `plan.init_noise_sigma`.
      context: [2B,T,D] text embeddings, unconditional half first (as diffusers), or [B,T,D] without CFG.
      guidance_scale: CFG weight, or one per step (`guidance_schedule`); <= 1 at every step disables CFG (one UNet
        batch of B), as diffusers does.
    Returns:
      (final latents [B,h,w,c], aux stacked over steps, x0 [steps,B,h,w,c] or None).
    """
    n = plan.timesteps.shape[0]
    weights = guidance_schedule(guidance_scale, n)
    cfg = uses_cfg(weights)
    weights = jnp.asarray(weights, jnp.float32)

    def body(carry, i):
        lat, state = carry
        pred, aux = model_fn(unet_params, model_input(sched, plan, lat, i, cfg, context.dtype), plan.timesteps[i],
                             context, i)
        lat, state, x0 = guided_step(sched, plan, state, pred, i, lat, weights[i])
        return (lat, state), (aux, x0 if return_x0 else None)

    (lat, _), (aux, x0) = jax.lax.scan(body, (latents, sched.init_state(plan, latents)), jnp.arange(n))
    return lat, aux, x0


def model_input(sched, plan, lat, i, cfg: bool, dtype) -> jax.Array:
    """The UNet input at step i: latents doubled for CFG (unconditional half first) and scheduler-scaled."""
    lat_in = jnp.concatenate([lat, lat]) if cfg else lat
    return sched.scale_model_input(plan, lat_in, i).astype(dtype)


def guidance_schedule(guidance_scale: float | Sequence[float], num_steps: int) -> tuple[float, ...]:
    """The CFG weight of every step: one float for all, or one per step (e.g. strong guidance early only, as in
    guidance-interval sampling). A tuple, so that it can key a jit cache."""
    if np.ndim(guidance_scale) == 0:
        return (float(guidance_scale),) * num_steps
    weights = tuple(float(w) for w in guidance_scale)
    if len(weights) != num_steps:
        raise ValueError(f"guidance schedule has {len(weights)} weights for {num_steps} steps; give one per step "
                         f"or one float")
    if not all(np.isfinite(weights)):
        raise ValueError(f"guidance schedule has a non-finite weight: {weights}")
    return weights


def uses_cfg(weights: tuple[float, ...]) -> bool:
    """Whether sampling doubles the batch for CFG: some step's weight is > 1 (diffusers' rule, per step)."""
    return max(weights) > 1.0


def guided_step(sched, plan, state, pred, i, lat, guidance_scale):
    """Classifier-free guidance on a doubled prediction (unconditional half first; a prediction of lat's batch size
    is used as is), then one scheduler step -> (latents, state, x0). `guidance_scale` may be traced."""
    pred = pred.astype(jnp.float32)
    if pred.shape[0] == 2 * lat.shape[0]:
        uncond, cond = jnp.split(pred, 2)
        pred = uncond + guidance_scale * (cond - uncond)
    return sched.step(plan, state, pred, i, lat)


@dataclasses.dataclass(frozen=True)
class Request:
    """A validated sampling request: token ids ([negatives,] prompts), unit noise [B,h,w,c], scheduler and plan."""

    ids: np.ndarray
    noise: jax.Array
    sched: Any
    plan: Any
    guidance: tuple[float, ...]


def prepare(pipe, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale, seed, height, width,
            scheduler: str, latents, negative_prompt: str) -> Request:
    """Check the arguments of `sample` and turn them into device inputs (see `sample` for their meaning)."""
    if not prompts:
        raise ValueError("no prompts given")
    height, width = check_size(pipe, height, width)
    f = pipe.vae_scale_factor
    shape = (height // f, width // f, pipe.unet.config.in_channels)
    if latents is None:
        seeds = [seed + k for k in range(len(prompts))] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        latents = initial_noise(seeds, shape)
    elif tuple(latents.shape) != (len(prompts),) + shape:
        raise ValueError(f"latents shape {tuple(latents.shape)} != {(len(prompts),) + shape}")
    guidance = guidance_schedule(guidance_scale, num_inference_steps)
    sched = schedulers.get_scheduler(scheduler, pipe.scheduler_config)
    ids = encode_prompts(pipe, prompts, negative_prompt=negative_prompt, cfg=uses_cfg(guidance))
    return Request(ids=ids, noise=jnp.asarray(latents, jnp.float32), sched=sched,
                   plan=sched.set_timesteps(num_inference_steps), guidance=guidance)


def encode_prompts(pipe, prompts: Sequence[str], *, negative_prompt: str = "", cfg: bool = True):
    """Token ids for [negative x B, prompts] (CFG) or [prompts], ready for the text encoder."""
    ids = pipe.tokenize(list(prompts))
    if cfg:
        ids = np.concatenate([pipe.tokenize([negative_prompt] * len(prompts)), ids])
    return ids


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int]) -> jax.Array:
    """Unit Gaussian latents [B,*shape], one key per image: image k depends only on seeds[k], not on the batch."""
    return jax.vmap(lambda s: jax.random.normal(jax.random.key(s), shape))(jnp.asarray(seeds, jnp.uint32))


def cast_params(params, dtype):
    """Floating-point params cast once to the compute dtype (bf16 sampling keeps the scheduler in fp32)."""
    return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def decode_to_uint8(vae, vae_params, latents):
    """Unscaled latents -> uint8 NHWC images, as diffusers' (x / 2 + 0.5).clamp(0, 1) * 255 rounding."""
    x = vae.apply({"params": vae_params}, latents / vae.config.scaling_factor, method="decode")
    return jnp.round(jnp.clip(x.astype(jnp.float32) / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)


def check_size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    """Default or validated image size: a multiple of the VAE factor."""
    height = height or pipe.default_size
    width = width or pipe.default_size
    f = pipe.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"image size {height}x{width} is not a multiple of the VAE factor {f}")
    return height, width


def sample(pipe, prompts: Sequence[str] | str, *, num_inference_steps: int = 15,
           guidance_scale: float | Sequence[float] = 7.5,
           seed: int | Sequence[int] = 0, height: int | None = None, width: int | None = None,
           scheduler: str = "lms", dtype=jnp.float32, latents: jax.Array | None = None,
           negative_prompt: str = "", model_fn: ModelFn | None = None, return_x0: bool = False) -> SampleOutput:
    """Generate images for `prompts` with `pipe` (from `jaxprobe.models.load_pipeline`).

    `seed` is one int (image k gets seed + k) or one per prompt. `latents` [B,h,w,c] unit noise overrides the seeds
    (multiplied by the scheduler's init sigma, as diffusers does with user latents). `guidance_scale` is one CFG
    weight or one per step (`guidance_schedule`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    req = prepare(pipe, prompts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                  height=height, width=width, scheduler=scheduler, latents=latents, negative_prompt=negative_prompt)
    run = _compiled(pipe, req.sched, req.guidance, jnp.dtype(dtype), model_fn, return_x0)
    images, lat, aux, x0 = run(params_for(pipe, dtype), jnp.asarray(req.ids), req.noise, req.plan)
    return SampleOutput(images=np.asarray(images), latents=lat, aux=aux, x0=x0)


@functools.lru_cache(maxsize=16)
def _params_cache(pipe, dtype):
    return cast_params(pipe.params, dtype)


def params_for(pipe, dtype):
    """The pipeline's params in the compute dtype (cast once per pipeline and dtype)."""
    dtype = jnp.dtype(dtype)
    return pipe.params if dtype == jnp.float32 else _params_cache(pipe, dtype)


@functools.lru_cache(maxsize=16)
def _compiled(pipe, sched, guidance, dtype, model_fn, return_x0):
    unet = pipe.unet.clone(dtype=dtype)
    text = pipe.text_encoder.clone(dtype=dtype)
    vae = pipe.vae.clone(dtype=dtype)
    model_fn = model_fn or unet_model_fn(unet)

    @jax.jit
    def run(params, ids, noise, plan):
        context = text.apply({"params": params["text_encoder"]}, ids)
        lat = noise * plan.init_noise_sigma
        lat, aux, x0 = denoise(model_fn, sched, plan, params["unet"], lat, context,
                               guidance_scale=guidance, return_x0=return_x0)
        return decode_to_uint8(vae, params["vae"], lat), lat, aux, x0

    return run


def read_prompts(prompts: str = "", prompts_file: str = "") -> list[str]:
    """Prompts from a '|'-separated string or a file with one prompt per line (blank lines skipped)."""
    text = Path(prompts_file).read_text().splitlines() if prompts_file else prompts.split("|")
    out = [p.strip() for p in text if p.strip()]
    if not out:
        raise ValueError("no prompts: set --config.prompts='a|b' or --config.prompts_file")
    return out
