"""A tiny random Stable Diffusion v1 pipeline for smoke runs, tests and benchmarks, built without torch, stand-ins with
SD v1's, SD 2.x's and SDXL's block structure at small widths, and random probes for any pipeline's layers.

`tiny_pipeline()` builds jaxprobe's own Flax UNet, VAE and CLIP text encoder at toy sizes (16x16 images, a
character-level tokenizer) with seeded random weights (`init_params`) and returns a `Pipeline` in seconds, with no
download. It is saved in the diffusers layout, so `diffusers.StableDiffusionPipeline.from_pretrained` loads the same
directory (the parity tests compare the two). The architecture mirrors the diffusers-built reference in
tests/tiny_sd.py; its weights are random in a different way from PyTorch's init, but sampling from them stays
finite.
"""
from __future__ import annotations

import functools
import json
import string
import tempfile
from pathlib import Path

import jax
import numpy as np

from jaxprobe.models import load
from jaxprobe.models.pipeline import (
    Pipeline,
    load_pipeline,
    load_tokenizer,
    save_pipeline,
)

SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
CHARS = list(string.ascii_lowercase + string.digits + ",.!?'-")
VOCAB_SIZE = 2 * len(CHARS) + len(SPECIALS)
MAX_LENGTH = 32

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "block_out_channels": [32, 64], "layers_per_block": 2, "norm_num_groups": 32, "cross_attention_dim": 32,
    "attention_head_dim": 4, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"]}
"""diffusers UNet2DConditionModel config.json of the tiny UNet (8x8x4 latents, two levels, 4 attention heads)."""

VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "block_out_channels": [32, 64], "in_channels": 3, "out_channels": 3,
    "latent_channels": 4, "norm_num_groups": 32, "layers_per_block": 1, "sample_size": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}
"""diffusers AutoencoderKL config.json of the tiny VAE (factor 2: 16x16 images from 8x8 latents)."""

TEXT_ENCODER_CONFIG = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": VOCAB_SIZE,
    "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
    "max_position_embeddings": MAX_LENGTH, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu",
    "bos_token_id": VOCAB_SIZE - 2, "eos_token_id": VOCAB_SIZE - 1, "pad_token_id": VOCAB_SIZE - 1}
"""transformers CLIPTextModel config.json of the tiny text encoder (width 32 = the UNet's cross_attention_dim)."""

SCHEDULER_CONFIG = {
    "_class_name": "LMSDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
    "timestep_spacing": "linspace"}
"""diffusers scheduler_config.json: LMS with SD v1's scaled_linear betas."""


