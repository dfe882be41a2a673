"""The shipped toy models: a tiny VAE and a tiny text-conditioned LDM with SD v1's block structure, trained on the
toy world. Same model classes as Stable Diffusion (AutoencoderKL, UNet2DConditionModel, CLIPTextModel), so every
jaxprobe feature that runs on SD v1 runs on them, on a CPU.

Data flows one way: render scenes (cached as .npz) -> train VAE -> encode latents -> train LDM + text encoder ->
export a diffusers pipeline directory.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import io, sampling, schedulers, train
from jaxprobe.models import clip, pipeline, tokenizer, unet, vae
from jaxprobe.toyworld import captions, render

SD_V1_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
SD_V1_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
# SD v1's noise schedule and sampler options. Without clip_sample=False a DDIM (diffusers' or ours) built from this
# file clips the predicted x0 *latents* to [-1, 1] (its pixel-space default) and draws washed-out scenes.
SCHEDULER_CONFIG = {"_class_name": "LMSDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                    "steps_offset": 1, "clip_sample": False}


def vae_config(c) -> vae.VAEConfig:
    n = len(c.block_out_channels)
    return vae.VAEConfig.from_dict(dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=list(c.block_out_channels),
        layers_per_block=c.layers_per_block, norm_num_groups=c.norm_num_groups, sample_size=c.resolution,
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n))


def unet_config(c, latent_size: int) -> unet.UNetConfig:
    return unet.UNetConfig.from_dict(dict(
        sample_size=latent_size, in_channels=4, out_channels=4, block_out_channels=list(c.block_out_channels),
        layers_per_block=2, down_block_types=list(SD_V1_DOWN), up_block_types=list(SD_V1_UP),
        cross_attention_dim=c.text_width, attention_head_dim=c.attention_heads, norm_num_groups=c.norm_num_groups))


def text_config(c, vocab_size: int) -> clip.CLIPTextConfig:
    return clip.CLIPTextConfig.from_dict(dict(
        vocab_size=vocab_size, hidden_size=c.text_width, intermediate_size=4 * c.text_width,
        num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads, max_position_embeddings=c.max_length,
        hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=c.text_width))


def scene_data(workdir, *, num_images: int, resolution: int, seed_offset: int = 0,
               fields: tuple[str, ...] = ("rgb", "caption")) -> dict:
    """Rendered toy scenes of seeds seed_offset.. (the `render.render_batch` entries named in `fields`, e.g. rgb
    uint8 [N,H,W,3], caption list[str], depth, salient), cached in `workdir/scenes_*.npz`."""
    path = Path(workdir) / f"scenes_{'-'.join(fields)}_{resolution}px_{seed_offset}_{num_images}.npz"
    if not path.exists():
        batch = render.render_batch(list(range(seed_offset, seed_offset + num_images)), resolution=resolution)
        with io.atomic_path(path) as tmp:
            np.savez(tmp, **{k: np.asarray(batch[k]) for k in fields})
    with np.load(path) as data:
        return {k: [str(s) for s in data[k]] if k == "caption" else data[k] for k in fields}


def to_unit(rgb: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1] (the VAE's input range)."""
    return rgb.astype(np.float32) / 127.5 - 1.0


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The batch for `step`: a fixed per-epoch permutation, so data depends only on the step (exact resume)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]


# ----------------------------------------------------------------------------------------------------- VAE
def random_crops(images: np.ndarray, size: int, seed) -> np.ndarray:
    """One random size x size crop of each [N,H,W,C] image, at offsets that are multiples of 8 (so the VAE's
    downsampling grid stays aligned). The VAE is convolutional: training on crops is ~4x cheaper at half size and
    it still runs on whole images, as SD's VAE trained at 256 runs at 512."""
    n, h, w, _ = images.shape
    if size == h == w:
        return images
    if size > min(h, w) or size % 8:
        raise ValueError(f"crop_size must be a multiple of 8 and at most {min(h, w)}; got {size}")
    rng = np.random.default_rng(seed)
    ys, xs = (rng.integers(0, (d - size) // 8 + 1, n) * 8 for d in (h, w))
    return np.stack([im[y:y + size, x:x + size] for im, y, x in zip(images, ys, xs)])


def vae_loss_fn(model: vae.AutoencoderKL, kl_weight: float):
    def loss_fn(params, x, key):
        mean, logvar = model.apply({"params": params}, x, method="encode")
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        recon = model.apply({"params": params}, z, method="decode")
        mse = jnp.mean((recon - x) ** 2)
        kl = 0.5 * jnp.mean(jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3)))
        return mse + kl_weight * kl, {"mse": mse, "kl": kl}
    return loss_fn


