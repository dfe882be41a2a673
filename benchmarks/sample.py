"""sample: jaxprobe's one-jit sampler vs diffusers PyTorch on the same tiny random pipeline, prompts and noise."""
from __future__ import annotations

from benchmarks.harness import Settings, best_time, machine
from benchmarks.pipelines import load_pair


def run(s: Settings) -> str:
    import jax
    import torch

    from jaxprobe.diffusion import sampling

    pair = load_pair(s.batch, s.tiny)
    pipe, torch_pipe, prompts, noise, noise_t = pair.pipe, pair.torch_pipe, pair.prompts, pair.noise, pair.noise_t

    def ours():
        jax.block_until_ready(sampling.sample(pipe, prompts, num_inference_steps=s.steps, latents=noise).images)

    def theirs():
        with torch.inference_mode():
            torch_pipe(prompts, num_inference_steps=s.steps, latents=noise_t, output_type="np")

    t_ours = best_time(ours, repeats=s.repeats)
    t_theirs = best_time(theirs, repeats=s.repeats)
    n, size = len(prompts), pipe.default_size
    return f"""Tiny random SD pipeline (`jaxprobe.testing.tiny_pipeline`: UNet (32, 64), {size}x{size} images),
batch {n}, LMS {s.steps} steps, CFG 7.5, fp32, both on {machine()}; best of {s.repeats} after a warm-up (jit compile
excluded).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
| jaxprobe (one jit, lax.scan) | {t_ours:.4f} | {n / t_ours:.1f} |
| diffusers PyTorch {torch.__version__} | {t_theirs:.4f} | {n / t_theirs:.1f} |

Speed-up jaxprobe / diffusers: **{t_theirs / t_ours:.2f}x**. Command: `python launch/bench.py sample`."""
