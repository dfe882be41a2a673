"""Benchmarks, each side by side with its reference in one run; each writes its own section of a markdown file
(BENCHMARKS.md by default) and returns it. launch/bench.py runs them by name (`run`).

  sample     jaxprobe vs diffusers PyTorch, same tiny pipeline, CPU
  intervene  the probe-guided edit in one jit vs the paper's eager PyTorch hook loop, toy LDM, same edits
  probe      every layer x step probe, vmapped JAX vs the paper's one-at-a-time PyTorch loop
  capture    sampling vs sampling + capture (+ baselines, + streaming ridge), toy LDM
  train      toy LDM training step on 1 CPU device vs one device per core (data parallel)
  dpt        the label stage's depth model: Flax DPT-Large under jit vs transformers PyTorch, same random weights

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

from jaxprobe import io, mesh
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


@dataclasses.dataclass(frozen=True)
class _Tiny:
    """One small SD pipeline (the tiny random one, or a directory) as jaxprobe and diffusers load it, with a batch of
    prompts and initial noise."""

    pipe: object  # jaxprobe Pipeline
    torch_pipe: object  # diffusers.StableDiffusionPipeline of the same directory
    prompts: list
    noise: object  # unit noise [B, h, w, c] (jax)
    noise_t: object  # the same noise [B, c, h, w] (torch)


def _tiny(batch: int, directory=None) -> _Tiny:
    """The tiny random pipeline, or the diffusers pipeline in `directory` (e.g. the shipped toy LDM)."""
    import diffusers
    import numpy as np
    import torch

    from jaxprobe.diffusion import sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.testing import tiny_pipeline

    prompts = [f"a red sphere number {k}" for k in range(batch)]
    if directory:  # the toy LDM's tokenizer knows the toy world's words only
        from jaxprobe.toy.world import render
        prompts = [render.sample_scene(k).caption for k in range(batch)]
    with tempfile.TemporaryDirectory() as d:
        pipe = load_pipeline(directory) if directory else tiny_pipeline(d)
        torch_pipe = diffusers.StableDiffusionPipeline.from_pretrained(directory or d, safety_checker=None)
    torch_pipe.set_progress_bar_config(disable=True)
    latent = pipe.unet.config.sample_size
    noise = sampling.initial_noise(list(range(len(prompts))), (latent, latent, pipe.unet.config.in_channels))
    noise_t = torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())
    return _Tiny(pipe, torch_pipe, prompts, noise, noise_t)


def sample(s: Settings) -> str:
    import jax
    import torch

    from jaxprobe.diffusion import sampling

    tiny = _tiny(s.batch)
    pipe, torch_pipe, prompts, noise, noise_t = tiny.pipe, tiny.torch_pipe, tiny.prompts, tiny.noise, tiny.noise_t

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


# The intervene benchmark's edit set: the paper (intervention_binary_depth.py) edits up-block attn1 outputs at the
# first 5 of 15 LMS steps, 128 Adam iterations at lr 5e-3, CFG 7.5.
EDIT_LAYERS = ("up_blocks*attn1/to_out_0",)
EDIT_STEPS = 5
EDIT_LR = 5e-3
EDIT_ITERATIONS = 128
GUIDANCE = 7.5


def _edit_problem(pipe, batch: int, num_steps: int, seed: int = 0):
    """(layers, SavedProbes, target [B, H, W] bool): random linear saliency probes for every edited (layer, step)
    and a random square per image as the mask they should read."""
    import numpy as np

    from jaxprobe import hooks
    from jaxprobe.probing import saved
    from jaxprobe.scene.tasks import SALIENCY
    from jaxprobe.testing import random_linear_probes

    layers = hooks.select_layers(pipe.unet, EDIT_LAYERS)
    rng = np.random.default_rng(seed)
    probes = random_linear_probes(pipe, layers, range(min(EDIT_STEPS, num_steps)), rng, scaled=True)
    size, side = pipe.default_size, pipe.default_size // 2
    target = np.zeros((batch, size, size), bool)
    for mask, (y, x) in zip(target, rng.integers(0, size - side + 1, (batch, 2))):
        mask[y:y + side, x:x + side] = True
    return layers, saved.SavedProbes("random", SALIENCY, "linear", probes), target


def _torch_edit_hook(probe, target, b: int, latent_hw, *, lr: float, iterations: int):
    """The paper's edit (its depth_intervention_utils.py) as a forward hook: a clone of the output's conditional
    half is optimised with Adam against the frozen probe (logits on the token grid, nearest-upsampled to the
    target, cross-entropy) and swapped in. Each image's loss is its own mean, so the batch edits like the paper's
    batch of 1 (and like jaxprobe's `optimise_activation`)."""
    import math

    import torch
    import torch.nn.functional as F

    def hook(module, inputs, out):
        stride = math.isqrt(latent_hw[0] * latent_hw[1] // out.shape[1])
        h, w = latent_hw[0] // stride, latent_hw[1] // stride
        rep = out[-b:].detach().clone().float().requires_grad_(True)
        optimizer = torch.optim.Adam([rep], lr=lr)
        with torch.enable_grad():
            for _ in range(iterations):
                optimizer.zero_grad()
                logits = F.interpolate(probe(rep).view(b, h, w, -1).permute(0, 3, 1, 2), size=target.shape[-2:],
                                       mode="nearest")
                loss = F.cross_entropy(logits, target, reduction="none").mean((1, 2)).sum()
                loss.backward()
                optimizer.step()
        return torch.cat([out[:-b], rep.detach().to(out.dtype)])

    return hook


def _torch_intervene(torch_pipe, prompts, noise_t, edits, target, *, num_steps: int, lr: float, iterations: int):
    """The paper's sampling loop with edits (its generate_image_with_modified_internal_rep), batched: diffusers'
    UNet called step by step under no_grad, CFG with the unconditional half first, and at a step of `edits`
    ({step: {torch module name: probe}}) the edit hooks registered for that call only.
    Returns (final latents [B, h, w, c], uint8 images [B, H, W, 3])."""
    import diffusers
    import torch

    tokenizer, b = torch_pipe.tokenizer, len(prompts)
    target = torch.from_numpy(target.astype("int64"))
    with torch.no_grad():
        ids = [tokenizer(p, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids for p in ([""] * b, list(prompts))]
        context = torch.cat([torch_pipe.text_encoder(i)[0] for i in ids])
        scheduler = diffusers.LMSDiscreteScheduler.from_config(torch_pipe.scheduler.config)
        scheduler.set_timesteps(num_steps)
        lat = noise_t * scheduler.init_noise_sigma
        for j, t in enumerate(scheduler.timesteps):
            handles = [torch_pipe.unet.get_submodule(name).register_forward_hook(
                _torch_edit_hook(probe, target, b, lat.shape[-2:], lr=lr, iterations=iterations))
                for name, probe in edits.get(j, {}).items()]
            try:
                lat_in = scheduler.scale_model_input(torch.cat([lat, lat]), t)
                uncond, cond = torch_pipe.unet(lat_in, t, encoder_hidden_states=context).sample.chunk(2)
            finally:
                for handle in handles:
                    handle.remove()
            lat = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, lat).prev_sample
        image = torch_pipe.vae.decode(lat / torch_pipe.vae.config.scaling_factor).sample
    images = ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return lat.permute(0, 2, 3, 1).numpy(), images.permute(0, 2, 3, 1).numpy()


def _torch_probes(probe_set) -> dict:
    """{step: {torch module name: frozen nn.Linear(C, 2, bias=False)}} with the weights of jaxprobe's probes."""
    import torch

    from jaxprobe.models import convert

    out = {}
    for (layer, step), params in probe_set.probes.items():
        if set(params) != {"kernel"}:
            raise ValueError(f"expected a linear probe {{'kernel'}} without bias, got {sorted(params)}")
        kernel = torch.from_numpy(params["kernel"].T.copy())  # jax [C, out] -> torch weight [out, C]
        linear = torch.nn.Linear(kernel.shape[1], kernel.shape[0], bias=False).requires_grad_(False)
        linear.weight.copy_(kernel)
        out.setdefault(step, {})[convert.path_to_torch_key(tuple(layer.split("/")))] = linear
    return out


def intervene(s: Settings) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from jaxprobe.diffusion import sampling
    from jaxprobe.scene import intervene as scene_intervene
    from jaxprobe.scene.tasks import SALIENCY

    tiny = _tiny(s.batch, TOY_PIPELINE)
    pipe, prompts, noise, n = tiny.pipe, tiny.prompts, tiny.noise, s.batch
    layers, probe_set, target = _edit_problem(pipe, n, s.steps)
    steps = sorted({step for _, step in probe_set.probes})
    stacked, active = scene_intervene.edit_inputs(probe_set, layers, steps, s.steps)
    extra = {"probes": stacked, "active": active, "target": jnp.asarray(target)}
    hook = scene_intervene.EditHook(layers=layers, task=SALIENCY, lr=EDIT_LR, iterations=EDIT_ITERATIONS)
    torch_probes = _torch_probes(probe_set)

    def plain():
        return sampling.sample(pipe, prompts, num_inference_steps=s.steps, guidance_scale=GUIDANCE, latents=noise)

    def ours():
        return sampling.sample(pipe, prompts, num_inference_steps=s.steps, guidance_scale=GUIDANCE, latents=noise,
                               hook=hook, extra=extra)

    def theirs(edits=torch_probes):  # one image at a time, as the paper's loop
        outs = [_torch_intervene(tiny.torch_pipe, prompts[i:i + 1], tiny.noise_t[i:i + 1], edits, target[i:i + 1],
                                 num_steps=s.steps, lr=EDIT_LR, iterations=EDIT_ITERATIONS) for i in range(n)]
        return tuple(np.concatenate(parts) for parts in zip(*outs))

    t_plain = best_time(lambda: jax.block_until_ready(plain().latents), repeats=s.repeats)
    t_ours = best_time(lambda: jax.block_until_ready(ours().latents), repeats=s.repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small eager ops one after another: 1 thread is faster than 2 here (as in `probe`)
    try:
        t_torch_plain = best_time(lambda: theirs({}), repeats=s.repeats)
        t_theirs = best_time(theirs, repeats=s.repeats)
    finally:
        torch.set_num_threads(threads)

    # The two must have made the same edit: their disagreement is float error, small next to the edit's effect.
    base, edited, (lat_t, images_t) = plain(), ours(), theirs()
    lat, base_lat = np.asarray(edited.latents), np.asarray(base.latents)
    diff, effect = np.abs(lat - lat_t).max(), np.abs(lat - base_lat).max()
    image_diff = np.abs(edited.images.astype(int) - images_t).max()
    image_effect = np.abs(edited.images.astype(int) - base.images).max()
    if not diff <= 1e-2 * effect:
        raise AssertionError(f"jaxprobe's and the PyTorch edit disagree: final latents differ by up to {diff:.3g}, "
                             f"while the edit moved them by up to {effect:.3g}")
    size = pipe.default_size
    body = f"""The probe-guided edit of the paper (arXiv 2306.05720, intervention_binary_depth.py), both sides on the
shipped toy LDM (`assets/toy_pipeline`, SD v1's classes, {size}x{size} images), batch {n}, LMS {s.steps}
steps, CFG {GUIDANCE}, fp32, same noise. Edit set: the {len(layers)} up-block `attn1/to_out_0` layers at steps
{steps[0]}-{steps[-1]}, {EDIT_ITERATIONS} Adam iterations (lr {EDIT_LR}) on the conditional half's activation
against a random linear saliency probe per (layer, step) (the same weights on both sides), target a random
{size // 2}x{size // 2} square per image. jaxprobe samples and edits the batch in one program; the PyTorch loop
edits one image at a time, as the paper's code does. {machine()}, torch on 1 thread (faster than 2 for this
work); best of {s.repeats} after a warm-up (jit compile excluded).

| implementation | s / batch, no edit | s / batch, with the edit | edit / no edit |
| --- | ---: | ---: | ---: |
| jaxprobe (`sampling.sample`; `intervene.EditHook`: one jit, lax.cond on the step, Adam in a lax.scan) | {t_plain:.4f} | {t_ours:.4f} | {t_ours / t_plain:.2f}x |
| eager PyTorch {torch.__version__} (the paper's loop, image by image: diffusers UNet per step, forward hooks, Adam in a Python loop, upsampled CE) | {t_torch_plain:.4f} | {t_theirs:.4f} | {t_theirs / t_torch_plain:.2f}x |

Intervention, jaxprobe / eager PyTorch: **{t_theirs / t_ours:.2f}x** (goal >= 10x). Agreement of the two edits:
final latents differ by at most {diff:.2g} (the edit moved them by up to {effect:.2g}), uint8 images by at most
{image_diff} (the edit changed them by up to {image_effect}). Command: `python launch/bench.py intervene`."""
    write_section(s.out, "intervene", body)
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
    import jax.numpy as jnp
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
    # jaxprobe gets its activations as device arrays (as `capture` returns them), PyTorch as zero-copy tensors.
    jax_groups = [jnp.asarray(g) for g in groups]
    jax_labels = jnp.asarray(labels)

    def ours():
        for g in jax_groups:
            jax.block_until_ready(fit.fit_group(g, jax_labels, SALIENCY, epochs=epochs, batch_size=batch))

    def theirs():  # every probe of every group, one at a time
        for g in groups:
            _torch_probe_loop([g[:, i] for i in range(g.shape[1])], labels, epochs, batch)

    load = os.getloadavg()[0]  # other processes on these cores slow both sides, PyTorch's longer run the more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one probe at a time is single-stream work; 2 threads only add contention here
    try:
        t_ours = best_time(ours, repeats=s.repeats)
        _torch_probe_loop([groups[0][:, 0]], labels, 1, batch)  # warm-up: one probe, one epoch
        t_theirs = best_time(theirs, repeats=s.repeats, warmup=0)
    finally:
        torch.set_num_threads(threads)
    body = f"""Saliency probes for the toy LDM's 16 attn1 layers x {steps} steps = {num_probes} probes (toy token
grids 16x16x32 .. 2x2x64, labels 64x64), {n} images, batch {batch}, {epochs} epochs, Adam 1e-3; random
activations (timing only). Both sides train all {num_probes} probes (no scaling). {machine()}
(1-min load average {load:.1f} at the start), torch on 1 thread; each side best of {s.repeats} after a warm-up (jit
compile excluded).

| implementation | s for all probes | ms / probe-epoch |
| --- | ---: | ---: |
| jaxprobe `fit.fit_group` per shape group: vmapped jitted Optax step, one scan per epoch, per-token CE | {t_ours:.3f} | {1e3 * t_ours / (num_probes * epochs):.3f} |
| PyTorch {torch.__version__}, one nn.Linear at a time, upsampled CE (the paper's loop) | {t_theirs:.2f} | {1e3 * t_theirs / (num_probes * epochs):.2f} |

Speed-up: **{t_theirs / t_ours:.1f}x** (goal >= 20x). Command: `python launch/bench.py probe` (`--probe_images`,
`--probe_epochs`)."""
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
        jax.block_until_ready(ridge.accumulate_ridge(None, layer_acts, labels, SALIENCY))

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

Capture / sampling: **{times[1][1] / base:.2f}x** (goal <= 1.15x). Command: `python launch/bench.py capture`."""
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
    jax.set_mesh(mesh.make())  # every device along the data axis, as `train.fit`
    state = mesh.replicate(training.init_state(params, optimizer))
    rng = np.random.default_rng(0)
    batch = mesh.shard((rng.normal(size=(c.batch_size, 16, 16, 4)).astype(np.float32),
                        rng.integers(0, 40, (c.batch_size, c.max_length)).astype(np.int32)))
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


def time_scaling(repeats: int, steps: int) -> dict:
    """Capture and probe-fit throughput on every device of this process (`scaling` runs one process per count):
    capture splits a batch of 8 toy-LDM prompts over the data axis; the fit splits the 80 probes (the 16x16x32
    toy attn1 group x 15 steps, padded from 75) over the probe axis."""
    import jax
    import numpy as np

    from jaxprobe import mesh
    from jaxprobe.models import load_pipeline
    from jaxprobe.probing import fit
    from jaxprobe.scene import capture as scene_capture
    from jaxprobe.scene.tasks import SALIENCY
    from jaxprobe.toy.world import render

    n = jax.device_count()
    pipe = load_pipeline(TOY_PIPELINE)
    prompts = [render.sample_scene(seed).caption for seed in range(8)]
    side, channels, layers = TOY_LAYERS[0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, layers * 15, side, side, channels)).astype(np.float32)
    labels = rng.random((64, 64, 64)) < 0.3
    with jax.set_mesh(mesh.make(data=n, probe=1)):
        cap = best_time(lambda: jax.block_until_ready(scene_capture.capture_activations(
            pipe, prompts, num_inference_steps=steps)[1]), repeats=repeats)
    with jax.set_mesh(mesh.make(data=1, probe=n)):
        fits = best_time(lambda: jax.block_until_ready(fit.fit_group(x, labels, SALIENCY, epochs=2)),
                         repeats=repeats)
    return {"devices": n, "capture_s": cap, "images": len(prompts), "fit_s": fits, "probes": x.shape[1],
            "probe_epochs": 2 * x.shape[1], "machine": machine()}


_SCALING_WORKER = ("import json, sys; from jaxprobe import benchmarks; "
                   "print(json.dumps(benchmarks.time_scaling(int(sys.argv[1]), int(sys.argv[2]))))")
SCALING_DEVICES = (1, 2, 4, 8)


def scaling(s: Settings) -> str:
    """Throughput from 1 to 8 host devices (a fresh process per count: XLA fixes it at start)."""
    from jaxprobe import train as training

    runs = []
    for devices in SCALING_DEVICES:
        env = {**os.environ, "XLA_FLAGS": training.host_device_flags(
            " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f), cores=devices)}
        out = subprocess.run([sys.executable, "-c", _SCALING_WORKER, str(s.repeats), str(s.steps)], env=env,
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    one = runs[0]
    two = next((r for r in runs if r["devices"] == 2), runs[-1])
    rows = "\n".join(f"| {r['devices']} | {r['images'] / r['capture_s']:.2f} | "
                     f"{one['capture_s'] / r['capture_s']:.2f}x | {r['probe_epochs'] / r['fit_s']:.0f} | "
                     f"{one['fit_s'] / r['fit_s']:.2f}x |" for r in runs)
    body = f"""Capture (shipped toy LDM, batch {one['images']} split over the data axis, LMS {s.steps} steps, every attn1 layer x
step) and probe fitting (`fit.fit_group`, {one['probes']} linear saliency probes of the 16x16x32 toy group split over
the probe axis, 64 images, 2 epochs, incl. placing the inputs) on 1 to 8 XLA host devices, each count in a fresh
process; {one['machine']}; best of {s.repeats} after a warm-up.

| devices | capture images / s | vs 1 | probe-epochs / s | vs 1 |
| --- | ---: | ---: | ---: | ---: |
{rows}

Capture on {two['devices']} devices: **{one['capture_s'] / two['capture_s']:.2f}x** one device's throughput.

XLA host devices share this machine's cores, and one device already runs its ops on all of them: the rows past the
core count measure what splitting costs when devices time-share cores (the probe fits' per-step collectives), not
scaling. Scaling proper is for a TPU VM or a multi-GPU machine to measure (docs/scale-out.md). Command:
`python launch/bench.py scaling`."""
    write_section(s.out, "scaling", body)
    return body


def _torch_concept_probes(inputs, kind: str, *, hidden: int, epochs: int, batch_size: int, lr: float) -> None:
    """One PyTorch probe at a time, as a hook-script sweep would: Linear(D, 2) or Linear(D, hidden)-ReLU-Linear, CE,
    Adam. `inputs`: [(x_train [n, D] float32, y_train [n] bool)] per probe."""
    import torch
    import torch.nn.functional as F

    for x, y in inputs:
        x, y = torch.from_numpy(x), torch.from_numpy(y.astype("int64"))
        if kind == "affine":
            net = torch.nn.Linear(x.shape[1], 2)
        else:
            net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
        opt = torch.optim.Adam(net.parameters(), lr)
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                b = perm[i:i + batch_size]
                loss = F.cross_entropy(net(x[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()


def concepts(s: Settings) -> str:
    """One checkpoint of the toy concept sweep (the shipped last MobileNetV2 checkpoint, exact-label sets): every
    family x module x concept probe, jaxprobe's grouped vmapped fit vs a PyTorch one-probe-at-a-time loop, both
    timed on every probe."""
    import numpy as np
    import torch

    from configs.concepts import toy
    from jaxprobe import hooks
    from jaxprobe.concepts import pool, scores, sets, sweep

    c = toy.get_config()
    c.labels, c.models = "truth", ("trained",)
    data = pool.load_pool(c)
    groups = {g: tuple(w) for g, w in c.groups.items()}
    concept_sets = sets.make_sets(scores.truth_scores(data.truth, groups), groups, seed=c.seed)
    module, ckpts = sweep.load_checkpoints(c)
    step, variables = ckpts[-1]
    layers = hooks.select_layers(module, list(c.layers))
    acts = sweep.capture(module, variables, data.images, layers, c.capture_batch_size)
    torch.set_num_threads(1)  # one small probe at a time is single-stream work
    lines, totals = [], {"ours": 0.0, "torch": 0.0}
    for family in c.families:
        kind, how = sweep.FAMILIES[family]
        c.families = (family,)
        t_ours = best_time(lambda: sweep.probe_checkpoint(acts, concept_sets, c, step=step), repeats=1)
        feats = {l: sweep.features(acts[l], how) for l in layers}
        inputs = [(sweep.standardise(feats[l][cs.train], feats[l][cs.test])[0], cs.train_y)
                  for l in layers for cs in concept_sets]
        t_torch = best_time(lambda: _torch_concept_probes(inputs, kind, hidden=c.probe.hidden,
                                                          epochs=sweep.epochs_of(c, family),
                                                          batch_size=c.probe.batch_size, lr=c.probe.lr),
                            repeats=1, warmup=0)
        totals["ours"] += t_ours
        totals["torch"] += t_torch
        lines.append((family, len(inputs), t_ours, t_torch))
    rows = "\n".join(f"| {f} | {n} | {o:.1f} | {t:.1f} | {t / o:.1f}x |" for f, n, o, t in lines)
    share = {f: o / totals["ours"] for f, _, o, _ in lines}
    body = f"""One checkpoint (step {step}) of the toy concept sweep: {len(concept_sets)} concepts x {len(layers)} modules
per family, {len(concept_sets[0].train)} train images per probe, batch {c.probe.batch_size}, {c.probe.epochs} epochs
({c.probe.non_gap_epochs} for non_linear_non_gap), Adam {c.probe.lr}, MLP hidden {c.probe.hidden}; the activations of the shipped last MobileNetV2 checkpoint on
exact-label sets. Every probe is timed on both sides (no scaling). jaxprobe: the sweep's own `probe_checkpoint`
(concepts x equal-width modules stacked, vmapped, one scan per epoch; fitting and scoring, timed after one
warm-up run that compiles);
PyTorch {torch.__version__}, 1 thread, one probe at a time. {machine()}.

| family | probes | jaxprobe s | PyTorch s | speed-up |
| --- | ---: | ---: | ---: | ---: |
{rows}
| all | {sum(n for _, n, _, _ in lines)} | {totals['ours']:.1f} | {totals['torch']:.1f} | **{totals['torch'] / totals['ours']:.1f}x** |

Share of jaxprobe's time: {', '.join(f'{f} {100 * v:.0f} %' for f, v in share.items())}.
Goal >= 20x. Command: `python launch/bench.py concepts`."""
    write_section(s.out, "concepts", body)
    return body

# DPT-Large (Intel/dpt-large, MiDaS v3): the depth model the paper labels with.
DPT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 image_size=384, patch_size=16, backbone_out_indices=[5, 11, 17, 23],
                 neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, readout_type="project")


def dpt(s: Settings) -> str:
    """Depth labelling cost: a random DPT-Large saved by transformers, run by jaxprobe's Flax DPT (one jit) and by
    transformers' PyTorch model on the same 384x384 batch."""
    import jax
    import numpy as np
    import torch
    import transformers

    from jaxprobe.models import load_dpt

    torch.manual_seed(0)
    ref = transformers.DPTForDepthEstimation(transformers.DPTConfig(**DPT_LARGE)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        module, params = load_dpt(tmp)
    size = DPT_LARGE["image_size"]
    pixels = np.random.default_rng(0).normal(size=(s.batch, size, size, 3)).astype(np.float32)
    apply = jax.jit(module.apply)
    ours = lambda: jax.block_until_ready(apply({"params": params}, pixels))
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())

    def theirs():
        with torch.no_grad():
            return ref(pixel_values=x).predicted_depth

    depth = theirs().numpy()
    err, scale = float(np.abs(np.asarray(ours()) - depth).max()), float(np.abs(depth).max())
    t_ours, t_torch = best_time(ours, repeats=s.repeats), best_time(theirs, repeats=s.repeats)
    minutes = 617 * t_ours / s.batch / 60  # the paper's image count
    body = f"""Random DPT-Large (24 x 1024 ViT, 'project' readout, {sum(p.numel() for p in ref.parameters()) / 1e6:.0f}M
parameters) saved by transformers and loaded by `jaxprobe.models.load_dpt`; batch {s.batch} at {size}x{size}, fp32,
both on {machine()}, PyTorch on {torch.get_num_threads()} threads; best of {s.repeats} after a warm-up (jit compile
excluded). Max abs depth difference between the two: {err:.1e} (max |depth| {scale:.2f}).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
| jaxprobe Flax DPT (one jit) | {t_ours:.2f} | {s.batch / t_ours:.2f} |
| transformers PyTorch {torch.__version__} | {t_torch:.2f} | {s.batch / t_torch:.2f} |

Speed-up jaxprobe / PyTorch: **{t_torch / t_ours:.2f}x**; the paper's 617 images take {minutes:.0f} min
on this machine. Command: `python launch/bench.py dpt`."""
    write_section(s.out, "dpt", body)
    return body


BENCHMARKS = {"sample": sample, "intervene": intervene, "probe": probe, "capture": capture, "train": train,
              "concepts": concepts, "scaling": scaling, "dpt": dpt}


# Each benchmark's goal (issues 5-21), shown beside its headline figure in the summary.
GOALS = {"sample": "faster than diffusers PyTorch (> 1x)", "intervene": ">= 10x", "probe": ">= 20x",
         "capture": "<= 1.15x", "train": "> 1x (toy recipe: <= 40 min, docs/toy_models.md)", "concepts": ">= 20x",
         "scaling": "measured (no goal on a 2-core CPU)",
         "dpt": "measured (label stage cost)"}
VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "diffusers", "transformers")


def run(names, settings: Settings) -> Iterator[str]:
    """The named benchmarks (all if none, or 'all'), run one by one as the result is iterated; each writes its
    section to `settings.out`, refreshes the summary at the top, and yields the section. An unknown name is a
    ValueError here, before anything runs."""
    names = [n for n in names if n != "all"] or list(BENCHMARKS)
    for name in names:
        check_choice("benchmark", name, BENCHMARKS)

    def one(name):
        body = BENCHMARKS[name](settings)
        write_summary(settings.out)
        return body

    return (one(name) for name in names)


def write_summary(path) -> None:
    """The file's header: machine, versions, and one row per section present: its headline figure (the first bold
    one), its goal and its command."""
    from importlib import metadata
    path = Path(path)
    text = path.read_text()
    first = text.find("\n## ")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, re.S | re.M))
    rows = []
    for name in BENCHMARKS:
        if name in sections:
            figure = re.search(r"\*\*([^*]+)\*\*", sections[name])
            rows.append(f"| [{name}](#{name}) | {figure[1] if figure else '-'} | {GOALS[name]} | "
                        f"`python launch/bench.py {name}` |")
    versions = ", ".join(f"{p} {_version(metadata, p)}" for p in VERSIONED)
    header = f"""# jaxprobe benchmarks

Written by `python launch/bench.py all` (or one name); each section states its setting and was measured in one run,
both sides together. Machine: {machine()}. Versions: {versions}.

| benchmark | headline | goal | command |
| --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    with io.atomic_path(path) as tmp:
        tmp.write_text(header + (text[first:] if first >= 0 else ""))


def _version(metadata, package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
