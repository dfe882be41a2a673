"""The sweep's config checks: the whole config against the loaded pipeline, before the workdir is claimed or
anything is captured, so that a typo costs seconds and leaves no workdir that refuses the corrected rerun."""
from __future__ import annotations

from typing import Sequence

from jaxprobe import hooks, jobs, mesh, validate
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.probing import probes
from jaxprobe.scene import baselines, capture
from jaxprobe.scene import tasks as scene_tasks
from jaxprobe.scene.fit_stage import RIDGE_VAL_FRACTION
from jaxprobe.scene.label_stage import check_label_sources
from jaxprobe.scene.sweep_data import sweep_prompts
from jaxprobe.validate import check_choice

STAGES = ("all", "capture", "label", "fit", "report")
MODELS = ("trained", "randomized") + baselines.VAE_MODELS + (baselines.SHUFFLED,)
DATA_MODES = ("generated", "encoded")
TASKS = (scene_tasks.SALIENCY.name, scene_tasks.DEPTH.name, scene_tasks.INVERSE_DEPTH.name)
PROBE_KINDS = probes.KINDS + ("ridge",)  # ridge: closed form (`ridge.fit_ridge_sweep`), no epochs
STORE_DTYPES = ("float32", "bfloat16", "float16")
# Keys a later run may set or change: the label sources are often known only once the images exist, and the fit's
# memory budget only once it runs out (no probe depends on it).
STAGE_KEYS = ("stage", "labels_dir", "labelers_dir", "depth_model_dir", "fit_memory_gb")
# The least valid value of each numeric config key (probe.lr, a float, is checked on its own: > 0 and finite).
AT_LEAST = {"num_train": 1, "num_test": 1, "batch_size": 1, "num_inference_steps": 1, "probe.epochs": 0,
            "probe.batch_size": 1, "probe.hidden": 1, "seed": 0, "randomized_seed": 0, "scene_seed_offset": 0,
            "fit_memory_gb": 0, "num_val": 0, "probe.headline_seeds": 1}


def check_config(c, pipe) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validate the whole sweep config against the loaded pipeline. Returns the selected layers and denoising
    steps (negative steps resolved)."""
    check_choice("config.stage", c.stage, STAGES)
    check_choice("config.data", c.data, DATA_MODES)
    validate.check_choices(c, "models", MODELS)
    if baselines.SHUFFLED in c.models and "trained" not in c.models:
        raise ValueError(f"config.models: {baselines.SHUFFLED!r} fits probes on the trained UNet's activations; "
                         "add 'trained'")
    validate.check_choices(c, "tasks", TASKS)
    check_choice("config.probe.kind", c.probe.kind, PROBE_KINDS)
    check_choice("config.probe.label_mode", c.probe.label_mode, probes.LABEL_MODES)
    check_choice("config.store_dtype", c.store_dtype, STORE_DTYPES)
    validate.at_least(c, AT_LEAST)
    validate.at_most(c, {"num_val": c.num_train - 1})  # at least one train image left to fit the probes on
    mesh.check_batch(c.batch_size, "config.batch_size")
    validate.positive_finite(c, "probe.lr")
    fit_rows = c.num_train - c.num_val
    if c.probe.kind == "ridge" and not 0 < round(fit_rows * RIDGE_VAL_FRACTION) < fit_rows:
        raise ValueError(f"config.num_train={c.num_train} less config.num_val={c.num_val} leaves ridge no images to "
                         f"pick lambda on: config.probe.kind='ridge' holds out {RIDGE_VAL_FRACTION:.0%} of its fit "
                         "images")
    with validate.config_key("guidance_scale"):  # one finite weight, or one per step
        sampling.guidance_schedule(c.guidance_scale, c.num_inference_steps)
    steps = jobs.steps(c)
    with validate.config_key("scheduler"):
        schedulers.get_scheduler(c.scheduler, pipe.scheduler_config).set_timesteps(c.num_inference_steps)
    with validate.config_key("layers"):
        layers = hooks.select_layers(pipe.unet, list(c.layers))
    factor = sampling.size_multiple(pipe)
    if c.resolution < 1 or c.resolution % factor:
        raise ValueError(f"config.resolution must be a positive multiple of {factor} (the VAE's factor "
                         f"{pipe.vae_scale_factor} x 2 ** (UNet blocks - 1)), got {c.resolution}")
    if c.store_pool != 1:
        _check_store_pool(c, pipe, layers)
    if c.prompts_file:  # enough prompts, each short enough for the tokenizer (else it fails at its capture batch)
        sweep_prompts(c, tokenize=pipe.tokenize)
    if c.stage in ("all", "label"):
        check_label_sources(c, pipe, layers)
    ram = jobs.host_memory()
    if c.stage in ("all", "fit") and c.fit_memory_gb * 1e9 > ram:
        raise ValueError(f"config.fit_memory_gb={c.fit_memory_gb} is more than this host's {ram / 1e9:.1f} GB of RAM, "
                         f"which holds each part of the fit's activations as it is read: use at most {ram / 2e9:.0f} "
                         "(about half: the fit also stacks a part's arrays; docs/scale-out.md)")
    return layers, steps


def _check_store_pool(c, pipe, layers: Sequence[str]) -> None:
    """config.store_pool must be an integer >= 1 that divides every selected layer's token grid at
    config.resolution (the VAE baseline's grid is the latent grid, a multiple of each). Shapes only: one
    `jax.eval_shape` of the UNet, nothing computed."""
    grids = capture.token_grids(pipe, layers, c.resolution, c.resolution)
    flat = [k for k, g in grids.items() if g is None]
    if flat:
        raise ValueError(f"config.store_pool={c.store_pool!r} pools a token grid, but layer(s) {', '.join(flat)} "
                         "output none; use config.store_pool=1 or other config.layers")
    sides = {side for g in grids.values() for side in g}
    valid = [k for k in range(1, min(sides) + 1) if all(side % k == 0 for side in sides)]
    if not (isinstance(c.store_pool, int) and c.store_pool in valid):
        layer, (h, w) = min(grids.items(), key=lambda kv: kv[1][0] * kv[1][1])
        raise ValueError(f"config.store_pool must be an integer >= 1 that divides every selected layer's token grid "
                         f"at config.resolution={c.resolution} (the smallest: {h}x{w} at {layer}); valid values: "
                         f"{', '.join(map(str, valid))}; got {c.store_pool!r}")