def write_char_tokenizer(directory, max_length: int = MAX_LENGTH, pad_token: str = SPECIALS[1]) -> int:
    """A CLIP BPE tokenizer over single characters (no merges); returns the vocabulary size. SDXL's tokenizer_2
    pads with "!" instead of the end-of-text token."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(CHARS + [c + "</w>" for c in CHARS] + SPECIALS)}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": max_length, "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
        "unk_token": SPECIALS[1], "pad_token": pad_token, "tokenizer_class": "CLIPTokenizer"}))
    return len(vocab)


def init_params(module, key):
    """Seeded random params of `module` (a jaxprobe UNet, VAE or text encoder), drawn host-side with numpy:
    LeCun-normal kernels and embeddings (std 1/sqrt(fan-in)), zero biases, unit norm scales. Only the shapes come
    from Flax (`jax.eval_shape` of `init`): a real `init` runs the whole model op by op and compiles its random
    draws, which cost most of a test module's setup; these weights only need to be random, finite and seeded."""
    shapes = jax.eval_shape(lambda k: module.init(k, *module.dummy_inputs())["params"], key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "bias":
            return np.zeros(leaf.shape, leaf.dtype)
        if name == "scale":
            return np.ones(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if name == "kernel" else leaf.shape[-1]
        return (rng.standard_normal(leaf.shape) / np.sqrt(max(fan_in, 1))).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def tiny_pipeline(directory=None, *, seed: int = 0) -> Pipeline:
    """A random tiny SD pipeline (`init_params` from `seed`), saved to `directory` (atomically; a temp dir if None)
    and loaded back from it, so the result is exactly what diffusers would load from that directory."""
    return _random_pipeline(directory, seed, UNET_CONFIG, VAE_CONFIG, TEXT_ENCODER_CONFIG, SCHEDULER_CONFIG,
                            MAX_LENGTH)


SD_V1_MAX_LENGTH = 77
SD_V1_UNET_CONFIG = {
    **UNET_CONFIG, "block_out_channels": [32, 64, 64, 64], "attention_head_dim": 8, "sample_size": 8,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
"""SD v1's UNet config.json (four levels, 16 attn1 layers, 8 heads, 2 resnets per block) at 1/10 of its widths."""
SD_V1_VAE_CONFIG = {
    **VAE_CONFIG, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 2, "sample_size": 64,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215}
"""SD v1's AutoencoderKL config.json (factor 8) at 1/4 of its widths."""
SD_V1_TEXT_ENCODER_CONFIG = {**TEXT_ENCODER_CONFIG, "max_position_embeddings": SD_V1_MAX_LENGTH}
SD_V1_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False}
"""SD v1-4's scheduler_config.json as shipped (a config's `scheduler` picks the sampler; the betas come from here)."""


def sd_v1_structured_pipeline(directory=None, *, seed: int = 0) -> Pipeline:
    """A random pipeline with SD v1's block structure (same module paths, so the same 16 attn1 layers, VAE factor
    8, 77-token prompts) at small widths: what configs/scene/sd_v1_paper.py runs on when no weights exist. Saved
    and loaded back as `tiny_pipeline` does."""
    return _random_pipeline(directory, seed, SD_V1_UNET_CONFIG, SD_V1_VAE_CONFIG, SD_V1_TEXT_ENCODER_CONFIG,
                            SD_V1_SCHEDULER_CONFIG, SD_V1_MAX_LENGTH)


SD_V2_UNET_CONFIG = {
    **SD_V1_UNET_CONFIG, "attention_head_dim": [1, 2, 2, 2], "use_linear_projection": True,
    "upcast_attention": True, "cross_attention_dim": 32}
"""SD 2.1's UNet config.json (SD v1's blocks; head count per block for 64-wide heads, linear proj_in/proj_out,
upcast attention) at 1/10 of its widths."""
SD_V2_TEXT_ENCODER_CONFIG = {**SD_V1_TEXT_ENCODER_CONFIG, "hidden_act": "gelu"}
SD_V2_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "prediction_type": "v_prediction", "timestep_spacing": "leading"}
"""SD 2.1's scheduler_config.json: v-prediction."""


def sd_v2_structured_pipeline(directory=None, *, seed: int = 0) -> Pipeline:
    """A random pipeline with SD 2.1's structure (v-prediction, linear projections, upcast attention, GELU text
    encoder) at small widths: what configs/scene/sd_v2_paper.py runs on when no weights exist."""
    return _random_pipeline(directory, seed, SD_V2_UNET_CONFIG, SD_V1_VAE_CONFIG, SD_V2_TEXT_ENCODER_CONFIG,
                            SD_V2_SCHEDULER_CONFIG, SD_V1_MAX_LENGTH)


SDXL_PROJECTION_DIM = 16
SDXL_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "block_out_channels": [32, 64, 64], "layers_per_block": 2, "norm_num_groups": 32, "cross_attention_dim": 64,
    "attention_head_dim": [1, 2, 4], "transformer_layers_per_block": [1, 2, 2], "use_linear_projection": True,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + SDXL_PROJECTION_DIM}
"""SDXL's UNet config.json (a plain first block, then cross-attention blocks of 2 transformer layers, where SDXL has
2 and 10; text_time conditioning; cross_attention_dim = both encoders' widths) at small widths."""
SDXL_VAE_CONFIG = {**SD_V1_VAE_CONFIG, "scaling_factor": 0.13025, "force_upcast": True}
SDXL_TEXT_ENCODER_2_CONFIG = {
    **SD_V1_TEXT_ENCODER_CONFIG, "architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
    "projection_dim": SDXL_PROJECTION_DIM, "eos_token_id": 2}
"""SDXL's text_encoder_2 config.json (OpenCLIP's GELU, pooled at argmax(ids): its legacy eos_token_id 2)."""
SDXL_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "interpolation_type": "linear", "prediction_type": "epsilon",
    "steps_offset": 1, "timestep_spacing": "leading", "use_karras_sigmas": False}
"""SDXL base 1.0's scheduler_config.json."""


def sdxl_structured_pipeline(directory=None, *, seed: int = 0) -> Pipeline:
    """A random pipeline with SDXL's structure (same module paths: DownBlock2D then two CrossAttnDownBlock2D,
    text_time conditioning, two text encoders and tokenizers, VAE factor 8 with SDXL's scaling factor) at small
    widths: what configs/scene/sdxl_paper.py runs on when no weights exist. Saved in the
    `StableDiffusionXLPipeline` layout and loaded back as `tiny_pipeline` does."""
    return _random_pipeline(directory, seed, SDXL_UNET_CONFIG, SDXL_VAE_CONFIG, SD_V1_TEXT_ENCODER_CONFIG,
                            SDXL_SCHEDULER_CONFIG, SD_V1_MAX_LENGTH, text_config_2=SDXL_TEXT_ENCODER_2_CONFIG)


