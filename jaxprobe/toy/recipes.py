"""The shipped toy models: a tiny VAE and a tiny text-conditioned LDM with SD v1's block structure, trained on the
toy world. Same model classes as Stable Diffusion (AutoencoderKL, UNet2DConditionModel, CLIPTextModel), so every
jaxprobe feature that runs on SD v1 runs on them, on a CPU.

Data flows one way: render scenes (cached as .npz) -> train VAE -> encode latents -> train LDM + text encoder ->
export a diffusers pipeline directory. `train` runs one of them (or the labelers) from its config, for launch/train.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import io, jobs, mesh, validate
from jaxprobe import train as training  # not `train`: that is this module's entry point
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.models import (
    clip,
    load_vae,
    pipeline,
    save_component,
    save_pipeline,
    tokenizer,
    unet,
    vae,
)
from jaxprobe.toy import data, quality
from jaxprobe.toy.labelers import load_labelers, save_labelers, train_labelers
from jaxprobe.toy.world import captions

SD_V1_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
SD_V1_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
# SD v1's noise schedule and sampler options. Without clip_sample=False a DDIM (diffusers' or ours) built from this
# file clips the predicted x0 *latents* to [-1, 1] (its pixel-space default) and draws washed-out scenes.
SCHEDULER_CONFIG = {"_class_name": "LMSDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                    "steps_offset": 1, "clip_sample": False}
MODELS = ("vae", "ldm", "labelers", "mobilenet_v2", "clip")
# A resume may lengthen the schedule or change what evaluations do; anything else needs a new workdir.
MAY_CHANGE_ON_RESUME = ("num_steps", "decoder_steps", "eval_every", "checkpoint_every", "quality_images",
                        "labelers_dir", "mesh")
# The numbers a training config may hold (configs/toy/*.py), each checked where present before any work: the least
# and greatest valid values, and those that must be finite and > 0.
AT_LEAST = {"seed": 0, "resolution": 8, "num_images": 1, "num_eval": 1, "eval_seed_offset": 0, "layers_per_block": 1,
            "norm_num_groups": 1, "crop_size": 0, "batch_size": 1, "num_steps": 1, "weight_decay": 0, "kl_weight": 0,
            "ema_decay": 0, "checkpoint_every": 1, "eval_every": 0, "decoder_steps": 0, "attention_heads": 1,
            "text_heads": 1, "text_width": 1, "text_layers": 1, "max_length": 2, "caption_dropout": 0,
            "snr_gamma": 0, "quality_images": 0, "huber_delta": 0, "dice_weight": 0, "dropout": 0, "num_train": 1,
            "num_test": 1, "epochs": 1, "early_checkpoints": 0, "warmup_steps": 0, "bn_images": 1, "image_size": 8,
            "patch_size": 1, "width": 1, "heads": 1, "vision_layers": 1, "projection_dim": 1}
AT_MOST = {"ema_decay": 1, "caption_dropout": 1, "dropout": 1}
POSITIVE = ("lr", "decoder_lr", "text_lr_scale", "huber_delta", "width_mult")


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


# ----------------------------------------------------------------------------------------------------- VAE
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


def train_vae(c, workdir) -> tuple[vae.AutoencoderKL, dict]:
    """Train the toy VAE; returns the module (its scaling_factor set from the data) and EMA params."""
    workdir = Path(workdir)
    x = data.to_unit(data.scene_data(workdir, num_images=c.num_images, resolution=c.resolution)["rgb"])
    model = vae.AutoencoderKL(vae_config(c))
    params = model.init(jax.random.key(c.seed), *model.dummy_inputs())["params"]
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.lr, min(100, c.num_steps // 10), c.num_steps),
                      weight_decay=c.weight_decay)
    held_out = data.to_unit(data.scene_data(workdir, num_images=c.num_eval, resolution=c.resolution,
                                            seed_offset=c.eval_seed_offset)["rgb"])

    def evaluate(step, params):
        rec = quality.reconstruct(model, params, held_out)
        grid = np.concatenate([held_out[:16], rec[:16]], axis=2)
        io.write_png(workdir / f"recon_{step:06d}.png", quality.image_grid(grid))
        print(f"step {step}: held-out PSNR {quality.psnr(np.clip(rec, -1, 1), held_out).mean():.2f} dB")

    def batch_fn(s):
        batch = x[data.batch_indices(s, len(x), c.batch_size, c.seed)]
        return data.random_crops(batch, c.crop_size or c.resolution, seed=(c.seed, s))

    state, _ = training.fit(workdir=workdir, params=params, loss_fn=vae_loss_fn(model, c.kl_weight),
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
        state, _ = training.fit(workdir=workdir / "decoder", params=params, loss_fn=decoder_loss_fn(model),
                                batch_fn=lambda s: batch_fn(c.num_steps + s), optimizer=dec_opt,
                                num_steps=c.decoder_steps, ema_decay=c.ema_decay, seed=c.seed,
                                checkpoint_every=c.checkpoint_every, desc="toy VAE decoder",
                                eval_fn=lambda st: evaluate(c.num_steps + int(st.step), st.params))
        params = jax.device_get(state.params)  # the cosine schedule ends at 0: the last iterate, not an EMA lagging it
    return vae.AutoencoderKL(scaled), params


def encode_mean(model, params, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Posterior means of images in [-1, 1]: the (unscaled) latents an LDM trains on."""
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode")[0])
    return data.map_batches(lambda b: fn(params, b), x, batch_size)


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
    scenes = data.scene_data(workdir, num_images=c.num_images, resolution=c.resolution)
    latents = encode_mean(vae_model, vae_params, data.to_unit(scenes["rgb"])) * vae_model.config.scaling_factor
    # Built once per workdir: the BPE trainer breaks ties arbitrarily, so a rebuild on resume could renumber tokens
    # under the trained embeddings.
    tok_dir = workdir / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        tokenizer.build_word_tokenizer(captions.vocabulary(), tok_dir, max_length=c.max_length)
    tok = pipeline.load_tokenizer(tok_dir)
    vocab = len(tok)
    ids = pipeline.tokenize(tok, scenes["caption"])
    uncond = pipeline.tokenize(tok, [""])[0]
    unet_model, text_model, params, loss_fn, opt = ldm_setup(c, latents.shape[1], vocab, uncond)

    def make_pipe(p):
        return pipeline.Pipeline(unet=unet_model, vae=vae_model, text_encoder=text_model, tokenizer=tok,
                                 scheduler_config=dict(SCHEDULER_CONFIG),
                                 params={"unet": p["unet"], "text_encoder": p["text_encoder"], "vae": vae_params})

    prompts = scenes["caption"][:8]

    def evaluate(state):
        step, pipe = int(state.step), make_pipe(state.ema_params)
        out = sampling.sample(pipe, prompts, seed=0, num_inference_steps=15)
        io.write_png(workdir / f"samples_{step:06d}.png", quality.image_grid(out.images))
        if labelers is not None and c.quality_images:
            q = quality.generation_quality(pipe, labelers, num_images=c.quality_images, seed_offset=5_000_000)
            rows = [r for r in io.read_csv(workdir / "quality.csv") if int(r["step"]) < step]
            rows.append({"step": step, "found": q["found"], "color_match": q["color_match"]})
            io.write_csv(workdir / "quality.csv", rows, ["step", "found", "color_match"])
            print(f"step {step}: salient object found {q['found']:.1%}, colour matches {q['color_match']:.1%}")

    def batch_fn(s):
        idx = data.batch_indices(s, len(latents), c.batch_size, c.seed)
        return latents[idx], ids[idx]

    state, _ = training.fit(workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn, optimizer=opt,
                            num_steps=c.num_steps, ema_decay=c.ema_decay, seed=c.seed,
                            checkpoint_every=c.checkpoint_every, eval_every=c.eval_every,
                            eval_fn=evaluate if c.eval_every else None, desc="toy LDM")
    return make_pipe(jax.device_get(state.ema_params))


