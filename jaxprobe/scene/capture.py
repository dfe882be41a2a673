"""Record UNet activations at chosen layers and steps from ONE jit-compiled sampling pass.

Layers are selected by diffusers-style path patterns (`jaxprobe.hooks.select_layers`). Capture is a sampling
`Hook`: at every step it records the selected layers of the CFG batch's conditional half, optionally runs the
randomized-weight UNet on the same conditional inputs, and the sampler keeps only the selected steps.

- `capture_activations` / `capture_sweep`: generate images and capture the trained UNet, optionally also the
  randomized-weight UNet on the very same inputs and the VAE decoder on each step's noisy latent x_t and/or predicted
  x0 (`baselines`).
- `encode_and_capture` / `capture_encoded`: real images encoded by the VAE and noised to each selected step's noise
  level (exact labels), optionally also the randomized-weight UNet and the same VAE baselines.
A job builds one `CaptureRequest` and passes it to every batch; the keyword forms build it themselves.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import hooks, mesh
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.scene import baselines
from jaxprobe.validate import check_choice

# The paper's probe sites: every self-attention output before the residual add (16 in SD v1).
DEFAULT_LAYERS = ("*attn1/to_out_0",)


@dataclasses.dataclass(frozen=True)
class CaptureHook(sampling.Hook):
    """Record `paths` of the conditional CFG half at each step (cast to `store_dtype`); with `randomized`, also
    the same layers of the UNet with `extra`'s permuted params on the same conditional inputs; for each VAE
    baseline in `vae` (`baselines.VAE_MODELS`), keep the latent it decodes at each step and decode it (after the
    scan) capturing `baselines.VAE_LAYER`."""

    paths: tuple[str, ...]
    store_dtype: jnp.dtype | None = None
    randomized: bool = False
    vae: tuple[str, ...] = ()
    store_pool: int = 1  # average-pool each layer's token grid k x k before the cast (1: off)

    @property
    def keep_latents(self):
        return baselines.vae_latents(self.vae)

    def step(self, unet, params, extra, lat_in, t, context, i, b):
        pred, acts = hooks.apply(unet, params, lat_in, t, context, record=self.paths)
        kept = {"acts": {k: v[-b:] for k, v in acts.items()}}
        if self.randomized:  # the same conditional inputs; only its captured layers are computed (XLA drops the rest)
            kept["randomized"] = hooks.apply(unet, extra, lat_in[-b:], t[-b:], sampling.conditional(context, b),
                                             record=self.paths)[1]
        hw = lat_in.shape[1:3]
        return pred, {k: {n: _store(a, self.store_dtype, self.store_pool, hw) for n, a in v.items()}
                      for k, v in kept.items()}

    def finish(self, modules, params, extra, kept):
        return {**kept["aux"], **vae_baselines(modules.vae, params["vae"], kept, self.vae, self.store_dtype,
                                               self.store_pool)}


def vae_baselines(vae, vae_params, latents: dict[str, jax.Array], models: Sequence[str], store_dtype=None,
                  pool: int = 1) -> dict[str, dict[str, jax.Array]]:
    """Each VAE baseline of `models` on its kept latents (`baselines.VAE_LATENTS`: {'xt'|'x0': [B, S, h, w, c]}),
    one step at a time -> {model: {`baselines.VAE_LAYER`: [B, S, H', W', C']}}, pooled and cast as the UNet's
    layers. Traceable."""
    out = {}
    for model in models:
        acts = jax.lax.map(lambda z: {k: _pool(v, pool, z.shape[1:3]) for k, v in
                                      baselines.vae_decoder_activations(vae, vae_params, z).items()},
                           jnp.swapaxes(latents[baselines.VAE_LATENTS[model]], 0, 1))  # [S, B, ...]
        out[model] = {k: _store(jnp.swapaxes(v, 0, 1), store_dtype) for k, v in acts.items()}
    return out


@dataclasses.dataclass(frozen=True)
class CaptureRequest:
    """What a job captures, the same for every batch: built once per job and passed down, so that no layer forwards
    a dozen keywords to the next. `sampler`: how to sample (`sampling.Settings`; encoded images use its step count,
    scheduler and batch_size only); `layers`: path patterns (`hooks.select_layers`); `steps`: step indices
    (`sampling.select_steps`: None = all); `store_dtype` (e.g. bf16): what activations are kept in (None: as
    computed); `store_pool` k > 1 average-pools every captured layer (baselines too) k x k over its token grid first,
    which must divide by k (k**2 times smaller); `randomized_seed`: also capture the same layers of
    `baselines.randomize_params(unet params, randomized_seed)` on the trained model's conditional UNet inputs (None:
    no); `vae_baselines`: the VAE baselines to capture (`baselines.VAE_MODELS`: 'vae' decodes each selected step's
    noisy latent x_t, 'vae_x0' its predicted x0), each at `baselines.VAE_LAYER`."""

    sampler: sampling.Settings = sampling.Settings()
    layers: Sequence[str] | str = DEFAULT_LAYERS
    steps: Sequence[int] | None = None
    store_dtype: Any = None
    store_pool: int = 1
    randomized_seed: int | None = None
    vae_baselines: tuple[str, ...] = ()

    def override(self, **fields) -> CaptureRequest:
        """This request with some fields changed by keyword, `sampling.Settings`' fields included."""
        own = {f.name for f in dataclasses.fields(self)}
        sampler = dataclasses.replace(self.sampler, **{k: v for k, v in fields.items() if k not in own})
        return dataclasses.replace(self, sampler=sampler, **{k: v for k, v in fields.items() if k in own})


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """One capture. images uint8 [B,H,W,3] (generated, or the encoded ones); acts {layer: [B,S,h,w,C]} (conditional
    CFG half, S selected steps in the requested order); randomized: the same layers of the randomized-weight UNet on
    the same inputs, or None; vae, vae_x0 {VAE layer: [B,S,H',W',C']} of the decoder on each selected step's noisy
    latent x_t, predicted x0, or None (`baselines`); latents [B,h,w,c] final (UNet space, as
    `sampling.SampleOutput.latents`), or None for encoded images."""

    images: np.ndarray
    acts: dict[str, jax.Array]
    randomized: dict[str, jax.Array] | None
    vae: dict[str, jax.Array] | None
    vae_x0: dict[str, jax.Array] | None
    latents: jax.Array | None


def capture_sweep(pipe, prompts, request: CaptureRequest = CaptureRequest(), *, seed=0, latents=None,
                  **fields) -> CaptureResult:
    """Generate images and capture the trained UNet (and the baselines `request` asks for) in ONE jitted pass.

    `request` with `fields` overridden by keyword (`CaptureRequest.override`). Sampling is exactly `sampling.sample`
    with the request's `sampler`, `seed` and `latents` (the trained UNet's prediction drives it).
    """
    request = request.override(**fields)
    dtype = jnp.dtype(request.sampler.dtype)
    randomized = request.randomized_seed is not None
    hook = CaptureHook(paths=hooks.select_layers(pipe.unet, request.layers),
                       store_dtype=_store_dtype(request.store_dtype), randomized=randomized,
                       vae=_check_vae(request.vae_baselines), store_pool=_check_pool(request.store_pool))
    out = sampling.sample(pipe, prompts, request.sampler, seed=seed, latents=latents, hook=hook,
                          extra=_randomized_params(pipe, request.randomized_seed, dtype, mesh.current())
                          if randomized else None,
                          keep_steps=sampling.select_steps(request.steps, request.sampler.num_inference_steps))
    latent_hw = out.latents.shape[1:3]
    spatial = {kind: {k: hooks.to_spatial(v, latent_hw) if v.ndim == 4 else v for k, v in acts.items()}
               for kind, acts in out.kept.items()}
    for kind, acts in spatial.items():
        hooks.check_finite(acts, f"{kind} activations")
    return CaptureResult(images=out.images, acts=spatial["acts"], randomized=spatial.get("randomized"),
                         vae=spatial.get("vae"), vae_x0=spatial.get("vae_x0"), latents=out.latents)


def capture_activations(pipe, prompts, *, layers=DEFAULT_LAYERS, steps=None, seed=0, guidance_scale=7.5, **fields):
    """Generate images and capture activations in one pass (`capture_sweep` without baselines).

    `fields`: the other fields of `CaptureRequest` and `sampling.Settings` (num_inference_steps, scheduler,
    store_dtype, dtype, height, width, negative_prompt), and `latents` as in `sampling.sample`.
    Returns:
      (images uint8 [B,H,W,3], {layer path: array [B, n_steps, h, w, C]}) for the conditional CFG half.
    """
    out = capture_sweep(pipe, prompts, layers=layers, steps=steps, seed=seed, guidance_scale=guidance_scale,
                        **fields)
    return out.images, out.acts


def _store(x: jax.Array, store_dtype, pool: int = 1, latent_hw: tuple[int, int] | None = None) -> jax.Array:
    x = _pool(x, pool, latent_hw)
    return x if store_dtype is None else x.astype(store_dtype)


def _pool(x: jax.Array, k: int, latent_hw: tuple[int, int]) -> jax.Array:
    """k x k average pool of one step's output, in its own layout: tokens [B, T, C] (laid out on the latent grid as
    `hooks.to_spatial` does) or spatial [B, h, w, C]. Averages in float32, returns x's dtype."""
    if k == 1:
        return x
    tokens = x.ndim == 3
    grid = hooks.to_spatial(x, latent_hw) if tokens else x
    b, h, w, c = grid.shape
    if h % k or w % k:
        raise ValueError(f"store_pool={k} does not divide a captured {h}x{w} token grid")
    pooled = grid.astype(jnp.float32).reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4)).astype(x.dtype)
    return pooled.reshape(b, -1, c) if tokens else pooled


