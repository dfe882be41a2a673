"""capture: the extra cost of recording activations (and baselines, and streaming ridge statistics) over plain
sampling, on the toy LDM (SD v1 block layout, 16 attn1 layers)."""
from __future__ import annotations

import os

from benchmarks.harness import Settings, best_time, machine, measured
from benchmarks.pipelines import describe, prompts_for


def run(s: Settings) -> str:
    load = os.getloadavg()[0]
    import jax
    import numpy as np

    from jaxprobe.diffusion import sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.probing import ridge
    from jaxprobe.scene import capture as scene_capture
    from jaxprobe.scene.tasks import SALIENCY

    pipe = load_pipeline(s.pipeline)
    n, size = s.batch * 8, pipe.default_size
    prompts = prompts_for(n, s.captions)
    labels = np.random.default_rng(0).random((n, size, size)) < 0.3  # timing only
    kw = dict(num_inference_steps=s.steps, seed=0)

    def plain():
        jax.block_until_ready(sampling.sample(pipe, prompts, **kw).latents)

    def acts():
        jax.block_until_ready(scene_capture.capture_activations(pipe, prompts, **kw)[1])

    def with_baselines():
        r = scene_capture.capture_sweep(pipe, prompts, randomized_seed=0, vae_baselines=("vae", "vae_x0"), **kw)
        jax.block_until_ready((r.acts, r.randomized, r.vae, r.vae_x0))

    def with_ridge():  # accumulate X^T X, X^T y for every layer x step; nothing else is kept
        layer_acts = scene_capture.capture_activations(pipe, prompts, **kw)[1]
        jax.block_until_ready(ridge.accumulate_ridge(None, layer_acts, labels, SALIENCY))

    rows = [("sampling only (`sampling.sample`)", plain),
            ("+ capture of every attn1 layer x every step (`capture_activations`)", acts),
            ("+ randomized UNet on the same inputs + VAE-decoder baseline (`capture_sweep`)", with_baselines),
            ("+ capture + streaming ridge statistics (`ridge.accumulate_ridge`)", with_ridge)]
    times = [(name, best_time(fn, repeats=s.repeats)) for name, fn in rows]
    base = times[0][1]
    table = "\n".join(f"| {name} | {t:.3f} | {t / base:.2f}x |" for name, t in times)
    return f"""{measured(load)}.

{describe(s.pipeline)}, batch {n}, LMS {s.steps} steps, CFG 7.5, fp32; {machine()}; best of
{s.repeats} after a warm-up.

| pass | s / batch | vs sampling |
| --- | ---: | ---: |
{table}

Capture / sampling: **{times[1][1] / base:.2f}x** (goal <= 1.15x). Command: `python launch/bench.py capture`."""
