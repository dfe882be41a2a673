"""sample: jaxprobe's one-jit sampler vs diffusers PyTorch on the same random pipelines (the tiny SD one and the
SDXL-structured stand-in), prompts and noise."""
from __future__ import annotations

from benchmarks.harness import Settings, best_time, machine, measured
from benchmarks.pipelines import Pair, load_pair


def run(s: Settings) -> str:
    import os

    import torch

    load = os.getloadavg()[0]
    sd = _times(load_pair(s.batch, s.tiny), s)
    rows = [f"| jaxprobe (one jit, lax.scan) | {sd[0]:.4f} | {s.batch / sd[0]:.1f} |",
            f"| diffusers PyTorch {torch.__version__} | {sd[1]:.4f} | {s.batch / sd[1]:.1f} |"]
    xl_note = ""
    if s.sdxl:
        pair = load_pair(s.batch, xl=True)
        xl = _times(pair, s)
        size = pair.pipe.default_size
        rows += [f"| jaxprobe, SDXL-structured | {xl[0]:.4f} | {s.batch / xl[0]:.1f} |",
                 f"| diffusers StableDiffusionXLPipeline, SDXL-structured | {xl[1]:.4f} | {s.batch / xl[1]:.1f} |"]
        xl_note = f"""
SDXL-structured rows: `jaxprobe.testing.sdxl_structured_pipeline` (SDXL's blocks, two text encoders, text_time
conditioning; UNet (32, 64, 64), {size}x{size} images), same batch and settings; speed-up {xl[1] / xl[0]:.2f}x."""
    return f"""Tiny random SD pipeline (`jaxprobe.testing.tiny_pipeline`: UNet (32, 64), 16x16 images),
batch {s.batch}, LMS {s.steps} steps, CFG 7.5, fp32, both on {machine()}; best of {s.repeats} after a warm-up (jit compile
excluded).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
{chr(10).join(rows)}

Speed-up jaxprobe / diffusers: **{sd[1] / sd[0]:.2f}x**.{xl_note} Command: `python launch/bench.py sample`.
{measured(load)}."""


def _times(pair: Pair, s: Settings) -> tuple[float, float]:
    """(jaxprobe, diffusers) best seconds per batch, LMS `s.steps` steps at CFG 7.5 (both sides' default is not the
    same for SDXL, so it is passed)."""
    import diffusers
    import jax
    import torch

    from jaxprobe.diffusion import sampling

    pipe, torch_pipe = pair.pipe, pair.torch_pipe
    torch_pipe.scheduler = diffusers.LMSDiscreteScheduler.from_config(torch_pipe.scheduler.config)

    def ours():
        jax.block_until_ready(sampling.sample(pipe, pair.prompts, num_inference_steps=s.steps, guidance_scale=7.5,
                                              latents=pair.noise).images)

    def theirs():
        with torch.inference_mode():
            torch_pipe(pair.prompts, num_inference_steps=s.steps, guidance_scale=7.5, latents=pair.noise_t,
                       output_type="np")

    return best_time(ours, repeats=s.repeats), best_time(theirs, repeats=s.repeats)
