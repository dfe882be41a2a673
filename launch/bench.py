r"""Benchmarks, each side by side with its reference in one run; results go to BENCHMARKS.md.

  python launch/bench.py sample      # jaxprobe vs diffusers PyTorch, same tiny pipeline, CPU
  python launch/bench.py probe       # every layer x step probe, vmapped JAX vs the paper's one-at-a-time PyTorch loop
  python launch/bench.py capture     # sampling vs sampling + capture (+ baselines, + streaming ridge), toy LDM
  python launch/bench.py train       # toy LDM training step on 1 CPU device vs one device per core (data parallel)
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/tiny_sd.py builds the shared PyTorch reference pipeline

from absl import app, flags  # noqa: E402

_OUT = flags.DEFINE_string("out", str(ROOT / "BENCHMARKS.md"), "markdown file to update")
_BATCH = flags.DEFINE_integer("batch", 4, "prompts per batch")
_STEPS = flags.DEFINE_integer("steps", 15, "denoising steps")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repeats (best is kept)")
_PROBE_IMAGES = flags.DEFINE_integer("probe_images", 64, "training images for the probe benchmark")
_PROBE_EPOCHS = flags.DEFINE_integer("probe_epochs", 3, "epochs for the probe benchmark (both sides)")
_TORCH_PROBES = flags.DEFINE_integer("torch_probes", 4, "PyTorch probes timed per shape group (then scaled)")
_TRAIN_WORKER = flags.DEFINE_boolean("train_worker", False, "internal: time one training step on this process's "
                                     "devices and print JSON (the `train` benchmark runs one per device count)")


def bench_sample():
    import jax
    import numpy as np
    import torch

    from jaxprobe import benchmarks, sampling
    from jaxprobe.models import load_pipeline
    from tiny_sd import build_torch_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompts = [f"a red sphere number {k}" for k in range(_BATCH.value)]
    with tempfile.TemporaryDirectory() as d:
        torch_pipe = build_torch_pipeline(d)
        torch_pipe.set_progress_bar_config(disable=True)
        pipe = load_pipeline(d)
    noise = sampling.initial_noise(list(range(len(prompts))), (8, 8, 4))
    noise_t = torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())

    def ours():
        jax.block_until_ready(sampling.sample(pipe, prompts, num_inference_steps=_STEPS.value, latents=noise).images)

    def theirs():
        with torch.inference_mode():
            torch_pipe(prompts, num_inference_steps=_STEPS.value, latents=noise_t, output_type="np")

    t_ours = benchmarks.best_time(ours, repeats=_REPEATS.value)
    t_theirs = benchmarks.best_time(theirs, repeats=_REPEATS.value)
    n = len(prompts)
    body = f"""Tiny random SD pipeline (tests/tiny_sd.py: UNet (32, 64), 16x16 images), batch {n}, LMS {_STEPS.value} steps,
CFG 7.5, fp32, both on {benchmarks.machine()}; best of {_REPEATS.value} after a warm-up (jit compile excluded).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
| jaxprobe (one jit, lax.scan) | {t_ours:.4f} | {n / t_ours:.1f} |
| diffusers PyTorch {torch.__version__} | {t_theirs:.4f} | {n / t_theirs:.1f} |

Speed-up jaxprobe / diffusers: **{t_theirs / t_ours:.2f}x**. Command: `python launch/bench.py sample`."""
    benchmarks.write_section(_OUT.value, "sample", body)
    print(body)


# The toy LDM's 16 attn1 layers at 16x16 latents: (tokens side, channels, layer count); 64x64 labels.
TOY_LAYERS = ((16, 32, 5), (8, 64, 5), (4, 64, 4), (2, 64, 2))


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


def bench_probe():
    import jax
    import numpy as np
    import torch

    from jaxprobe import benchmarks, probes

    n, steps, epochs, batch = _PROBE_IMAGES.value, _STEPS.value, _PROBE_EPOCHS.value, 4
    rng = np.random.default_rng(0)
    labels = rng.random((n, 64, 64)) < 0.3
    groups = [rng.normal(size=(n, count * steps, side, side, ch)).astype(np.float32)
              for side, ch, count in TOY_LAYERS]
    num_probes = sum(g.shape[1] for g in groups)

    def ours():
        for g in groups:
            jax.block_until_ready(probes.fit_group(g, labels, "saliency", epochs=epochs, batch_size=batch))

    # The PyTorch loop is timed on the first probes of every shape group, then scaled to the group's probe count.
    per_group = _TORCH_PROBES.value
    torch.set_num_threads(1)  # one probe at a time is single-stream work; 2 threads only add contention here
    t_ours = benchmarks.best_time(ours, repeats=_REPEATS.value)
    t_theirs = 0.0
    for g in groups:
        sample = [g[:, i] for i in range(per_group)]
        t = benchmarks.best_time(lambda: _torch_probe_loop(sample, labels, epochs, batch), repeats=1, warmup=0)
        t_theirs += t / per_group * g.shape[1]
    body = f"""Saliency probes for the toy LDM's 16 attn1 layers x {steps} steps = {num_probes} probes (toy token
grids 16x16x32 .. 2x2x64, labels 64x64), {n} images, batch {batch}, {epochs} epochs, Adam 1e-3; random
activations (timing only). {benchmarks.machine()}; best of {_REPEATS.value} after a warm-up.

