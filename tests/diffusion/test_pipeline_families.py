"""SD 2.x and SDXL pipelines against diffusers end to end (same initial latents), SDXL's prompt encoding, and the
loading of an SDXL directory as `StableDiffusionXLPipeline.save_pretrained` writes it (shards, fp16 variant)."""
import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tiny_sd import build_torch_sd2_pipeline, build_torch_sdxl_pipeline

from jaxprobe.diffusion import sampling
from jaxprobe.models import convert, load_pipeline

PROMPTS = ["a red sphere", "two blue cubes"]


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_sdxl")
    torch_pipe = build_torch_sdxl_pipeline(directory, max_shard_size="60KB")  # every model in several shards
    torch_pipe.set_progress_bar_config(disable=True)
    return directory, torch_pipe, load_pipeline(directory)


def _torch_images(torch_pipe, noise, **kwargs) -> np.ndarray:
    """diffusers' images as uint8 [B, H, W, 3] from our unit noise [B, h, w, c]."""
    latents = torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())
    return np.round(torch_pipe(PROMPTS, latents=latents, output_type="np", **kwargs).images * 255).astype(int)


@pytest.mark.parametrize("negative", [None, "a green cone"])
def test_sdxl_prompt_encoding_matches_diffusers(xl, negative):
    """Both encoders' penultimate states, the pooled projection, zeros for the empty negative prompt
    (force_zeros_for_empty_prompt) and the time ids, against diffusers' encode_prompt and _get_add_time_ids."""
    _, torch_pipe, pipe = xl
    with torch.no_grad():
        embeds, neg_embeds, pooled, neg_pooled = torch_pipe.encode_prompt(PROMPTS, negative_prompt=negative)
        time_ids = torch_pipe._get_add_time_ids((16, 24), (0, 0), (16, 24), torch.float32, 16)
    text = sampling.encode_prompts(pipe, PROMPTS, negative_prompt=negative or "", size=(16, 24))
    ours = jax.jit(sampling.encode_text, static_argnums=0)(sampling.modules(pipe), pipe.params, text)
    chex.assert_trees_all_close(
        (ours.encoder_hidden_states, ours.text_embeds, ours.time_ids),
        (torch.cat([neg_embeds, embeds]).numpy(), torch.cat([neg_pooled, pooled]).numpy(),
         time_ids.repeat(4, 1).numpy()), atol=1e-4, rtol=0)
    assert (float(np.abs(ours.encoder_hidden_states[:2]).max()) == 0) == (negative is None)


@pytest.mark.parametrize("scheduler", ["euler", pytest.param("ddim", marks=pytest.mark.slow)])  # fast tier budget
def test_sdxl_sample_matches_diffusers(xl, scheduler):
    import diffusers
    directory, torch_pipe, pipe = xl
    cls = {"euler": "EulerDiscreteScheduler", "ddim": "DDIMScheduler"}[scheduler]
    torch_pipe.scheduler = getattr(diffusers, cls).from_pretrained(str(directory / "scheduler"))
    noise = sampling.initial_noise([3, 4], (8, 8, 4))
    ours = sampling.sample(pipe, PROMPTS, num_inference_steps=4, guidance_scale=7.5, latents=noise,
                           scheduler=scheduler)
    ref = _torch_images(torch_pipe, noise, num_inference_steps=4, guidance_scale=7.5)
    assert ours.images.shape == (2, 16, 16, 3)
    assert np.abs(ours.images.astype(int) - ref).max() <= 2


@pytest.mark.slow  # an end-to-end run of its own compilation (the fast tier keeps <= ~5 min on 2 cores)
def test_sd2_v_prediction_sample_matches_diffusers(tmp_path):
    torch_pipe = build_torch_sd2_pipeline(tmp_path)
    torch_pipe.set_progress_bar_config(disable=True)
    pipe = load_pipeline(tmp_path)
    assert pipe.scheduler_config["prediction_type"] == "v_prediction" and pipe.unet.config.upcast_attention
    noise = sampling.initial_noise([5, 6], (8, 8, 4))
    ours = sampling.sample(pipe, PROMPTS, num_inference_steps=4, guidance_scale=7.5, latents=noise,
                           scheduler="ddim")
    ref = _torch_images(torch_pipe, noise, num_inference_steps=4, guidance_scale=7.5)
    assert np.abs(ours.images.astype(int) - ref).max() <= 2


def test_sdxl_directory_loads_shards_and_fp16_variant(xl, tmp_path):
    directory, torch_pipe, pipe = xl
    assert (directory / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert (directory / "text_encoder_2" / "model.safetensors.index.json").is_file()
    assert pipe.is_xl and pipe.force_zeros_for_empty_prompt and pipe.vae.config.scaling_factor == 0.13025
    in_bf16 = sampling.in_dtype(sampling.modules(pipe), jnp.bfloat16)  # force_upcast: the VAE decodes in fp32
    assert (in_bf16.unet.dtype, in_bf16.text_encoder_2.dtype, in_bf16.vae.dtype) == (jnp.bfloat16,) * 2 + (jnp.float32,)
    half = copy.deepcopy(torch_pipe).to(torch.float16)
    half.save_pretrained(str(tmp_path), variant="fp16")
    loaded = load_pipeline(tmp_path, variant="fp16")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ref = {k: v.float().numpy() for k, v in getattr(half, name).state_dict().items()
               if not k.endswith("position_ids")}
        chex.assert_trees_all_equal(convert.params_to_state_dict(loaded.params[name]), ref)


def test_sdxl_size_off_its_latent_factor_is_refused_before_compiling(xl):
    with pytest.raises(ValueError, match="image size 18x16 is not a multiple of the VAE factor 2 x 2 = 4"):
        sampling.sample(xl[2], PROMPTS, height=18, width=16)
