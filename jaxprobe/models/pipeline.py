"""A Stable Diffusion v1 pipeline directory as one object: UNet, VAE, CLIP text encoder, tokenizer, scheduler config.

`load_pipeline(dir)` reads what `diffusers.StableDiffusionPipeline.save_pretrained` writes (unet/, vae/,
text_encoder/, tokenizer/, scheduler/); `save_pipeline` writes the same layout, so pipelines that jaxprobe trains
load in diffusers too.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe import io
from jaxprobe.models import load

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: jit caches key on it
class Pipeline:
    """Modules, their fp32 params (`params['unet' | 'vae' | 'text_encoder']`), tokenizer and scheduler config."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    params: dict

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD v1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    def tokenize(self, prompts: list[str]) -> np.ndarray:
        """Prompts -> int32 ids [B, max_length], padded as diffusers does; a too-long prompt is an error."""
        return tokenize(self.tokenizer, prompts)


def load_tokenizer(directory):
    """A CLIP tokenizer from a local `tokenizer/` directory (vocab.json + merges.txt or tokenizer.json)."""
    # transformers is only a tokenizer here: without torch it would advise at import that models are unavailable.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import CLIPTokenizer
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"no tokenizer directory at {directory}")
    return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)


def tokenize(tokenizer, prompts) -> np.ndarray:
    if isinstance(prompts, str):
        prompts = [prompts]
    max_length = tokenizer.model_max_length
    ids = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=False)["input_ids"]
    too_long = [(p, len(i)) for p, i in zip(prompts, ids) if len(i) > max_length]
    if too_long:
        p, n = too_long[0]
        raise ValueError(f"prompt is {n} tokens, longer than the tokenizer's max length {max_length}: {p[:80]!r}")
    return np.asarray(ids, dtype=np.int32)


def load_pipeline(directory, *, dtype=None, variant=None) -> Pipeline:
    """A diffusers pipeline directory -> Pipeline (fp32 params; `dtype` is the modules' compute dtype).

    `variant` (e.g. "fp16") picks each model's `<name>.<variant>.safetensors`; without it, each model reads its
    plain weights or its only variant (see `load.read_weights`).
    """
    directory = Path(os.path.abspath(directory))  # absolute for the messages; symlinks kept
    if not directory.exists():  # not "missing unet/, vae/, ...": the whole path is wrong
        raise FileNotFoundError(f"pipeline directory {directory} does not exist (not a diffusers pipeline directory)")
    missing = [c for c in COMPONENTS if not (directory / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a diffusers pipeline directory: missing {', '.join(missing)}/")
    unet, unet_p = load.load_unet(directory / "unet", dtype=dtype, variant=variant)
    vae, vae_p = load.load_vae(directory / "vae", dtype=dtype, variant=variant)
    text, text_p = load.load_text_encoder(directory / "text_encoder", dtype=dtype, variant=variant)
    if text.config.hidden_size != unet.config.cross_attention_dim:
        raise ValueError(f"text encoder width {text.config.hidden_size} does not match the UNet's "
                         f"cross_attention_dim {unet.config.cross_attention_dim}")
    sched = load.read_json(directory / "scheduler" / "scheduler_config.json", "scheduler config")
    return Pipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=load_tokenizer(directory / "tokenizer"),
                    scheduler_config=sched, params={"unet": unet_p, "vae": vae_p, "text_encoder": text_p})


def save_pipeline(directory, pipe: Pipeline) -> None:
    """Write `pipe` as a diffusers StableDiffusionPipeline directory, atomically."""
    with io.atomic_dir(directory) as tmp:
        for name, weights_name in (("unet", load.DIFFUSERS_WEIGHTS), ("vae", load.DIFFUSERS_WEIGHTS),
                                   ("text_encoder", load.TRANSFORMERS_WEIGHTS)):
            load.write_component(tmp / name, getattr(pipe, name), pipe.params[name], weights_name=weights_name)
        pipe.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        io.write_text(tmp / "scheduler" / "scheduler_config.json", json.dumps(pipe.scheduler_config, indent=2))
        io.write_text(tmp / "model_index.json", json.dumps(_model_index(pipe), indent=2))


def _model_index(pipe: Pipeline) -> dict:
    return {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", pipe.scheduler_config.get("_class_name", "LMSDiscreteScheduler")],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }

