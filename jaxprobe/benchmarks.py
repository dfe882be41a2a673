"""Benchmarks, each side by side with its reference in one run; each writes its own section of a markdown file
(BENCHMARKS.md by default) and returns it. launch/bench.py runs them by name (`run`).

  sample   jaxprobe vs diffusers PyTorch, same tiny pipeline, CPU
  probe    every layer x step probe, vmapped JAX vs the paper's one-at-a-time PyTorch loop
  capture  sampling vs sampling + capture (+ baselines, + streaming ridge), toy LDM
  train    toy LDM training step on 1 CPU device vs one device per core (data parallel)

The PyTorch references (torch, diffusers: the `bench` extra) are imported inside the benchmarks that use them, so the
library never needs torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from jaxprobe import io
from jaxprobe.validate import check_choice

TOY_PIPELINE = Path(__file__).resolve().parents[1] / "assets" / "toy_pipeline"
# The toy LDM's 16 attn1 layers at 16x16 latents: (tokens side, channels, layer count); 64x64 labels.
TOY_LAYERS = ((16, 32, 5), (8, 64, 5), (4, 64, 4), (2, 64, 2))


@dataclasses.dataclass(frozen=True)
class Settings:
    """What launch/bench.py's flags set; each benchmark reads the fields it needs."""

    out: str = "BENCHMARKS.md"  # markdown file to update
    batch: int = 4  # prompts per batch
    steps: int = 15  # denoising steps
    repeats: int = 3  # timed repeats (best is kept)
    probe_images: int = 64  # training images for the probe benchmark
    probe_epochs: int = 3  # epochs for the probe benchmark (both sides)
    torch_probes: int = 4  # PyTorch probes timed per shape group (then scaled)


