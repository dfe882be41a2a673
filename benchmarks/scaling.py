"""scaling: capture and probe-fit throughput on 1 to 8 XLA host devices, each count in a fresh process (XLA fixes
it at start)."""
from __future__ import annotations

import os

from benchmarks.harness import TOY_LAYERS, Settings, best_time, machine, measured, worker
from benchmarks.pipelines import describe, prompts_for


def time_scaling(repeats: int, steps: int, pipeline: str, captions: bool) -> dict:
    """Capture and probe-fit throughput on every device of this process: capture splits a batch of 8 prompts over
    the data axis; the fit splits the probes of the 16x16x32 toy attn1 group x `steps` (75 at 15 steps, padded to
    80 on 8 devices) over the probe axis."""
    import jax
    import numpy as np

    from jaxprobe import mesh
    from jaxprobe.models import load_pipeline
    from jaxprobe.probing import fit
    from jaxprobe.scene import capture as scene_capture
    from jaxprobe.scene.tasks import SALIENCY

    n = jax.device_count()
    pipe = load_pipeline(pipeline)
    prompts = prompts_for(8, captions)
    side, channels, layers = TOY_LAYERS[0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, layers * steps, side, side, channels)).astype(np.float32)
    labels = rng.random((64, 64, 64)) < 0.3
    with jax.set_mesh(mesh.make(data=n, probe=1)):
        cap = best_time(lambda: jax.block_until_ready(scene_capture.capture_activations(
            pipe, prompts, num_inference_steps=steps)[1]), repeats=repeats)
    with jax.set_mesh(mesh.make(data=1, probe=n)):
        fits = best_time(lambda: jax.block_until_ready(fit.fit_group(x, labels, SALIENCY, epochs=2)),
                         repeats=repeats)
    return {"devices": n, "capture_s": cap, "images": len(prompts), "fit_s": fits, "probes": x.shape[1],
            "probe_epochs": 2 * x.shape[1], "machine": machine()}


def run(s: Settings) -> str:
    load = os.getloadavg()[0]
    from jaxprobe import train as training

    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    runs = [worker("scaling.time_scaling", (s.repeats, s.steps, s.pipeline, s.captions),
                   training.host_device_flags(flags, cores=devices)) for devices in s.scaling_devices]
    one = runs[0]
    two = next((r for r in runs if r["devices"] == 2), runs[-1])
    rows = "\n".join(f"| {r['devices']} | {r['images'] / r['capture_s']:.2f} | "
                     f"{one['capture_s'] / r['capture_s']:.2f}x | {r['probe_epochs'] / r['fit_s']:.0f} | "
                     f"{one['fit_s'] / r['fit_s']:.2f}x |" for r in runs)
    return f"""{measured(load)}.

Capture ({describe(s.pipeline)}, batch {one['images']} split over the data axis, LMS {s.steps} steps, every attn1 layer x
step) and probe fitting (`fit.fit_group`, {one['probes']} linear saliency probes of the 16x16x32 toy group split over
the probe axis, 64 images, 2 epochs, incl. placing the inputs) on {s.scaling_devices[0]} to {s.scaling_devices[-1]} XLA host devices, each count in a fresh
process; {one['machine']}; best of {s.repeats} after a warm-up.

| devices | capture images / s | vs 1 | probe-epochs / s | vs 1 |
| --- | ---: | ---: | ---: | ---: |
{rows}

Capture on {two['devices']} devices: **{one['capture_s'] / two['capture_s']:.2f}x** one device's throughput.

XLA host devices share this machine's cores, and one device already runs its ops on all of them: the rows past the
core count measure what splitting costs when devices time-share cores (the probe fits' per-step collectives), not
scaling. Scaling proper is for a TPU VM or a multi-GPU machine to measure (docs/scale-out.md). Command:
`python launch/bench.py scaling`."""