def token_grids(pipe, paths, height: int, width: int) -> dict[str, tuple[int, int] | None]:
    """{UNet layer path: its (h, w) token grid for height x width images, or None for an output without one}.
    Shapes only: one `jax.eval_shape` of the UNet, nothing is computed."""
    return {k: tuple(s.shape[1:3]) if len(s.shape) == 4 else None
            for k, s in _layer_shapes(pipe, tuple(paths), height, width).items()}


def kept_bytes(pipe, request: CaptureRequest, batch: int) -> int:
    """Bytes that the capture of `batch` images keeps until the batch is written: each selected layer at each selected
    step of the trained UNet (and of the randomized one), pooled and cast as stored, each VAE baseline's layer and
    the latents it decodes. Shapes only (`jax.eval_shape`), nothing is computed."""
    height, width = sampling.check_size(pipe, request.sampler.height, request.sampler.width)
    paths = hooks.select_layers(pipe.unet, request.layers)
    steps = len(sampling.select_steps(request.steps, request.sampler.num_inference_steps))
    pool, dtype = _check_pool(request.store_pool), _store_dtype(request.store_dtype)

    def stored(shapes):
        return sum(math.prod(s.shape[1:]) // pool ** 2 * (dtype or jnp.dtype(s.dtype)).itemsize for s in shapes)

    unet = stored(_layer_shapes(pipe, paths, height, width).values()) * (1 + (request.randomized_seed is not None))
    latent = jax.ShapeDtypeStruct((1, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor,
                                   pipe.unet.config.in_channels), jnp.float32)
    vae = jax.eval_shape(functools.partial(baselines.vae_decoder_activations, pipe.vae), pipe.params["vae"], latent)
    models = len(_check_vae(request.vae_baselines))
    per_image = unet + models * (stored(vae.values()) + math.prod(latent.shape) * 4)
    return batch * steps * per_image


@functools.lru_cache(maxsize=16)
def _layer_shapes(pipe, paths: tuple[str, ...], height: int, width: int) -> dict[str, jax.ShapeDtypeStruct]:
    """{UNet layer path: the shape of its output for one height x width image, spatial [1, h, w, C] where it has a
    token grid}, from one `jax.eval_shape`."""
    latent_hw = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    x, t, context = pipe.unet.dummy_inputs()
    x = jnp.zeros((1, *latent_hw, x.shape[-1]), x.dtype)

    def acts(params):
        out = hooks.apply(pipe.unet, params, x, t, context, record=paths)[1]
        return {k: hooks.to_spatial(a, latent_hw) if a.ndim == 3 else a for k, a in out.items()}

    return jax.eval_shape(acts, pipe.params["unet"])


def _check_vae(models) -> tuple[str, ...]:
    models = (models,) if isinstance(models, str) else tuple(models)
    for model in models:
        check_choice("vae_baselines", model, baselines.VAE_MODELS)
    return models


def _check_pool(k) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"store_pool must be an integer >= 1 (1: no pooling), got {k!r}")
    return int(k)