# --------------------------------------------------------------------------------------------------- entry
def train(c, workdir) -> list[str]:
    """Train and export the toy model `c.model` names (one of MODELS) in `workdir`; resumable: call
    again after a kill. Returns what to report: where it was written, with its headline numbers. Every check
    (`check_config`, the mesh) runs before the workdir is claimed and the data rendered.

    On a CPU it runs data parallel over one XLA device per core (`train.host_device_flags`), which takes effect
    only if nothing in this process has started jax's backend yet (launch/train.py calls this first)."""
    check_config(c, workdir)
    os.environ["XLA_FLAGS"] = training.host_device_flags(os.environ.get("XLA_FLAGS", ""))  # before jax's backend
    mesh.check_single_process("training run")
    with jax.set_mesh(mesh.from_config(c)):  # `train.fit` splits its batches over the data axis
        workdir = jobs.claim(workdir, c.to_dict(), kind="training run", may_change=MAY_CHANGE_ON_RESUME)
        return _train(c, workdir)


def check_config(c, workdir) -> None:
    """The checks of a training request that need no device: the model, every number (AT_LEAST, AT_MOST,
    POSITIVE), the crop, the workdir and the directories it reads."""
    validate.check_choice("config.model", c.model, MODELS)
    validate.at_least(c, {k: low for k, low in AT_LEAST.items() if k in c})
    validate.at_most(c, {k: high for k, high in AT_MOST.items() if k in c})
    for key in POSITIVE:
        if key in c:
            validate.positive_finite(c, key)
    if c.get("crop_size") and (c.crop_size % 8 or c.crop_size > c.resolution):
        raise ValueError(f"config.crop_size must be 0 (whole images) or a multiple of 8 up to config.resolution="
                         f"{c.resolution}, got {c.crop_size}")
    if "epochs" in c and c.num_train < c.batch_size:
        raise ValueError(f"config.num_train={c.num_train} is below config.batch_size={c.batch_size}: an epoch "
                         "needs one batch")
    jobs.check_workdir(workdir)
    if c.model == "ldm":
        validate.existing_path(c, "vae_dir", "the toy VAE's directory (launch/train.py --config=configs/toy/vae.py "
                               "writes <workdir>/vae)", ("config.json",))
        if c.get("labelers_dir"):
            validate.existing_path(c, "labelers_dir", "the toy labelers' directory, or '' for none")


