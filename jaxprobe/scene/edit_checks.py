"""The edit study's checks, before the workdir is claimed or anything is sampled: the config itself, the saved
probes (fitted on this pipeline, by sha256, at this size and step count; one for every edited layer and step), and
where the plain samples' labels and the targets come from. Every error names the config key and the valid values."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxprobe import hooks, jobs, mesh, validate
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.probing import report, saved
from jaxprobe.scene import baselines, intervene, labels
from jaxprobe.scene import tasks as scene_tasks
from jaxprobe.scene.captions import toy_captions
from jaxprobe.validate import check_choice

# The runs config.controls may add to the plain sample and the edit ('shuffled' edits with the sweep's
# shuffled-label probes: `baselines.SHUFFLED`).
CONTROLS = ("null", "random", "opposite", "roll", baselines.SHUFFLED)
TRANSLATIONS = ("opposite", "roll")  # the controls that need the edit's translation
BEST = "best:"  # config.layers = ('best:<k>',): the k layers whose probes are best at the edited steps
TASKS = (scene_tasks.SALIENCY.name, scene_tasks.DEPTH.name)
AT_LEAST = {"num_images": 1, "shifts_per_image": 1, "batch_size": 1, "iterations": 0, "num_inference_steps": 1,
            "seed": 0, "scene_seed_offset": 0, "min_pixels": 1, "region_radius": 0}


@dataclasses.dataclass(frozen=True)
class EditSetup:
    """What `check` resolved: how to sample, the layers and steps to edit, the probe inputs for the hook, and where
    labels and targets come from."""

    sampler: sampling.Settings  # every run of every edit samples with it
    layers: tuple[str, ...]
    steps: tuple[int, ...]
    probes: dict
    active: np.ndarray
    control_probes: dict | None  # the shuffled-label probes, stacked as `probes`, for the 'shuffled' control
    labelers: object | None  # label every sample: targets from the plain one, measures from all
    plain_labels: tuple[np.ndarray, np.ndarray] | None  # or the plain samples' (salient, depth) from config.labels_dir
    target: np.ndarray | None  # the user's target, the same for every edit


def check(c, pipe) -> EditSetup:
    """Validate config `c` against the loaded pipeline and the saved probes, before anything is claimed or
    sampled."""
    _check_config(c, pipe)
    probe_set = _checked_probes(c)
    steps = jobs.steps(c)
    with validate.config_key("layers"):
        patterns = list(c.layers)
        if len(patterns) == 1 and str(patterns[0]).startswith(BEST):
            patterns = best_layers(c, steps, patterns[0])
        layers = tuple(hooks.select_layers(pipe.unet, patterns))
    with validate.config_key("layers/steps"):
        stacked, active = intervene.edit_inputs(probe_set, layers, steps, c.num_inference_steps)
    control = None
    if baselines.SHUFFLED in c.controls:
        shuffled = c.copy_and_resolve_references()
        shuffled.probe_model = baselines.SHUFFLED
        if not saved.path_for(Path(c.probes) / "probes", baselines.SHUFFLED, scene_tasks.BY_NAME[c.task]).is_file():
            raise ValueError(f"config.controls has {baselines.SHUFFLED!r}, which edits with the sweep's "
                             f"shuffled-label probes; {c.probes} has none: run the sweep with config.models "
                             f"including {baselines.SHUFFLED!r}, or drop the control")
        control = intervene.edit_inputs(_checked_probes(shuffled), layers, steps, c.num_inference_steps)[0]
    sampler = sampling.Settings(num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                                scheduler=c.scheduler, height=c.resolution, width=c.resolution)
    return EditSetup(sampler, layers, steps, stacked, active, control, *_labels_and_target(c))


def _check_config(c, pipe) -> None:
    """The config's own values, the scheduler, guidance, shift range and prompts against the pipeline."""
    check_choice("config.task", c.task, TASKS)
    for run in c.controls:
        check_choice("config.controls", run, CONTROLS)
    validate.at_least(c, AT_LEAST)
    mesh.check_batch(c.batch_size, "config.batch_size")  # every batch, the last one too, splits over the data axis
    mesh.check_batch(c.num_images * c.shifts_per_image, "config.num_images x config.shifts_per_image")
    validate.positive_finite(c, "lr")
    validate.positive_finite(c, "margin")
    validate.positive_finite(c, "random_scale")
    check_choice("config.mode", c.mode, intervene.MODES)
    if c.mode == "min_norm" and (c.relative or c.stop_loss is not None):
        raise ValueError("config.mode='min_norm' is one closed-form step: config.relative and config.stop_loss apply "
                         "to mode 'adam'")
    if c.stop_loss is not None and not 0 <= c.stop_loss < float("inf"):
        raise ValueError(f"config.stop_loss must be a finite loss >= 0 (or None: fixed iterations), got {c.stop_loss}")
    for key in ("local", "hold_background"):
        if c[key] and not (c.labelers_dir or c.labels_dir):
            raise ValueError(f"config.{key} needs the region of the plain object and its target, and so the plain "
                             "samples' labels: set config.labelers_dir or config.labels_dir")
    lo, hi = c.depth_range
    if not lo < hi:
        raise ValueError(f"config.depth_range must be (low, high) with low < high, got {tuple(c.depth_range)}")
    with validate.config_key("scheduler"):
        schedulers.get_scheduler(c.scheduler, pipe.scheduler_config).set_timesteps(c.num_inference_steps)
    with validate.config_key("guidance_scale"):
        sampling.guidance_schedule(c.guidance_scale, c.num_inference_steps)
    with validate.config_key("shift_fraction"):
        intervene.draw_shifts(1, c.resolution, c.seed, fraction=tuple(c.shift_fraction))
    if c.prompts_file:
        jobs.prompts(c, c.num_images, toy_captions(c), tokenize=pipe.tokenize, what="config.num_images =")