| implementation | s for all probes | ms / probe-epoch |
| --- | ---: | ---: |
| jaxprobe: shape groups, vmapped jitted Optax step, one scan per epoch, per-token CE | {t_ours:.2f} | {1e3 * t_ours / (num_probes * epochs):.2f} |
| PyTorch {torch.__version__}, one nn.Linear at a time, upsampled CE (the paper's loop; {per_group} probes per shape group timed, scaled to {num_probes}) | {t_theirs:.2f} | {1e3 * t_theirs / (num_probes * epochs):.2f} |

Speed-up: **{t_theirs / t_ours:.1f}x** (goal >= 20x). Command: `python launch/bench.py probe`."""
    benchmarks.write_section(_OUT.value, "probe", body)
    print(body)


def bench_capture():
    """Extra cost of recording activations: the shipped toy LDM (SD v1 block layout, 16 attn1 layers)."""
    import jax
    import numpy as np

    from jaxprobe import benchmarks, capture, probes, sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.toyworld import render

    pipe = load_pipeline(ROOT / "assets" / "toy_pipeline")
    n = _BATCH.value * 8
    prompts = [render.sample_scene(s).caption for s in range(n)]
    labels = np.random.default_rng(0).random((n, 64, 64)) < 0.3  # timing only
    kw = dict(num_inference_steps=_STEPS.value, seed=0)

    def plain():
        jax.block_until_ready(sampling.sample(pipe, prompts, **kw).latents)

    def acts():
        jax.block_until_ready(capture.capture_activations(pipe, prompts, **kw)[1])

    def with_baselines():
        r = capture.capture_sweep(pipe, prompts, randomized_seed=0, vae_baseline=True, **kw)
        jax.block_until_ready((r.acts, r.randomized, r.vae))

    def ridge():  # accumulate X^T X, X^T y for every layer x step; nothing else is kept
        accs = probes.accumulate_ridge(None, capture.capture_activations(pipe, prompts, **kw)[1], labels, "saliency")
        jax.block_until_ready(accs)

    rows = [("sampling only (`sampling.sample`)", plain),
            ("+ capture of 16 layers x every step (`capture_activations`)", acts),
            ("+ randomized UNet on the same inputs + VAE-decoder baseline (`capture_sweep`)", with_baselines),
            ("+ capture + streaming ridge statistics (`probes.accumulate_ridge`)", ridge)]
    times = [(name, benchmarks.best_time(fn, repeats=_REPEATS.value)) for name, fn in rows]
    base = times[0][1]
    table = "\n".join(f"| {name} | {t:.3f} | {t / base:.2f}x |" for name, t in times)
    body = f"""Shipped toy LDM (assets/toy_pipeline: SD v1 block layout, 16x16x4 latents, 64x64 images), batch {n},
LMS {_STEPS.value} steps, CFG 7.5, fp32; {benchmarks.machine()}; best of {_REPEATS.value} after a warm-up.

| pass | s / batch | vs sampling |
| --- | ---: | ---: |
{table}

Goal for capture: <= 1.15x. Command: `python launch/bench.py capture`."""
    benchmarks.write_section(_OUT.value, "capture", body)
    print(body)


def _time_train_step() -> dict:
    """Seconds per shipped-config toy LDM training step (batch split over this process's devices)."""
    import jax
    import numpy as np

    from configs import toy_ldm
    from jaxprobe import benchmarks, toymodels, train

    c = toy_ldm.get_config()
    *_, params, loss_fn, optimizer = toymodels.ldm_setup(c, 16, 40, np.ones(c.max_length, np.int32))
    replicated, split = train.data_parallel(c.batch_size)
    state = jax.device_put(train.init_state(params, optimizer), replicated)
    rng = np.random.default_rng(0)
    batch = jax.device_put((rng.normal(size=(c.batch_size, 16, 16, 4)).astype(np.float32),
                            rng.integers(0, 40, (c.batch_size, c.max_length)).astype(np.int32)), split)
    step = train.make_step(loss_fn, optimizer, c.ema_decay, 0)

    def run():
        nonlocal state
        for _ in range(5):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)

    return {"seconds": benchmarks.best_time(run, repeats=_REPEATS.value) / 5, "batch": c.batch_size,
            "devices": len(jax.local_devices()), "machine": benchmarks.machine()}


def bench_train():
    if _TRAIN_WORKER.value:
        print(json.dumps(_time_train_step()))
        return
    from jaxprobe import benchmarks, train

    runs = []
    for cores in (1, os.cpu_count() or 1):
        env = {**os.environ, "XLA_FLAGS": train.host_device_flags(os.environ.get("XLA_FLAGS", ""), cores=cores)}
        out = subprocess.run([sys.executable, __file__, "train", "--train_worker", f"--repeats={_REPEATS.value}"],
                             env=env, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    one, many = runs
    rows = "\n".join(f"| {r['devices']} | {r['seconds']:.3f} | {r['batch'] / r['seconds']:.1f} |" for r in runs)
    body = f"""Toy LDM training step (configs/toy_ldm.py via `toymodels.ldm_setup`: UNet + text encoder, loss, optimizer, EMA), batch {one['batch']},
fp32; {one['machine']}; best of {_REPEATS.value} x 5 steps after a warm-up. The CPU is split into XLA devices with
`train.host_device_flags` (what launch/train.py does) and `train.fit` splits each batch over them.

| CPU devices | s / step | samples / s |
| --- | ---: | ---: |
{rows}

Speed-up from data parallel over the cores: **{one['seconds'] / many['seconds']:.2f}x**. Command:
`python launch/bench.py train`."""
    benchmarks.write_section(_OUT.value, "train", body)
    print(body)


BENCHES = {"sample": bench_sample, "probe": bench_probe, "capture": bench_capture, "train": bench_train}


def main(argv):
    names = argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise app.UsageError(f"unknown benchmark {unknown}; valid: {', '.join(BENCHES)}")
    for name in names:
        BENCHES[name]()


if __name__ == "__main__":
    app.run(main)