def _train(c, workdir: Path) -> list[str]:
    if c.model == "vae":
        module, params = train_vae(c, workdir)
        save_component(workdir / "vae", module, params)
        return [f"toy VAE written to {workdir / 'vae'} (scaling_factor {module.config.scaling_factor:.4f})"]
    if c.model == "ldm":
        vae_model, vae_params = load_vae(c.vae_dir)
        labelers = load_labelers(c.labelers_dir) if c.get("labelers_dir") else None
        save_pipeline(workdir / "pipeline", train_ldm(c, workdir, vae_model, vae_params, labelers))
        return [f"toy pipeline written to {workdir / 'pipeline'}"]
    if c.model in ("mobilenet_v2", "clip"):
        from jaxprobe.toy import card_models
        return (card_models.train_mobilenet if c.model == "mobilenet_v2" else card_models.train_clip)(c, workdir)
    labelers, scores = train_labelers(c, workdir)
    outs = [workdir / "labelers"] + ([Path(c.export_dir)] if c.export_dir else [])
    for out in outs:
        save_labelers(out, labelers.module, labelers.params, scores)
    return [f"toy labelers written to {out}" for out in outs] + [
        f"held-out ({scores['num_images']} scenes): saliency IoU {scores['saliency_iou']:.4f}, "
        f"depth RMSE (z) {scores['depth_rmse']:.4f}, Spearman {scores['depth_spearman']:.4f}"]