def decoder_loss_fn(model: vae.AutoencoderKL):
    """Reconstruction MSE of the posterior *mean*, which is what the LDM's latents are and what sampling decodes."""
    def loss_fn(params, x, key):
        del key
        mean, _ = model.apply({"params": params}, x, method="encode")
        mse = jnp.mean((model.apply({"params": params}, jax.lax.stop_gradient(mean), method="decode") - x) ** 2)
        return mse, {"mse": mse}
    return loss_fn


def decoder_only(optimizer) -> optax.GradientTransformation:
    """`optimizer` on the decoder side (decoder, post_quant_conv); the encoder side is frozen, so latents -- and an
    LDM trained on them -- stay valid (as SD's fine-tuned VAE decoders keep the encoder)."""
    def labels(params):
        return {k: "train" if k in ("decoder", "post_quant_conv") else "freeze" for k in params}
    return optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, labels)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(4.0 / np.maximum(mse, 1e-12))


def reconstruct(model, params, x: np.ndarray, batch: int = 64) -> np.ndarray:
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    return np.concatenate([np.asarray(fn(params, x[i:i + batch])) for i in range(0, len(x), batch)])


def train_vae(c, workdir) -> tuple[vae.AutoencoderKL, dict]:
    """Train the toy VAE; returns the module (its scaling_factor set from the data) and EMA params."""
    workdir = Path(workdir)
    data = scene_data(workdir, num_images=c.num_images, resolution=c.resolution)
    x = to_unit(data["rgb"])
    model = vae.AutoencoderKL(vae_config(c))
    params = model.init(jax.random.key(c.seed), *model.dummy_inputs())["params"]
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.lr, min(100, c.num_steps // 10), c.num_steps), weight_decay=c.weight_decay)
    held_out = to_unit(scene_data(workdir, num_images=c.num_eval, resolution=c.resolution,
                                  seed_offset=c.eval_seed_offset)["rgb"])

    def evaluate(step, params):
        rec = reconstruct(model, params, held_out)
        grid = np.concatenate([held_out[:16], rec[:16]], axis=2)
        io.write_png(workdir / f"recon_{step:06d}.png", image_grid(grid))
        print(f"step {step}: held-out PSNR {psnr(np.clip(rec, -1, 1), held_out).mean():.2f} dB")

    def batch_fn(s):
        batch = x[batch_indices(s, len(x), c.batch_size, c.seed)]
        return random_crops(batch, c.crop_size or c.resolution, seed=(c.seed, s))

    state, _ = train.fit(workdir=workdir, params=params, loss_fn=vae_loss_fn(model, c.kl_weight),
                         batch_fn=batch_fn, optimizer=opt,
                         num_steps=c.num_steps, ema_decay=c.ema_decay, seed=c.seed,
                         checkpoint_every=c.checkpoint_every, eval_every=c.eval_every,
                         eval_fn=lambda st: evaluate(int(st.step), st.ema_params), desc="toy VAE")
    params = jax.device_get(state.ema_params)
    mean = encode_mean(model, params, x[:1024])
    scaled = vae.VAEConfig.from_dict({**model.config.to_dict(), "scaling_factor": float(1.0 / mean.std())})
    if c.get("decoder_steps"):  # then the decoder alone, on posterior means, with its own checkpoints
        dec_opt = decoder_only(optax.adamw(optax.cosine_decay_schedule(c.decoder_lr, c.decoder_steps),
                                           weight_decay=c.weight_decay))
        state, _ = train.fit(workdir=workdir / "decoder", params=params, loss_fn=decoder_loss_fn(model),
                             batch_fn=lambda s: batch_fn(c.num_steps + s), optimizer=dec_opt,
                             num_steps=c.decoder_steps, ema_decay=c.ema_decay, seed=c.seed,
                             checkpoint_every=c.checkpoint_every, desc="toy VAE decoder",
                             eval_fn=lambda st: evaluate(c.num_steps + int(st.step), st.params))
        params = jax.device_get(state.params)  # the cosine schedule ends at 0: the last iterate, not an EMA lagging it
    return vae.AutoencoderKL(scaled), params


def encode_mean(model, params, x: np.ndarray, batch: int = 128) -> np.ndarray:
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode")[0])
    return np.concatenate([np.asarray(fn(params, x[i:i + batch])) for i in range(0, len(x), batch)])


# ----------------------------------------------------------------------------------------------------- LDM
def ldm_loss_fn(unet_model, text_model, alphas_cumprod: jax.Array, uncond_ids: jax.Array, drop_prob: float,
                snr_gamma: float = 0.0, logit_normal_timesteps: bool = False):
    """Epsilon-prediction MSE; captions are dropped to the empty prompt with `drop_prob` (for CFG).

    Timesteps are uniform, or with `logit_normal_timesteps` t = T * sigmoid(N(0, 1)) (SD3's logit-normal sampling,
    Esser et al. 2024): most samples fall on the middle steps, where the caption changes the loss most.

    With `snr_gamma` > 0 each example's epsilon MSE is weighted by min(SNR, gamma) / SNR (Min-SNR-gamma, Hang et
    al. 2023; diffusers' `--snr_gamma`): nearly clean steps, which only teach fine noise, stop dominating the
    gradient, so a short run spends more of it on the noisy steps where layout and colour are decided."""
    def loss_fn(params, batch, key):
        z, ids = batch
        k_t, k_n, k_d = jax.random.split(key, 3)
        num_t = alphas_cumprod.shape[0]
        if logit_normal_timesteps:
            t = jnp.floor(num_t * jax.nn.sigmoid(jax.random.normal(k_t, (z.shape[0],)))).astype(jnp.int32)
        else:
            t = jax.random.randint(k_t, (z.shape[0],), 0, num_t)
        noise = jax.random.normal(k_n, z.shape)
        a = alphas_cumprod[t][:, None, None, None]
        z_t = jnp.sqrt(a) * z + jnp.sqrt(1.0 - a) * noise
        drop = jax.random.bernoulli(k_d, drop_prob, (z.shape[0], 1))
        ids = jnp.where(drop, uncond_ids[None], ids)
        context = text_model.apply({"params": params["text_encoder"]}, ids)
        pred = unet_model.apply({"params": params["unet"]}, z_t, t, context)
        mse = jnp.mean((pred - noise) ** 2, axis=(1, 2, 3))
        snr = alphas_cumprod[t] / (1.0 - alphas_cumprod[t])
        weight = jnp.minimum(snr, snr_gamma) / snr if snr_gamma > 0 else jnp.ones_like(snr)
        return jnp.mean(weight * mse), {"mse": jnp.mean(mse)}
    return loss_fn


def ldm_setup(c, latent_size: int, vocab_size: int, uncond_ids: np.ndarray):
    """The LDM a config trains: (unet module, text module, initial params, loss_fn, optimizer)."""
    unet_model = unet.UNet2DConditionModel(unet_config(c, latent_size))
    text_model = clip.CLIPTextModel(text_config(c, vocab_size))
    k_u, k_t = jax.random.split(jax.random.key(c.seed))
    params = {"unet": unet_model.init(k_u, *unet_model.dummy_inputs())["params"],
              "text_encoder": text_model.init(k_t, *text_model.dummy_inputs())["params"]}
    sched = schedulers.SchedulerConfig.from_dict(SCHEDULER_CONFIG)
    loss_fn = ldm_loss_fn(unet_model, text_model, jnp.asarray(schedulers.alphas_cumprod(sched)),
                          jnp.asarray(uncond_ids), c.caption_dropout, c.snr_gamma, c.logit_normal_timesteps)
    # The text encoder gets its own (higher) learning rate: its embeddings start at CLIP's std 0.02, and at the
    # UNet's rate they barely leave their random init in a short run, so captions stay hard to tell apart.
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.multi_transform(
        {part: optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.lr * scale, min(200, c.num_steps // 10),
                                                               c.num_steps), weight_decay=c.weight_decay)
         for part, scale in (("unet", 1.0), ("text_encoder", c.text_lr_scale))},
        {"unet": "unet", "text_encoder": "text_encoder"}))
    return unet_model, text_model, params, loss_fn, opt


def train_ldm(c, workdir, vae_model, vae_params, labelers=None) -> pipeline.Pipeline:
    """Train UNet + text encoder on the VAE's latents; returns the whole toy pipeline (EMA weights).

    With `labelers`, each evaluation also measures `generation_quality` on `c.quality_images` captions (seeds from
    5,000,000: not the test's) and writes workdir/quality.csv, so a run shows when it reaches the goals."""
    workdir = Path(workdir)
    data = scene_data(workdir, num_images=c.num_images, resolution=c.resolution)
    latents = encode_mean(vae_model, vae_params, to_unit(data["rgb"])) * vae_model.config.scaling_factor
    # Built once per workdir: the BPE trainer breaks ties arbitrarily, so a rebuild on resume could renumber tokens
    # under the trained embeddings.
    tok_dir = workdir / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        tokenizer.build_word_tokenizer(captions.vocabulary(), tok_dir, max_length=c.max_length)
    tok = pipeline.load_tokenizer(tok_dir)
    vocab = len(tok)
    ids = pipeline.tokenize(tok, data["caption"])
    uncond = pipeline.tokenize(tok, [""])[0]
    unet_model, text_model, params, loss_fn, opt = ldm_setup(c, latents.shape[1], vocab, uncond)

    def make_pipe(p):
        return pipeline.Pipeline(unet=unet_model, vae=vae_model, text_encoder=text_model, tokenizer=tok,
                                 scheduler_config=dict(SCHEDULER_CONFIG),
                                 params={"unet": p["unet"], "text_encoder": p["text_encoder"], "vae": vae_params})

    prompts = data["caption"][:8]

    def evaluate(state):
        step, pipe = int(state.step), make_pipe(state.ema_params)
        out = sampling.sample(pipe, prompts, seed=0, num_inference_steps=15)
        io.write_png(workdir / f"samples_{step:06d}.png", image_grid(out.images))
        if labelers is not None and c.quality_images:
            q = generation_quality(pipe, labelers, num_images=c.quality_images, seed_offset=5_000_000)
            rows = [r for r in io.read_csv(workdir / "quality.csv") if int(r["step"]) < step]
            rows.append({"step": step, "found": q["found"], "color_match": q["color_match"]})
            io.write_csv(workdir / "quality.csv", rows, ["step", "found", "color_match"])
            print(f"step {step}: salient object found {q['found']:.1%}, colour matches {q['color_match']:.1%}")

    def batch_fn(s):
        idx = batch_indices(s, len(latents), c.batch_size, c.seed)
        return latents[idx], ids[idx]

    state, _ = train.fit(workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn, optimizer=opt,
                         num_steps=c.num_steps, ema_decay=c.ema_decay, seed=c.seed,
                         checkpoint_every=c.checkpoint_every, eval_every=c.eval_every,
                         eval_fn=evaluate if c.eval_every else None, desc="toy LDM")
    return make_pipe(jax.device_get(state.ema_params))


