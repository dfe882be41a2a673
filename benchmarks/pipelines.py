"""One small SD pipeline as both sides load it: jaxprobe and diffusers, with the same prompts and initial noise."""
from __future__ import annotations

import dataclasses
import tempfile


@dataclasses.dataclass(frozen=True)
class Pair:
    """One small SD pipeline (the tiny random one, or a directory) as jaxprobe and diffusers load it, with a batch of
    prompts and initial noise."""

    pipe: object  # jaxprobe Pipeline
    torch_pipe: object  # diffusers.StableDiffusionPipeline (StableDiffusionXLPipeline) of the same directory
    prompts: list
    noise: object  # unit noise [B, h, w, c] (jax)
    noise_t: object  # the same noise [B, c, h, w] (torch)


def load_pair(batch: int, directory="", *, captions: bool = False, xl: bool = False) -> Pair:
    """The diffusers pipeline in `directory` (e.g. the shipped toy LDM), or a new random one if empty (the tiny SD
    one, or with `xl` the SDXL-structured stand-in), with `prompts(batch, captions)`."""
    import diffusers
    import numpy as np
    import torch

    from jaxprobe.diffusion import sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.testing import sdxl_structured_pipeline, tiny_pipeline

    prompts = prompts_for(batch, captions)
    with tempfile.TemporaryDirectory() as d:
        pipe = load_pipeline(directory) if directory else (sdxl_structured_pipeline if xl else tiny_pipeline)(d)
        torch_pipe = (diffusers.StableDiffusionXLPipeline.from_pretrained(directory or d) if pipe.is_xl else
                      diffusers.StableDiffusionPipeline.from_pretrained(directory or d, safety_checker=None))
    torch_pipe.set_progress_bar_config(disable=True)
    latent = pipe.unet.config.sample_size
    noise = sampling.initial_noise(list(range(len(prompts))), (latent, latent, pipe.unet.config.in_channels))
    noise_t = torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())
    return Pair(pipe, torch_pipe, prompts, noise, noise_t)


def prompts_for(n: int, captions: bool) -> list[str]:
    """`n` prompts: the first toy-world captions (the toy LDM's tokenizer knows only their words), or short ones
    (the tiny random pipeline's 32 characters fit no caption)."""
    if not captions:
        return [f"a red sphere number {k}" for k in range(n)]
    from jaxprobe.toy.world import render

    return [render.sample_scene(seed).caption for seed in range(n)]


def describe(directory) -> str:
    """How a section names the pipeline in `directory`."""
    from benchmarks.harness import TOY_PIPELINE

    if str(directory) == str(TOY_PIPELINE):
        return "the shipped toy LDM (`assets/toy_pipeline`: SD v1 block layout, 16x16x4 latents, 64x64 images)"
    return f"the pipeline in `{directory}`"
