"""intervene: the probe-guided edit of the paper in one jit (jaxprobe's EditHook) vs its eager PyTorch hook loop,
same pipeline, noise, probes and targets; the two edits must agree."""
from __future__ import annotations

from benchmarks import references
from benchmarks.harness import Settings, best_time, machine, measured
from benchmarks.pipelines import describe, load_pair

# The paper (intervention_binary_depth.py) edits up-block attn1 outputs at the first 5 of 15 LMS steps, 128 Adam
# iterations (Settings.edit_iterations) at lr 5e-3, CFG 7.5.
EDIT_LAYERS = ("up_blocks*attn1/to_out_0",)
EDIT_STEPS = 5
EDIT_LR = 5e-3
GUIDANCE = references.GUIDANCE


def edit_problem(pipe, batch: int, num_steps: int, seed: int = 0):
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


def run(s: Settings) -> str:
    import os

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from jaxprobe.diffusion import sampling
    from jaxprobe.scene import intervene as scene_intervene
    from jaxprobe.scene.tasks import SALIENCY

    load = os.getloadavg()[0]
    pair = load_pair(s.batch, s.pipeline, captions=s.captions)
    pipe, prompts, noise, n, iterations = pair.pipe, pair.prompts, pair.noise, s.batch, s.edit_iterations
    layers, probe_set, target = edit_problem(pipe, n, s.steps)
    steps = sorted({step for _, step in probe_set.probes})
    stacked, active = scene_intervene.edit_inputs(probe_set, layers, steps, s.steps)
    extra = {"probes": stacked, "active": active, "target": jnp.asarray(target)}
    hook = scene_intervene.EditHook(layers=layers, task=SALIENCY, lr=EDIT_LR, iterations=iterations)
    torch_probes = references.linear_probes(probe_set)

    def plain():
        return sampling.sample(pipe, prompts, num_inference_steps=s.steps, guidance_scale=GUIDANCE, latents=noise)

    def ours():
        return sampling.sample(pipe, prompts, num_inference_steps=s.steps, guidance_scale=GUIDANCE, latents=noise,
                               hook=hook, extra=extra)

    def theirs(edits=torch_probes):  # one image at a time, as the paper's loop
        outs = [references.intervene(pair.torch_pipe, prompts[i:i + 1], pair.noise_t[i:i + 1], edits,
                                     target[i:i + 1], num_steps=s.steps, lr=EDIT_LR, iterations=iterations)
                for i in range(n)]
        return tuple(np.concatenate(parts) for parts in zip(*outs))

    t_plain = best_time(lambda: jax.block_until_ready(plain().latents), repeats=s.repeats)
    t_ours = best_time(lambda: jax.block_until_ready(ours().latents), repeats=s.repeats)
    mode_rows = _mode_rows(s, pipe, prompts, noise, hook, extra, target, t_plain)
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
    return f"""The probe-guided edit of the paper (arXiv 2306.05720, intervention_binary_depth.py), both sides on
{describe(s.pipeline)} in SD v1's classes, batch {n}, LMS {s.steps} steps, CFG {GUIDANCE}, fp32, same noise. Edit set: the {len(layers)} up-block `attn1/to_out_0` layers at steps
{steps[0]}-{steps[-1]}, {iterations} Adam iterations (lr {EDIT_LR}) on the conditional half's activation
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
{image_diff} (the edit changed them by up to {image_effect}). Command: `python launch/bench.py intervene`.
{measured(load)}.

The edit's modes (`configs/scene/toy_intervene.py` options; docs/intervention.md#edit-modes), jaxprobe only, in the
same run on the same batch; the region is the target square dilated by {REGION_RADIUS} pixels:

| mode | s / batch | vs plain sampling |
| --- | ---: | ---: |
| plain sampling (no edit) | {t_plain:.4f} | 1.00x |
| the paper's: Adam on every token (above) | {t_ours:.4f} | {t_ours / t_plain:.2f}x |
{mode_rows}"""


REGION_RADIUS = 4  # label pixels, as configs/scene/toy_intervene.py
MODES = {  # name -> EditHook options over the paper's edit (timed above)
    "relative (Adam step x the activation's RMS)": {"relative": True},
    "stop_loss 0.3 (per image, masked scan)": {"stop_loss": 0.3},
    "local (the region's tokens only)": {"local": True},
    "min_norm + local (closed form, margin 1)": {"mode": "min_norm", "local": True},
    "hold_background (blended with the plain sample's latents)": {"hold_background": True},
}


def _mode_rows(s: Settings, pipe, prompts, noise, hook, extra, target, t_plain: float) -> str:
    """One markdown row per edit mode: its time per batch and its cost over plain sampling."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from jaxprobe.diffusion import sampling
    from jaxprobe.scene import edit_modes, intervene

    kept = sampling.sample(pipe, prompts, num_inference_steps=s.steps, guidance_scale=GUIDANCE, latents=noise,
                           hook=intervene.KEEP_LATENTS, keep_steps=None)
    extra = {**extra, "region": jnp.asarray(edit_modes.edit_region(target, target, REGION_RADIUS)),
             "reference": intervene.held_reference(kept)}
    rows = []
    for name, options in MODES.items():
        mode_hook = dataclasses.replace(hook, **options)

        def edit():
            return sampling.sample(pipe, prompts, num_inference_steps=s.steps, guidance_scale=GUIDANCE,
                                   latents=noise, hook=mode_hook, extra=extra)
        t = best_time(lambda: jax.block_until_ready(edit().latents), repeats=s.repeats)
        rows.append(f"| {name} | {t:.4f} | {t / t_plain:.2f}x |")
    return "\n".join(rows)
