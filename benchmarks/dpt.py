"""dpt: the label stage's depth model, a random DPT (DPT-Large by default) saved by transformers, run by jaxprobe's
Flax DPT under one jit and by transformers' PyTorch model on the same batch."""
from __future__ import annotations

import os
import tempfile

from benchmarks.harness import Settings, best_time, machine, measured


def run(s: Settings) -> str:
    load = os.getloadavg()[0]
    import jax
    import numpy as np
    import torch
    import transformers

    from jaxprobe.models import load_dpt

    cfg = s.dpt_config
    torch.manual_seed(0)
    ref = transformers.DPTForDepthEstimation(transformers.DPTConfig(**cfg)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        module, params = load_dpt(tmp)
    size = cfg["image_size"]
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
    return f"""{measured(load)}.

Random DPT ({cfg['num_hidden_layers']} x {cfg['hidden_size']} ViT, '{cfg['readout_type']}' readout, {sum(p.numel() for p in ref.parameters()) / 1e6:.0f}M
parameters; DPT-Large's is 24 x 1024) saved by transformers and loaded by `jaxprobe.models.load_dpt`; batch {s.batch} at {size}x{size}, fp32,
both on {machine()}, PyTorch on {torch.get_num_threads()} threads; best of {s.repeats} after a warm-up (jit compile
excluded). Max abs depth difference between the two: {err:.1e} (max |depth| {scale:.2f}).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
| jaxprobe Flax DPT (one jit) | {t_ours:.2f} | {s.batch / t_ours:.2f} |
| transformers PyTorch {torch.__version__} | {t_torch:.2f} | {s.batch / t_torch:.2f} |

Speed-up jaxprobe / PyTorch: **{t_torch / t_ours:.2f}x**; the paper's 617 images take {minutes:.0f} min
on this machine. Command: `python launch/bench.py dpt`."""
