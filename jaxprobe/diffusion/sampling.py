"""Text-to-image sampling: the whole denoising loop is one `lax.scan` inside one `jit`, and the only one in jaxprobe.

At every step the scan calls a `Hook` in place of the plain UNet call. The default hook is the plain UNet; capture
records activations with one (`jaxprobe.scene.capture`), interventions edit them with another, and baselines run
a second network on the same inputs, all through `jaxprobe.hooks` and this one scan. What a hook returns for the
steps the caller keeps is written into [B, S, ...] buffers carried by the scan, so unkept steps cost no memory.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import mesh
from jaxprobe.diffusion import schedulers
from jaxprobe.models.pipeline import XLTextInputs
from jaxprobe.models.unet import TextTimeConditioning
from jaxprobe.validate import check_choice

DTYPES = ("float32", "bfloat16", "float16")  # compute dtypes; params stay fp32 on disk, the scheduler runs in fp32
MAX_SEED = 2 ** 32 - 1  # initial noise takes uint32 seeds


class Modules(NamedTuple):
    """A pipeline's Flax modules in the compute dtype. Flax modules hash by config, so pipelines of one
    architecture (training checkpoints, a pipeline with permuted weights) share one compilation."""

    unet: Any
    text_encoder: Any
    vae: Any
    text_encoder_2: Any = None  # SDXL's second text encoder


class Hook:
    """What the sampling scan runs at each step in place of the plain UNet call, and what it keeps.

    Subclass as a frozen dataclass: its fields are static configuration and key the jit cache (one compilation
    per configuration, not one per closure). Arrays it needs at run time (probe params, permuted weights, targets)
    come in as `extra`, a pytree that `sample` passes into the jitted program as an argument.
    """

    # Latents to keep at each kept step besides the hook's output, each under its name (UNet space, images only):
    # "xt" the scheduler's latent entering the step (before `scale_model_input`), "x0" the step's predicted clean
    # latent.
    keep_latents: tuple[str, ...] = ()

    def step(self, unet, params, extra, lat_in, t, context, i, b):
        """The UNet call at step i -> (noise prediction for lat_in's batch, pytree to keep for this step).

        lat_in [B', h, w, c] is the scaled model input, t [B'] its timesteps, context [B', T, D] the text
        embeddings (SDXL: a `TextTimeConditioning` of [B', ...] arrays), i the traced step index and b the number of
        images: B' = 2b under CFG (unconditional half first), so `[-b:]` (`conditional(context, b)`) is always the
        conditional half.
        """
        del extra, i, b
        return unet.apply({"params": params}, lat_in, t, context), {}

    def after_step(self, extra, lat, i):
        """The scheduler's latent after step i, [B, h, w, c] (images only) -> the latent the next step starts from
        (and, after the last step, the one decoded). Default: as it is; an edit may hold part of it to a
        reference (blended sampling)."""
        del extra, i
        return lat

    def finish(self, modules: Modules, params, extra, kept):
        """After the scan, inside the same jit: the kept {'aux': [B, S, ...], 'xt'?, 'x0'?} -> the caller's
        result."""
        del modules, params, extra
        return kept


PLAIN = Hook()


def conditional(context, b: int):
    """The conditional CFG half (the last b rows) of a context: an array [B', T, D] or a pytree of them (SDXL)."""
    return jax.tree.map(lambda x: x[-b:], context)


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """images uint8 [B,H,W,3]; latents [B,h,w,c] (final, unscaled by the VAE factor); kept: what the hook kept
    for the kept steps (see `Hook.finish`), or None when no step is kept."""

    images: np.ndarray
    latents: jax.Array
    kept: Any = None


def denoise(sched, plan, unet, unet_params, latents, context, *, guidance_scale: float | Sequence[float],
            hook: Hook = PLAIN, extra=None, slots: jax.Array | None = None, n_keep: int = 0):
    """Run every step of `plan` with classifier-free guidance. Traceable; call it inside jit.

    Args:
      sched, plan: a scheduler and its `set_timesteps` plan (`jaxprobe.diffusion.schedulers`).
      unet, unet_params: the UNet module and its params, called through `hook.step`.
      latents: [B,h,w,c] initial latents, already multiplied by `plan.init_noise_sigma`.
      context: [2B,T,D] text embeddings, unconditional half first (as diffusers), or [B,T,D] without CFG; for SDXL
        a `TextTimeConditioning` whose arrays have those leading dimensions.
      guidance_scale: CFG weight, or one per step (`guidance_schedule`); <= 1 at every step disables CFG (one UNet
        batch of B), as diffusers does.
      slots: [steps] int, the buffer slot each step's hook output goes to (-1: not kept); n_keep: the slot count.
    Returns:
      (final latents [B,h,w,c], {'aux': hook outputs [B, n_keep, ...], and each of `hook.keep_latents`:
      [B, n_keep, h, w, c]} or None).
    """
    n = plan.timesteps.shape[0]
    weights = guidance_schedule(guidance_scale, n)
    cfg = uses_cfg(weights)
    weights = jnp.asarray(weights, jnp.float32)
    text = context.encoder_hidden_states if isinstance(context, TextTimeConditioning) else context
    chex.assert_rank([latents, text], [4, 3])  # at trace time: a wrong layout fails here, not inside the UNet
    for leaf in jax.tree.leaves(context):
        chex.assert_axis_dimension(leaf, 0, (2 if cfg else 1) * latents.shape[0])

    def step(lat, state, i):
        lat_in = model_input(sched, plan, lat, i, cfg, text.dtype)
        t = jnp.broadcast_to(plan.timesteps[i], (lat_in.shape[0],))
        pred, aux = hook.step(unet, unet_params, extra, lat_in, t, context, i, lat.shape[0])
        chex.assert_equal_shape([pred, lat_in])  # a hook returns the UNet's prediction for its whole input
        nxt, state, x0 = guided_step(sched, plan, state, pred, i, lat, weights[i])
        nxt = hook.after_step(extra, nxt, i)
        latents = {"xt": lat, "x0": x0}
        return nxt, state, {"aux": aux, **{name: latents[name] for name in hook.keep_latents}}

    state = sched.init_state(plan, latents)
    if not n_keep:
        (lat, _), _ = jax.lax.scan(lambda c, i: (step(*c, i)[:2], None), (latents, state), jnp.arange(n))
        return lat, None
    shapes = jax.eval_shape(step, latents, state, 0)[2]
    bufs = jax.tree.map(lambda s: jnp.zeros((s.shape[0], n_keep) + s.shape[1:], s.dtype), shapes)

    def body(carry, i):
        lat, state, bufs = carry
        lat, state, kept = step(lat, state, i)
        return (lat, state, jax.tree.map(lambda buf, x: _keep(buf, x, slots[i]), bufs, kept)), None

    (lat, _, bufs), _ = jax.lax.scan(body, (latents, state, bufs), jnp.arange(n))
    return lat, bufs


def _keep(buf: jax.Array, x: jax.Array, slot: jax.Array) -> jax.Array:
    """Write x [B, ...] into buf [B, S, ...] at slot `slot`; slot < 0 (step not kept) leaves buf as it is."""
    s = jnp.maximum(slot, 0)
    old = jax.lax.dynamic_index_in_dim(buf, s, axis=1, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(buf, jnp.where(slot >= 0, x.astype(buf.dtype), old), s, axis=1)


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


def model_input(sched, plan, lat, i, cfg: bool, dtype) -> jax.Array:
    """The UNet input at step i: latents doubled for CFG (unconditional half first) and scheduler-scaled."""
    lat_in = jnp.concatenate([lat, lat]) if cfg else lat
    return sched.scale_model_input(plan, lat_in, i).astype(dtype)


def guidance_schedule(guidance_scale: float | Sequence[float], num_steps: int) -> tuple[float, ...]:
    """The CFG weight of every step: one float for all, or one per step (e.g. strong guidance early only, as in
    guidance-interval sampling). A tuple, so that it can key a jit cache. The first use of the step count in
    `prepare`, so it checks that count too."""
    if num_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_steps}")
    scalar = np.ndim(guidance_scale) == 0
    weights = (float(guidance_scale),) * num_steps if scalar else tuple(float(w) for w in guidance_scale)
    if len(weights) != num_steps:
        raise ValueError(f"guidance schedule has {len(weights)} weights for {num_steps} steps; give one per step "
                         f"or one float")
    if not all(np.isfinite(weights)):
        raise ValueError(f"guidance_scale must be finite, got {weights[0] if scalar else weights}")
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
class Settings:
    """How a job samples, the same for every batch: one value built once and passed down, instead of the same
    keywords forwarded through every layer. `guidance_scale` is one CFG weight or one per step
    (`guidance_schedule`); height, width None or 0: the pipeline's native size; `dtype` the compute dtype
    (`check_dtype`); `batch_size` > 0 pads a call of fewer images to it (copies of the last image, dropped after),
    so that a job's last, shorter batch reuses the program its full batches compiled."""

    num_inference_steps: int = 15
    guidance_scale: float | Sequence[float] = 7.5
    scheduler: str = "lms"
    height: int | None = None
    width: int | None = None
    dtype: Any = jnp.float32
    negative_prompt: str = ""
    batch_size: int = 0


@dataclasses.dataclass(frozen=True)
class Request:
    """A validated sampling request: the text inputs of [negatives,] prompts (`encode_prompts`), unit noise
    [B,h,w,c], scheduler and plan."""

    ids: Any
    noise: jax.Array
    sched: Any
    plan: Any
    guidance: tuple[float, ...]


def prepare(pipe, settings: Settings, prompts: Sequence[str], seeds: Sequence[int], latents) -> Request:
    """Check the arguments of `sample` and turn them into device inputs (see `sample` for their meaning)."""
    if not prompts:
        raise ValueError("no prompts given")
    guidance = guidance_schedule(settings.guidance_scale, settings.num_inference_steps)
    height, width = check_size(pipe, settings.height, settings.width)
    f = pipe.vae_scale_factor
    shape = (height // f, width // f, pipe.unet.config.in_channels)
    if latents is None:
        latents = initial_noise(seeds, shape)
    elif tuple(latents.shape) != (len(prompts),) + shape:
        raise ValueError(f"latents shape {tuple(latents.shape)} != {(len(prompts),) + shape}")
    sched = schedulers.get_scheduler(settings.scheduler, pipe.scheduler_config)
    ids = encode_prompts(pipe, prompts, negative_prompt=settings.negative_prompt, cfg=uses_cfg(guidance),
                         size=(height, width))
    return Request(ids=ids, noise=jnp.asarray(latents, jnp.float32), sched=sched,
                   plan=sched.set_timesteps(settings.num_inference_steps), guidance=guidance)


def encode_prompts(pipe, prompts: Sequence[str], *, negative_prompt: str = "", cfg: bool = True,
                   size: tuple[int, int] | None = None):
    """The text encoders' inputs for [negative x B, prompts] (CFG) or [prompts], ready for `encode_text`: token
    ids [B', T], or for SDXL `XLTextInputs` with the micro-conditioning of `size` (height, width; None: native)."""
    size = size or (pipe.default_size,) * 2
    return pipe.text_inputs(list(prompts), negative_prompt if cfg else None, size)


def encode_text(mods: Modules, params, text):
    """Text inputs (`encode_prompts`) -> the UNet's context: the text encoder's last hidden state [B', T, D] (SD
    v1/v2), or SDXL's `TextTimeConditioning`: both encoders' penultimate hidden states (no final layer norm)
    concatenated on features, the second's projected pooled output, the time ids; zeros for `text.zero` rows.
    Traceable."""
    if not isinstance(text, XLTextInputs):
        return mods.text_encoder.apply({"params": params["text_encoder"]}, text)
    hidden = mods.text_encoder.apply({"params": params["text_encoder"]}, text.ids, method="hidden_states")[-2]
    embeds, hidden_2 = mods.text_encoder_2.apply({"params": params["text_encoder_2"]}, text.ids_2,
                                                 method="embeds_and_hidden_states")
    context = jnp.concatenate([hidden, hidden_2[-2]], axis=-1)
    zero = jnp.asarray(text.zero)
    return TextTimeConditioning(encoder_hidden_states=jnp.where(zero[:, None, None], 0, context),
                                text_embeds=jnp.where(zero[:, None], 0, embeds),
                                time_ids=jnp.asarray(text.time_ids, jnp.float32))


def image_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """The seeds of n images: seed + k for image k, or one given per image; each must be a uint32, which is what
    `initial_noise` keys on (numpy would raise an OverflowError that names neither the seed nor the range)."""
    one = np.ndim(seed) == 0
    seeds = [seed + k for k in range(n)] if one else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} prompts")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"seed {bad[0]} is out of range 0..2**32-1 (seeds are uint32"
                         f"{'; image k gets seed + k' if one else ''})")
    return seeds


def check_dtype(dtype) -> jnp.dtype:
    """The compute dtype, given as a name or a dtype: one of DTYPES (others fail at compile time or, as float8,
    have no promotion rules), and not float16 on a CPU, which XLA would refuse only after tracing the sampler."""
    name = dtype if isinstance(dtype, str) else jnp.dtype(dtype).name
    check_choice("dtype", name, DTYPES)
    if name == "float16" and jax.default_backend() == "cpu":
        raise ValueError("dtype float16 does not run on a CPU (XLA:CPU has no float16 matmul with float32 "
                         "accumulation); use float32 or bfloat16")
    return jnp.dtype(name)


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int]) -> jax.Array:
    """Unit Gaussian latents [B,*shape], one key per image: image k depends only on seeds[k], not on the batch.
    Drawn an image at a time (bitwise what a vmap over the seeds draws), so one compile per shape serves every
    batch size."""
    return jnp.stack([_noise(jnp.uint32(s), tuple(shape)) for s in seeds])


@functools.partial(jax.jit, static_argnums=1)
def _noise(seed: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


def cast_params(params, dtype):
    """Floating-point params cast once to the compute dtype (bf16 sampling keeps the scheduler in fp32)."""
    return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def decode_to_uint8(vae, vae_params, latents):
    """Unscaled latents -> uint8 NHWC images, as diffusers' (x / 2 + 0.5).clamp(0, 1) * 255 rounding."""
    x = vae.apply({"params": vae_params}, latents / vae.config.scaling_factor, method="decode")
    return jnp.round(jnp.clip(x.astype(jnp.float32) / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)


def size_multiple(pipe) -> int:
    """What every image side must be a multiple of: the VAE's factor times the UNet's 2**(levels - 1)."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def check_size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    """Default (None or 0) or validated image size. The VAE divides it by its factor and each UNet level but the
    last halves the latent, whose skips must match on the way up: checked here, not by a trace-time error."""
    height = height or pipe.default_size
    width = width or pipe.default_size
    if height < 0 or width < 0:
        raise ValueError(f"image size {height}x{width} must be positive (0 or None: the pipeline's native "
                         f"{pipe.default_size}x{pipe.default_size})")
    f, levels = pipe.vae_scale_factor, len(pipe.unet.config.block_out_channels)
    unet_factor = size_multiple(pipe) // f
    if height % (f * unet_factor) or width % (f * unet_factor):
        raise ValueError(f"image size {height}x{width} is not a multiple of the VAE factor {f} x {unet_factor} = "
                         f"{f * unet_factor} (the UNet's {levels} levels need a latent divisible by "
                         f"2**{levels - 1} = {unet_factor})")
    return height, width


def sample(pipe, prompts: Sequence[str] | str, settings: Settings = Settings(), *, seed: int | Sequence[int] = 0,
           latents: jax.Array | None = None, hook: Hook = PLAIN, extra=None,
           keep_steps: Sequence[int] | None = (), **fields) -> SampleOutput:
    """Generate images for `prompts` with `pipe` (from `jaxprobe.models.load_pipeline`).

    `settings` (`Settings`), with any of its fields overridden by keyword (`sample(pipe, p, num_inference_steps=4)`).
    `seed` is one int (image k gets seed + k) or one per prompt. `latents` [B,h,w,c] unit noise overrides the seeds
    (multiplied by the scheduler's init sigma, as diffusers does with user latents). `hook` runs at every step (see
    `Hook`), with `extra` traced into the program; what it returns at `keep_steps` (`select_steps`: None = all,
    () = none) comes back in `kept`. On a mesh (`jaxprobe.mesh`) the batch is split over the data axis (a batch that
    does not split, or is shorter than `settings.batch_size`, is padded with copies of its last image, which are
    dropped; `extra` must then hold no per-image arrays).
    """
    settings = dataclasses.replace(settings, **fields)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    dtype = check_dtype(settings.dtype)
    n, steps = len(prompts), settings.num_inference_steps
    pad = mesh.pad_count(n, settings.batch_size)
    prompts, seeds, latents = (mesh.pad_last(x, pad) for x in (prompts, image_seeds(seed, n), latents))
    req = prepare(pipe, settings, prompts, seeds, latents)
    kept_steps = select_steps(keep_steps, steps) if keep_steps is None or len(keep_steps) else ()
    slots = np.full(steps, -1, np.int32)
    slots[list(kept_steps)] = np.arange(len(kept_steps))
    run = _compiled(modules(pipe), req.sched, req.guidance, dtype, hook, len(kept_steps))
    # On a mesh (`jaxprobe.mesh`) the images are split over its data axis and everything else is replicated.
    images, lat, kept = run(params_for(pipe, dtype), mesh.replicate(extra), mesh.shard(req.ids),
                            mesh.shard(req.noise), mesh.replicate(req.plan), mesh.replicate(jnp.asarray(slots)))
    if pad:
        lat, kept = lat[:n], jax.tree.map(lambda a: a[:n], kept)
    return SampleOutput(images=mesh.gather(images)[:n], latents=lat, kept=kept)


def modules(pipe) -> Modules:
    """The pipeline's modules: the jit cache key (see `Modules`)."""
    return Modules(pipe.unet, pipe.text_encoder, pipe.vae, pipe.text_encoder_2)


def in_dtype(mods: Modules, dtype) -> Modules:
    """The modules computing in `dtype`, but an SDXL VAE whose config sets `force_upcast` in float32 (it overflows
    in half precision), as diffusers' SDXL pipeline does; SD v1/v2 pipelines ignore the flag, as diffusers' do."""
    upcast = mods.text_encoder_2 is not None and mods.vae.config.force_upcast
    return Modules(*(m if m is None else m.clone(dtype=jnp.float32 if m is mods.vae and upcast else dtype)
                     for m in mods))


@functools.lru_cache(maxsize=16)
def _params_cache(pipe, dtype, device_mesh):
    del device_mesh  # a cache key: params are replicated on each mesh once
    return mesh.replicate(pipe.params if dtype == jnp.float32 else cast_params(pipe.params, dtype))


def params_for(pipe, dtype):
    """The pipeline's params in the compute dtype (cast once per pipeline and dtype), replicated on the current
    mesh if one is set."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32 and mesh.current() is None:
        return pipe.params
    return _params_cache(pipe, dtype, mesh.current())


@functools.lru_cache(maxsize=16)
def _compiled(mods: Modules, sched, guidance, dtype, hook: Hook, n_keep: int):
    """One jitted program: text encoder, the denoising scan with the hook, the hook's finish and the image decode.
    Cached, so that every batch of a sweep reuses the compilation."""
    mods = in_dtype(mods, dtype)

    @jax.jit
    def run(params, extra, ids, noise, plan, slots):
        context = encode_text(mods, params, ids)
        lat = noise * plan.init_noise_sigma
        lat, kept = denoise(sched, plan, mods.unet, params["unet"], lat, context, guidance_scale=guidance,
                            hook=hook, extra=extra, slots=slots, n_keep=n_keep)
        if n_keep:
            kept = hook.finish(mods, params, extra, kept)
        return decode_to_uint8(mods.vae, params["vae"], lat), lat, kept

    return run

