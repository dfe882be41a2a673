"""probe: every layer x step saliency probe of the toy LDM's shapes, jaxprobe's vmapped fit per shape group vs the
paper's one-at-a-time PyTorch loop (`references.probe_loop`), on the same random activations."""
from __future__ import annotations

import os

from benchmarks import references
from benchmarks.harness import TOY_LAYERS, Settings, best_time, machine, measured


def run(s: Settings) -> str:
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
            references.probe_loop([g[:, i] for i in range(g.shape[1])], labels, epochs, batch)

    load = os.getloadavg()[0]  # other processes on these cores slow both sides, PyTorch's longer run the more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one probe at a time is single-stream work; 2 threads only add contention here
    try:
        t_ours = best_time(ours, repeats=s.repeats)
        references.probe_loop([groups[0][:, 0]], labels, 1, batch)  # warm-up: one probe, one epoch
        t_theirs = best_time(theirs, repeats=s.repeats, warmup=0)
    finally:
        torch.set_num_threads(threads)
    return f"""{measured(load)}.

Saliency probes for the toy LDM's 16 attn1 layers x {steps} steps = {num_probes} probes (toy token
grids 16x16x32 .. 2x2x64, labels 64x64), {n} images, batch {batch}, {epochs} epochs, Adam 1e-3; random
activations (timing only). Both sides train all {num_probes} probes (no scaling). {machine()},
torch on 1 thread; each side best of {s.repeats} after a warm-up (jit
compile excluded).

| implementation | s for all probes | ms / probe-epoch |
| --- | ---: | ---: |
| jaxprobe `fit.fit_group` per shape group: vmapped jitted Optax step, one scan per epoch, per-token CE | {t_ours:.3f} | {1e3 * t_ours / (num_probes * epochs):.3f} |
| PyTorch {torch.__version__}, one nn.Linear at a time, upsampled CE (the paper's loop) | {t_theirs:.2f} | {1e3 * t_theirs / (num_probes * epochs):.2f} |

Speed-up: **{t_theirs / t_ours:.1f}x** (goal >= 20x). Command: `python launch/bench.py probe` (`--probe_images`,
`--probe_epochs`)."""