@functools.lru_cache(maxsize=4)
def _randomized_params(pipe, seed, dtype, device_mesh):
    """The randomized UNet's params, permuted once per (pipeline, seed), cast to the compute dtype and replicated
    on `device_mesh` (the current mesh, or None)."""
    del device_mesh  # a cache key: replicated once per mesh, not per batch
    params = baselines.randomize_params(pipe.params["unet"], seed)
    return mesh.replicate(params if dtype == jnp.float32 else sampling.cast_params(params, dtype))


def capture_encoded(pipe, images, prompts, request: CaptureRequest = CaptureRequest(), *, seed=0,
                    **fields) -> dict[str, jax.Array]:
    """The trained UNet's activations of `encode_and_capture` -> {layer: [B, S, h, w, C]}."""
    return encode_and_capture(pipe, images, prompts, request, seed=seed, **fields).acts


def encode_and_capture(pipe, images, prompts, request: CaptureRequest = CaptureRequest(), *, seed=0,
                       **fields) -> CaptureResult:
    """Capture the UNet on real images noised to each selected step's level (labels of the images stay exact).

    images uint8 [B,H,W,3] are VAE-encoded (posterior mean x scaling_factor); for each selected step k the latent
    is noised with `add_noise` to the scheduler's t_k (one unit noise per image, from seed + k or seed[k], shared
    by all steps), scaled with `scale_model_input` as in sampling, and the UNet is applied once on the conditional
    text embedding only (no CFG). One jit, `lax.map` over the steps; run again with the permuted UNet when the
    request has a `randomized_seed`. The request's `vae_baselines` decode, for each selected step k, the noised
    latent x_t the UNet reads before `scale_model_input` ('vae') and the x0 the scheduler's step predicts from the
    conditional UNet's noise prediction at x_t ('vae_x0'). `request` with `fields` overridden
    (`CaptureRequest.override`). Activations are [B, S, h, w, C] (h, w divided by store_pool).
    """
    request = request.override(**fields)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {images.shape}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {images.shape[0]} images")
    sampling.check_size(pipe, images.shape[1], images.shape[2])
    paths = hooks.select_layers(pipe.unet, request.layers)
    num_steps = request.sampler.num_inference_steps
    step_idx = sampling.select_steps(request.steps, num_steps)
    sched = schedulers.get_scheduler(request.sampler.scheduler, pipe.scheduler_config)
    plan = sched.set_timesteps(num_steps)
    f = pipe.vae_scale_factor
    latent_shape = (images.shape[1] // f, images.shape[2] // f, pipe.unet.config.in_channels)
    n = len(prompts)
    pad = mesh.pad_count(n, request.sampler.batch_size)  # copies of the last image: see `sampling.Settings`
    images, prompts, seeds = (mesh.pad_last(x, pad) for x in (images, prompts, sampling.image_seeds(seed, n)))
    text = sampling.encode_prompts(pipe, prompts, cfg=False, size=images.shape[1:3])
    store_dtype, pool, vae_models = (_store_dtype(request.store_dtype), _check_pool(request.store_pool),
                                     _check_vae(request.vae_baselines))
    run = _compiled_encoded(sampling.modules(pipe), sched, paths, store_dtype, pool,
                            baselines.vae_latents(vae_models))
    inputs = (mesh.shard(text), mesh.shard(images), mesh.shard(sampling.initial_noise(seeds, latent_shape)),
              mesh.replicate(plan), mesh.replicate(jnp.asarray(step_idx, jnp.int32)))
    params = sampling.params_for(pipe, jnp.float32)

    def acts_of(params, what):
        acts, latents = run(params, *inputs)
        acts = {k: hooks.to_spatial(v[:n], latent_shape[:2]) if v.ndim == 4 else v[:n] for k, v in acts.items()}
        hooks.check_finite(acts, what)
        return acts, latents

    trained, latents = acts_of(params, "encoded-mode activations")
    randomized = None if request.randomized_seed is None else acts_of(
        {**params, "unet": _randomized_params(pipe, request.randomized_seed, jnp.float32, mesh.current())},
        "randomized encoded-mode activations")[0]
    vae = _compiled_vae(pipe.vae, vae_models, store_dtype, pool)(params["vae"], latents) if vae_models else {}
    vae = {model: {k: v[:n] for k, v in acts.items()} for model, acts in vae.items()}
    for model, acts in vae.items():
        hooks.check_finite(acts, f"encoded-mode {model} activations")
    return CaptureResult(images=images[:n], acts=trained, randomized=randomized, vae=vae.get("vae"),
                         vae_x0=vae.get("vae_x0"), latents=None)


def _store_dtype(name):
    return None if name is None else jnp.dtype(name)


@functools.lru_cache(maxsize=8)
def _compiled_encoded(modules, sched, paths, store_dtype, store_pool=1, keep: tuple[str, ...] = ()):
    """The encoded capture: (params, ...) -> ({layer: [B, S, ...]}, {latent in `keep` ('xt', 'x0'): [B, S, h, w,
    c]}). XLA computes only what is returned: without 'x0' the UNet runs up to its last captured layer."""
    unet, vae = modules.unet, modules.vae

    @jax.jit
    def run(params, text, images, noise, plan, steps):
        context = sampling.encode_text(modules, params, text)
        x = images.astype(jnp.float32) / 255.0 * 2.0 - 1.0  # diffusers' VaeImageProcessor normalisation
        mean, _ = vae.apply({"params": params["vae"]}, x, method="encode")
        clean = mean * vae.config.scaling_factor

        def one(k):
            xt = sched.add_noise(plan, clean, noise, k)
            lat_in = sched.scale_model_input(plan, xt, k)
            t = jnp.broadcast_to(plan.timesteps[k], (lat_in.shape[0],))
            pred, acts = hooks.apply(unet, params["unet"], lat_in, t, context, record=paths)
            # x0: the scheduler's step formula (its third output; no scheduler's x0 depends on its state).
            latents = {"xt": xt, "x0": sched.step(plan, sched.init_state(plan, xt), pred, k, xt)[2]}
            return ({name: _store(a, store_dtype, store_pool, lat_in.shape[1:3]) for name, a in acts.items()},
                    {name: latents[name] for name in keep})

        # [S, B, ...] -> [B, S, ...]
        return jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), jax.lax.map(one, steps))

    return run


@functools.lru_cache(maxsize=8)
def _compiled_vae(vae, models, store_dtype, store_pool):
    """`vae_baselines` as one jitted program of (vae params, kept latents), for the encoded capture."""
    return jax.jit(functools.partial(vae_baselines, vae, models=models, store_dtype=store_dtype, pool=store_pool))