def best_time(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of `fn()` over `repeats` runs after `warmup` runs (which absorb jit compilation)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    import jax
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on " \
           f"{jax.devices()[0].platform}"


def write_section(path, name: str, body: str) -> None:
    """Replace (or append) the `## name` section of the markdown file at `path`."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# jaxprobe benchmarks\n\nWritten by `launch/bench.py`.\n"
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    with io.atomic_path(path) as tmp:
        tmp.write_text(text)


def sample(s: Settings) -> str:
    import diffusers
    import jax
    import numpy as np
    import torch

    from jaxprobe.diffusion import sampling
    from jaxprobe.testing import tiny_pipeline

    prompts = [f"a red sphere number {k}" for k in range(s.batch)]
    with tempfile.TemporaryDirectory() as d:
        pipe = tiny_pipeline(d)
        torch_pipe = diffusers.StableDiffusionPipeline.from_pretrained(d)
    torch_pipe.set_progress_bar_config(disable=True)
    latent = pipe.unet.config.sample_size
    noise = sampling.initial_noise(list(range(len(prompts))), (latent, latent, pipe.unet.config.in_channels))
    noise_t = torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())

    def ours():
        jax.block_until_ready(sampling.sample(pipe, prompts, num_inference_steps=s.steps, latents=noise).images)

    def theirs():
        with torch.inference_mode():
            torch_pipe(prompts, num_inference_steps=s.steps, latents=noise_t, output_type="np")

    t_ours = best_time(ours, repeats=s.repeats)
    t_theirs = best_time(theirs, repeats=s.repeats)
    n, size = len(prompts), pipe.default_size
    body = f"""Tiny random SD pipeline (`jaxprobe.testing.tiny_pipeline`: UNet (32, 64), {size}x{size} images),
batch {n}, LMS {s.steps} steps, CFG 7.5, fp32, both on {machine()}; best of {s.repeats} after a warm-up (jit compile
excluded).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
| jaxprobe (one jit, lax.scan) | {t_ours:.4f} | {n / t_ours:.1f} |
| diffusers PyTorch {torch.__version__} | {t_theirs:.4f} | {n / t_theirs:.1f} |

Speed-up jaxprobe / diffusers: **{t_theirs / t_ours:.2f}x**. Command: `python launch/bench.py sample`."""
    write_section(s.out, "sample", body)
    return body


def _torch_probe_loop(acts, labels, epochs: int, batch_size: int) -> None:
    """The paper's way: one nn.Linear probe at a time, logits nearest-upsampled to label size, CE, Adam 1e-3."""
    import torch
    import torch.nn.functional as F

    y = torch.from_numpy(labels.astype("int64"))
    for x in acts:  # [N, h, w, C] per probe
        x = torch.from_numpy(x)
        lin = torch.nn.Linear(x.shape[-1], 2, bias=False)
        opt = torch.optim.Adam(lin.parameters(), 1e-3)
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                b = perm[i:i + batch_size]
                logits = F.interpolate(lin(x[b]).permute(0, 3, 1, 2), size=y.shape[1:], mode="nearest")
                loss = F.cross_entropy(logits, y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()


def probe(s: Settings) -> str:
    import jax
    import numpy as np
    import torch

    from jaxprobe.probing import fit
    from jaxprobe.scene.tasks import SALIENCY

    n, steps, epochs, batch = s.probe_images, s.steps, s.probe_epochs, 4
    rng = np.random.default_rng(0)
    labels = rng.random((n, 64, 64)) < 0.3
    groups = [rng.normal(size=(n, count * steps, side, side, ch)).astype(np.float32)
              for side, ch, count in TOY_LAYERS]
    num_probes = sum(g.shape[1] for g in groups)

    def ours():
        for g in groups:
            jax.block_until_ready(fit.fit_group(g, labels, SALIENCY.name, epochs=epochs, batch_size=batch))

    # The PyTorch loop is timed on the first probes of every shape group, then scaled to the group's probe count.
    per_group = s.torch_probes
    torch.set_num_threads(1)  # one probe at a time is single-stream work; 2 threads only add contention here
    t_ours = best_time(ours, repeats=s.repeats)
    t_theirs = 0.0
    for g in groups:
        timed = [g[:, i] for i in range(per_group)]
        t = best_time(lambda: _torch_probe_loop(timed, labels, epochs, batch), repeats=1, warmup=0)
        t_theirs += t / per_group * g.shape[1]
    body = f"""Saliency probes for the toy LDM's 16 attn1 layers x {steps} steps = {num_probes} probes (toy token
grids 16x16x32 .. 2x2x64, labels 64x64), {n} images, batch {batch}, {epochs} epochs, Adam 1e-3; random
activations (timing only). {machine()}; best of {s.repeats} after a warm-up.

| implementation | s for all probes | ms / probe-epoch |
| --- | ---: | ---: |
| jaxprobe: shape groups, vmapped jitted Optax step, one scan per epoch, per-token CE | {t_ours:.2f} | {1e3 * t_ours / (num_probes * epochs):.2f} |
| PyTorch {torch.__version__}, one nn.Linear at a time, upsampled CE (the paper's loop; {per_group} probes per shape group timed, scaled to {num_probes}) | {t_theirs:.2f} | {1e3 * t_theirs / (num_probes * epochs):.2f} |

Speed-up: **{t_theirs / t_ours:.1f}x** (goal >= 20x). Command: `python launch/bench.py probe`."""
    write_section(s.out, "probe", body)
    return body


def capture(s: Settings) -> str:
    """Extra cost of recording activations: the shipped toy LDM (SD v1 block layout, 16 attn1 layers)."""
    import jax
    import numpy as np

    from jaxprobe.diffusion import sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.probing import ridge
    from jaxprobe.scene import capture as scene_capture
    from jaxprobe.scene.tasks import SALIENCY
    from jaxprobe.toy.world import render

    pipe = load_pipeline(TOY_PIPELINE)
    n = s.batch * 8
    prompts = [render.sample_scene(seed).caption for seed in range(n)]
    labels = np.random.default_rng(0).random((n, 64, 64)) < 0.3  # timing only
    kw = dict(num_inference_steps=s.steps, seed=0)

    def plain():
        jax.block_until_ready(sampling.sample(pipe, prompts, **kw).latents)

    def acts():
        jax.block_until_ready(scene_capture.capture_activations(pipe, prompts, **kw)[1])

    def with_baselines():
        r = scene_capture.capture_sweep(pipe, prompts, randomized_seed=0, vae_baseline=True, **kw)
        jax.block_until_ready((r.acts, r.randomized, r.vae))

    def with_ridge():  # accumulate X^T X, X^T y for every layer x step; nothing else is kept
        layer_acts = scene_capture.capture_activations(pipe, prompts, **kw)[1]
        jax.block_until_ready(ridge.accumulate_ridge(None, layer_acts, labels, SALIENCY.name))

    rows = [("sampling only (`sampling.sample`)", plain),
            ("+ capture of 16 layers x every step (`capture_activations`)", acts),
            ("+ randomized UNet on the same inputs + VAE-decoder baseline (`capture_sweep`)", with_baselines),
            ("+ capture + streaming ridge statistics (`ridge.accumulate_ridge`)", with_ridge)]
    times = [(name, best_time(fn, repeats=s.repeats)) for name, fn in rows]
    base = times[0][1]
    table = "\n".join(f"| {name} | {t:.3f} | {t / base:.2f}x |" for name, t in times)
    body = f"""Shipped toy LDM (assets/toy_pipeline: SD v1 block layout, 16x16x4 latents, 64x64 images), batch {n},
LMS {s.steps} steps, CFG 7.5, fp32; {machine()}; best of {s.repeats} after a warm-up.

| pass | s / batch | vs sampling |
| --- | ---: | ---: |
{table}

Goal for capture: <= 1.15x. Command: `python launch/bench.py capture`."""
    write_section(s.out, "capture", body)
    return body


def time_train_step(repeats: int) -> dict:
    """Seconds per shipped-config toy LDM training step (batch split over this process's devices)."""
    import jax
    import numpy as np

    from configs.toy import ldm as toy_ldm
    from jaxprobe import train as training
    from jaxprobe.toy import recipes

    c = toy_ldm.get_config()
    *_, params, loss_fn, optimizer = recipes.ldm_setup(c, 16, 40, np.ones(c.max_length, np.int32))
    replicated, split = training.data_parallel(c.batch_size)
    state = jax.device_put(training.init_state(params, optimizer), replicated)
    rng = np.random.default_rng(0)
    batch = jax.device_put((rng.normal(size=(c.batch_size, 16, 16, 4)).astype(np.float32),
                            rng.integers(0, 40, (c.batch_size, c.max_length)).astype(np.int32)), split)
    step = training.make_step(loss_fn, optimizer, c.ema_decay, 0)

    def steps():
        nonlocal state
        for _ in range(5):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)

    return {"seconds": best_time(steps, repeats=repeats) / 5, "batch": c.batch_size,
            "devices": len(jax.local_devices()), "machine": machine()}


# The XLA device count is fixed when jax starts, so each count is timed in a fresh process.
_TRAIN_WORKER = ("import json, sys; from jaxprobe import benchmarks; "
                 "print(json.dumps(benchmarks.time_train_step(int(sys.argv[1]))))")


def train(s: Settings) -> str:
    from jaxprobe import train as training

    runs = []
    for cores in (1, os.cpu_count() or 1):
        env = {**os.environ, "XLA_FLAGS": training.host_device_flags(os.environ.get("XLA_FLAGS", ""), cores=cores)}
        out = subprocess.run([sys.executable, "-c", _TRAIN_WORKER, str(s.repeats)], env=env, check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    one, many = runs
    rows = "\n".join(f"| {r['devices']} | {r['seconds']:.3f} | {r['batch'] / r['seconds']:.1f} |" for r in runs)
    body = f"""Toy LDM training step (configs/toy/ldm.py via `recipes.ldm_setup`: UNet + text encoder, loss, optimizer, EMA), batch {one['batch']},
fp32; {one['machine']}; best of {s.repeats} x 5 steps after a warm-up. The CPU is split into XLA devices with
`train.host_device_flags` (what `recipes.train` does) and `train.fit` splits each batch over them.

| CPU devices | s / step | samples / s |
| --- | ---: | ---: |
{rows}

Speed-up from data parallel over the cores: **{one['seconds'] / many['seconds']:.2f}x**. Command:
`python launch/bench.py train`."""
    write_section(s.out, "train", body)
    return body


BENCHMARKS = {"sample": sample, "probe": probe, "capture": capture, "train": train}


def run(names, settings: Settings) -> Iterator[str]:
    """The named benchmarks (all if none), run one by one as the result is iterated; each writes its section to
    `settings.out` and yields it. An unknown name is a ValueError here, before anything runs."""
    names = list(names) or list(BENCHMARKS)
    for name in names:
        check_choice("benchmark", name, BENCHMARKS)
    return (BENCHMARKS[name](settings) for name in names)