def _random_pipeline(directory, seed, unet_config, vae_config, text_config, scheduler_config, max_length, *,
                     text_config_2=None):
    configs = {"unet": (load.build_unet, unet_config), "vae": (load.build_vae, vae_config),
               "text_encoder": (load.build_text_encoder, text_config)}
    if text_config_2 is not None:
        configs["text_encoder_2"] = (load.build_text_encoder, text_config_2)
    keys = jax.random.split(jax.random.key(seed), len(configs))
    modules = {name: build(config) for name, (build, config) in configs.items()}
    params = {name: init_params(m, k) for (name, m), k in zip(modules.items(), keys)}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = {"tokenizer": SPECIALS[1]} | ({"tokenizer_2": "!"} if text_config_2 else {})
        for name, pad in tokenizers.items():
            write_char_tokenizer(Path(tmp) / name, max_length, pad)
        xl = {"force_zeros_for_empty_prompt": True} if text_config_2 else {}
        pipe = Pipeline(**modules, **{name: load_tokenizer(Path(tmp) / name) for name in tokenizers},
                        scheduler_config=dict(scheduler_config), params=params, **xl)
        target = Path(tmp) / "pipeline" if directory is None else directory
        save_pipeline(target, pipe)
        return load_pipeline(target)


def random_linear_probes(pipe, layers, steps, rng: np.random.Generator, *, scaled: bool = False) -> dict:
    """{(layer, step): {'kernel': [C, 2]}}: a random linear saliency probe (`probes.init_probe`'s layout) for each
    of the UNet `layers` (C = the layer's output width) at each step, drawn from `rng` layer by layer from N(0, 1),
    divided by sqrt(C) when `scaled`."""
    out = {}
    for layer in layers:
        width = functools.reduce(dict.__getitem__, layer.split("/"), pipe.params["unet"])["kernel"].shape[-1]
        for step in steps:
            kernel = rng.normal(size=(width, 2))
            out[(layer, step)] = {"kernel": (kernel / np.sqrt(width) if scaled else kernel).astype(np.float32)}
    return out


def random_mobilenet_checkpoints(directory, *, width: float = 0.5, num_classes: int = 16, steps=(0, 7)) -> Path:
    """Random MobileNetV2 "training checkpoints" step_<step>.safetensors in `directory` (torchvision names): the
    same init with weights scaled by 1, 1.5, 2, ... so that every checkpoint differs."""
    from jaxprobe.models import mobilenet_v2
    module = mobilenet_v2.MobileNetV2(mobilenet_v2.MobileNetV2Config(num_classes=num_classes, width_mult=width))
    variables = module.init(jax.random.key(0), *module.dummy_inputs())
    for k, step in enumerate(steps):
        moved = jax.tree.map(lambda p: p * (1.0 + 0.5 * k), variables["params"])
        load.save_mobilenet_v2(Path(directory) / f"step_{step:06d}.safetensors", module,
                               {**variables, "params": moved})
    return Path(directory)



DPT_CONFIG = {
    "architectures": ["DPTForDepthEstimation"], "model_type": "dpt", "hidden_size": 32, "num_hidden_layers": 4,
    "num_attention_heads": 4, "intermediate_size": 64, "patch_size": 16, "backbone_out_indices": [0, 1, 2, 3],
    "neck_hidden_sizes": [8, 16, 24, 32], "fusion_hidden_size": 16, "initializer_range": 0.15}
"""transformers DPTConfig of the tiny random DPT: DPT-Large's structure (readout 'project', factors 4, 2, 1,
0.5; patch 16, so the depth map has the input's size) at toy widths; init std 0.15, not 0.02, so that depth is
O(1), not ~0."""


def random_dpt(directory, *, seed: int = 0, image_size: int = 32) -> Path:
    """A random tiny DPTForDepthEstimation (Flax init from `seed`) for image_size x image_size inputs, saved in the
    transformers layout (`DPTForDepthEstimation.from_pretrained` and `load.load_dpt` read it) with a DPT-Large style
    preprocessor_config.json of that size; returns `directory`."""
    module = load.build_dpt({**DPT_CONFIG, "image_size": image_size})
    load.save_component(directory, module, init_params(module, jax.random.key(seed)),
                        weights_name="model.safetensors")
    processor = {"image_processor_type": "DPTImageProcessor", "do_resize": True, "resample": 3,
                 "size": {"height": image_size, "width": image_size}, "keep_aspect_ratio": False,
                 "ensure_multiple_of": 1, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return Path(directory)