def image_grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """[N,H,W,3] uint8 or [-1,1] float -> one uint8 grid image."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.round(np.clip(images / 2 + 0.5, 0, 1) * 255).astype(np.uint8)
    n, h, w, ch = images.shape
    rows = -(-n // cols)
    grid = np.zeros((rows * h, min(n, cols) * w, ch), np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, cols)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = im
    return grid



# ------------------------------------------------------------------------------------------------- quality
def vae_psnr(vae_model, vae_params, *, num_images: int = 256, seed_offset: int = 1_000_000,
             resolution: int = 64) -> np.ndarray:
    """Per-image reconstruction PSNR (dB) on held-out toy scenes (seeds seed_offset ..), decoded from the mean."""
    x = to_unit(render.render_batch(list(range(seed_offset, seed_offset + num_images)), resolution)["rgb"])
    return psnr(np.clip(reconstruct(vae_model, vae_params, x), -1, 1), x)


def generation_quality(pipe, labelers, *, num_images: int = 128, seed_offset: int = 4_000_000, batch_size: int = 32,
                       min_pixels: int = 8, num_inference_steps: int = 15,
                       guidance_scale: float | tuple[float, ...] = 7.5, scheduler: str = "lms") -> dict:
    """Does the toy LDM draw what its caption says? Captions of unseen scenes, by default 15 LMS steps and CFG 7.5
    (the goals' setting; image k sampled with seed k; `guidance_scale` may be one weight per step, see
    `sampling.guidance_schedule`; `scheduler` as in `sampling.sample`); the labelers find the salient object
    (>= min_pixels salient pixels), and its mean colour (`captions.nearest_color`) is compared with the caption's
    first (salient) object's colour word.

    Returns {'found': fraction with a salient object, 'color_match': fraction of ALL images whose salient region
    has the caption's colour, 'images', 'captions', 'salient'}.
    """
    prompts = [render.sample_scene(s).caption for s in range(seed_offset, seed_offset + num_images)]
    images = np.concatenate([
        sampling.sample(pipe, prompts[i:i + batch_size], seed=i, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, scheduler=scheduler).images
        for i in range(0, num_images, batch_size)])
    salient, _ = labelers.label(images)
    found = salient.sum(axis=(1, 2)) >= min_pixels
    match = np.zeros(num_images, bool)
    for k in np.flatnonzero(found):
        mean_rgb = images[k][salient[k]].mean(axis=0) / 255.0
        match[k] = captions.nearest_color(mean_rgb) == captions.parse(prompts[k])[0][1]
    return {"found": float(found.mean()), "color_match": float(match.mean()), "images": images,
            "captions": prompts, "salient": salient}