def _checked_probes(c) -> saved.SavedProbes:
    """The sweep's probes, refused unless fitted on this pipeline's weights, at this size and step count, on the
    full token grid."""
    probe_set = load_probes(c)
    fingerprint = jobs.weights_fingerprint(c.pipeline_dir)
    if probe_set.meta.get("pipeline_sha256") != fingerprint:
        raise ValueError(f"config.probes: the probes in {c.probes} were fitted on another pipeline (sha256 of its "
                         f"weights {str(probe_set.meta.get('pipeline_sha256'))[:12]}…, this one "
                         f"{fingerprint[:12]}…); fit probes on "
                         f"{c.pipeline_dir} with launch/probe.py first")
    for key in ("resolution", "num_inference_steps"):
        if probe_set.meta.get(key) != c[key]:
            raise ValueError(f"config.{key}={c[key]!r}, but the probes were fitted at {key}="
                             f"{probe_set.meta.get(key)!r}: a probe reads one step's activations at one size")
    if probe_set.meta.get("store_pool", 1) != 1:
        raise ValueError(f"config.probes: the probes in {c.probes} were fitted on activations average-pooled "
                         f"{probe_set.meta['store_pool']}x{probe_set.meta['store_pool']} (store_pool), but an edit "
                         f"acts on the full token grid; fit probes with store_pool=1 to edit with them")
    return probe_set


def _labels_and_target(c) -> tuple[object | None, tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
    """(labelers, the plain samples' given labels, the user's target): at least one way to make every run's
    target."""
    labelers = given = target = None
    if c.labelers_dir:
        labels.check_labelers(c)
        from jaxprobe.toy.labelers import load_labelers
        labelers = load_labelers(validate.existing_path(c, "labelers_dir", "a labelers directory"))
    elif c.labels_dir:  # the plain samples' labels, e.g. those the sweep was given for the same prompts and seeds
        path = validate.existing_path(c, "labels_dir", f"a directory with {' and '.join(labels.PLAIN_FILES)}",
                                      labels.PLAIN_FILES)
        given = labels.from_files(path, c.num_images)
        if given[0].shape[1:] != (c.resolution, c.resolution):
            raise ValueError(f"config.labels_dir: {path} holds labels of size {given[0].shape[1:]}; the samples "
                             f"are {c.resolution}x{c.resolution}")
    if c.target_file:
        target = intervene.load_target(c.target_file, (c.resolution, c.resolution))
        for run in set(TRANSLATIONS) & set(c.controls):
            raise ValueError(f"config.controls has {run!r}, which needs a translation; a config.target_file has "
                             f"none: choose from {', '.join(r for r in CONTROLS if r not in TRANSLATIONS)}")
    if labelers is None and given is None and (not c.target_file or "null" in c.controls):
        raise ValueError("the edit's target is the plain sample's label moved (and the null edit's, its own "
                         "label): set config.labelers_dir, or config.labels_dir with the plain samples' labels, "
                         "or give a config.target_file and drop 'null' from config.controls")
    return labelers, given, target


def best_layers(c, steps, spec: str) -> list[str]:
    """'best:<k>': the k layers whose probes read config.task best at `steps` (the sweep's test split, its
    headline metric averaged over those steps)."""
    try:
        k = int(spec[len(BEST):])
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"{spec!r}: write 'best:<k>' with k >= 1 layers")
    path = Path(c.probes) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{spec!r} ranks layers by the sweep's {path}, which does not exist")
    metric = scene_tasks.BY_NAME[c.task].headline
    by_layer: dict[str, list[float]] = {}
    for r in report.read_results_csv(path):
        if (r["model"], r["task"], r["split"], r["metric"]) == (c.probe_model, c.task, "test", metric) \
                and int(r["step"]) in steps:
            by_layer.setdefault(r["layer"], []).append(float(r["value"]))
    ranked = sorted(by_layer, key=lambda l: np.mean(by_layer[l]), reverse=not report.LOWER_IS_BETTER[metric])
    return ranked[:k]


def load_probes(c) -> saved.SavedProbes:
    """The sweep's saved probes for config.probe_model and config.task, or an error naming the ones there are."""
    directory = validate.existing_path(c, "probes", "a sweep workdir (launch/probe.py --workdir) with probes/")
    path = saved.path_for(directory / "probes", c.probe_model, scene_tasks.BY_NAME[c.task])
    if not path.is_file():
        have = sorted(p.stem for p in (directory / "probes").glob("*.safetensors"))
        raise FileNotFoundError(f"config.probes: no {path.name} in {directory / 'probes'} (config.probe_model="
                                f"{c.probe_model!r}, config.task={c.task!r}); it has {have or 'no probes'}")
    return saved.load(path, scene_tasks.BY_NAME[c.task])
