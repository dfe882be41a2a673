"""The intervention study as one resumable job: move the object by editing activations against a sweep's frozen
probes, and measure that it moved, against controls run with the same seeds and prompts.

1. Edits: edit k edits image k // shifts_per_image (a toy-world caption, seed `seed + image`) towards its own
   salient mask translated by a drawn (dx, dy) (`intervene.draw_shifts`; the paper's 5 shifts per image), or its
   depth shifted the same way, or a user's target file.
2. Per batch of edits: the plain sample (no edit); its labels (the toy labelers, as the sweep's); the targets; then
   the edit and each control, every one a sample with the same seeds and prompts:
   - 'null': the same optimisation towards the image's own label (shift 0), same lr and iterations;
   - 'random': the edit's per-image step norm at every edited layer and step, in a random direction;
   - 'opposite': the edit towards the label translated by (-dx, -dy).
   Each run is labelled and scored against the edit's shift and target (`edit_metrics`); the batch's images and
   scores are written before the next batch starts, so a rerun resumes at the first missing batch.
3. Report: edits.csv (a row per edit and run), results.csv (`report.COLUMNS`: model = the run, layer = the edited
   layers, step = the first edited step; the mean over edits), summary.json (means with 95% bootstrap intervals,
   and the issue's success checks), grid and bar figures.

`check` validates the whole config, the probes (fitted on this pipeline, by sha256; one for every edited layer and
step) and the target file before the workdir is claimed or anything is sampled.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jaxprobe import hooks, io, jobs, mesh, validate
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.probing import metrics, report, saved
from jaxprobe.scene import edit_figures, edit_metrics, intervene, labels
from jaxprobe.scene import layers as scene_layers
from jaxprobe.scene import tasks as scene_tasks
from jaxprobe.validate import check_choice

# Every sample of an edit: the plain one, the edit, and the controls (all with the edit's seed and prompt).
RUNS = ("no_edit", "edited", "null", "random", "opposite")
CONTROLS = RUNS[2:]
SIGNS = {"edited": 1, "null": 0, "random": 1, "opposite": -1}  # the target: the label moved by sign x (dx, dy)
DIRS = {"no_edit": "control"}  # image directory of a run, if not its name
BEST = "best:"  # config.layers = ('best:<k>',): the k layers whose probes are best at the edited steps
TASKS = (scene_tasks.SALIENCY.name, scene_tasks.DEPTH.name)
AT_LEAST = {"num_images": 1, "shifts_per_image": 1, "batch_size": 1, "iterations": 0, "num_inference_steps": 1,
            "seed": 0, "scene_seed_offset": 0, "min_pixels": 1}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `check` resolved: the layers and steps to edit, the probe inputs for the hook, the labelers."""

    layers: tuple[str, ...]
    steps: tuple[int, ...]
    probes: dict
    active: np.ndarray
    labelers: object | None  # label every sample: targets from the plain one, measures from all
    labels: tuple[np.ndarray, np.ndarray] | None  # or the plain samples' (salient, depth) from config.labels_dir
    target: np.ndarray | None  # the user's target, the same for every edit


def check(c, pipe) -> Plan:
    """Validate config `c` against the loaded pipeline and the saved probes, before anything is claimed or
    sampled; every error names the config key and the valid values."""
    check_choice("config.task", c.task, TASKS)
    for run in c.controls:
        check_choice("config.controls", run, CONTROLS)
    validate.at_least(c, AT_LEAST)
    mesh.check_batch(c.batch_size, "config.batch_size")  # every batch, the last one too, splits over the data axis
    mesh.check_batch(c.num_images * c.shifts_per_image, "config.num_images x config.shifts_per_image")
    validate.positive_finite(c, "lr")
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
        jobs.prompts(c, c.num_images, _captions(c), tokenize=pipe.tokenize, what="config.num_images =")
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
    steps = jobs.steps(c)
    with validate.config_key("layers"):
        patterns = list(c.layers)
        if len(patterns) == 1 and str(patterns[0]).startswith(BEST):
            patterns = best_layers(c, steps, patterns[0])
        layers = tuple(hooks.select_layers(pipe.unet, patterns))
    with validate.config_key("layers/steps"):
        stacked, active = intervene.edit_inputs(probe_set, layers, steps, c.num_inference_steps)
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
        if "opposite" in c.controls:
            raise ValueError("config.controls has 'opposite', which needs a translation; a config.target_file has "
                             f"none: choose from {', '.join(r for r in CONTROLS if r != 'opposite')}")
    if labelers is None and given is None and (not c.target_file or "null" in c.controls):
        raise ValueError("the edit's target is the plain sample's label moved (and the null edit's, its own "
                         "label): set config.labelers_dir, or config.labels_dir with the plain samples' labels, "
                         "or give a config.target_file and drop 'null' from config.controls")
    return Plan(layers, steps, stacked, active, labelers, given, target)


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


def edit_list(c) -> list[dict]:
    """Every edit: k, its image (index), that image's prompt and seed, dx, dy (0, 0 for a user's target)."""
    n = c.num_images * c.shifts_per_image
    shifts = np.zeros((n, 2), int) if c.target_file else intervene.draw_shifts(
        n, c.resolution, c.seed, fraction=tuple(c.shift_fraction))
    prompts = jobs.prompts(c, c.num_images, _captions(c))
    return [{"k": k, "image": k // c.shifts_per_image, "prompt": prompts[k // c.shifts_per_image],
             "seed": c.seed + k // c.shifts_per_image,
             "dx": int(shifts[k, 0]), "dy": int(shifts[k, 1])} for k in range(n)]


def _captions(c):
    def captions(n: int) -> list[str]:
        from jaxprobe.toy.world import render
        return [render.sample_scene(c.scene_seed_offset + i).caption for i in range(n)]
    return captions


def _label(plan: Plan, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(salient bool [N,H,W], depth z-scored with the labelers' own statistics [N,H,W])."""
    salient, depth = plan.labelers.label(images)
    cfg = plan.labelers.config
    return salient, metrics.zscore(depth, cfg.depth_mean, cfg.depth_std)


def _targets(c, plan: Plan, edits: list[dict], salient, depth, sign: int) -> np.ndarray:
    """The probe targets [B, H, W] of a run: the plain sample's label moved by sign x (dx, dy) (sign 0: the null
    edit's own label), or the user's target."""
    if plan.target is not None and sign:
        return np.stack([plan.target] * len(edits))
    if c.task == "saliency":
        return _moved(intervene.translate_mask, salient, edits, sign)
    return _moved(intervene.shift_depth, depth, edits, sign, value_range=tuple(c.depth_range))


def _moved(move, maps, edits: list[dict], sign: int, **kw) -> np.ndarray:
    """`move` (translate_mask or shift_depth) of each edit's map by sign x (dx, dy) -> [B, H, W]."""
    return np.stack([move(m, sign * e["dx"], sign * e["dy"], **kw) for m, e in zip(maps, edits)])


def run_batch(c, plan: Plan, pipe, edits: list[dict], batch: int, workdir: Path) -> dict[str, np.ndarray]:
    """Sample, write, label and score one batch of edits -> {'<run>|<metric>': [B], 'mask|<run>': [B,H,W],
    'target': [B,H,W]} (empty without labelers)."""
    prompts, seeds = [e["prompt"] for e in edits], [e["seed"] for e in edits]
    common = dict(seed=seeds, num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                  scheduler=c.scheduler, height=c.resolution, width=c.resolution)
    images = {"no_edit": sampling.sample(pipe, prompts, **common).images}
    labelled = {"no_edit": _label(plan, images["no_edit"])} if plan.labelers else {}
    salient, depth = labelled.get("no_edit", (None, None))
    if plan.labels is not None:
        salient, depth = (a[[e["image"] for e in edits]] for a in plan.labels)
    targets = {run: _targets(c, plan, edits, salient, depth, SIGNS[run]) for run in ("edited",) + tuple(c.controls)}
    for run, target in targets.items():
        hook = intervene.EditHook(plan.layers, scene_tasks.BY_NAME[c.task], lr=c.lr, iterations=c.iterations,
                                  random_direction=run == "random")
        extra = {"probes": plan.probes, "active": plan.active, "target": target,
                 "key": jax.random.fold_in(jax.random.key(c.seed), batch)}
        images[run] = sampling.sample(pipe, prompts, hook=hook, extra=extra, **common).images
    for run, ims in images.items():
        for e, im in zip(edits, ims):
            if mesh.is_main():
                io.write_png(workdir / DIRS.get(run, run) / f"{e['k']}.png", im)
    if not plan.labelers:
        return {}
    shifts = np.asarray([[e["dx"], e["dy"]] for e in edits], np.float64)
    if plan.target is None:  # the edit's target moved the plain sample's labels by (dx, dy)
        target_mask = _moved(intervene.translate_mask, salient, edits, 1)
        target_depth = _moved(intervene.shift_depth, depth, edits, 1, value_range=None)
    elif c.task == "saliency":  # a user's mask: the intended shift is its centroid's
        target_mask, target_depth = np.broadcast_to(plan.target.astype(bool), salient.shape), None
        shifts = edit_metrics.centroids(target_mask) - edit_metrics.centroids(salient)
    else:  # a user's depth map: no intended shift of the object
        target_mask, target_depth = salient, np.broadcast_to(plan.target.astype(np.float32), depth.shape)
        shifts = np.full_like(shifts, np.nan)
    out = {"target": targets["edited"]}
    for run, ims in images.items():
        mask, run_depth = labelled.get(run) or _label(plan, ims)
        found, colour = _found_and_colour(ims, mask, prompts, c.min_pixels)
        scores = edit_metrics.edit_scores(plain_image=images["no_edit"], image=ims, plain_mask=salient, mask=mask,
                                          target_mask=target_mask, shifts=shifts, found=found, colour=colour,
                                          plain_depth=depth, depth=run_depth, target_depth=target_depth)
        out.update({f"{run}|{m}": v for m, v in scores.items()})
        out[f"mask|{run}"] = mask
    return out


def _found_and_colour(images, masks, prompts, min_pixels):
    """`quality.found_and_colour` for toy-world captions, which name the salient object's colour; other prompts
    get colour NaN."""
    from jaxprobe.toy import quality
    try:
        return quality.found_and_colour(images, masks, prompts, min_pixels=min_pixels)
    except ValueError:
        return masks.sum(axis=(1, 2)) >= min_pixels, np.full(len(images), np.nan)


def _batch_path(workdir: Path, batch: int) -> Path:
    return workdir / "batches" / f"{batch:05d}.npz"


def run(c, workdir, pipe=None) -> dict:
    """The whole study; rerunning with the same config and workdir resumes at the first batch not written.
    `pipe`: config.pipeline_dir already loaded. Multi-host (`--distributed`): every process samples on the global
    mesh; process 0 writes (and returns the summary; the others return {})."""
    pipe = pipe or jobs.load_checked_pipeline(c)
    plan = check(c, pipe)
    workdir = jobs.claim(workdir, {**c.to_dict(), "weights_sha256": jobs.weights_fingerprint(
        c.pipeline_dir, c.labelers_dir, c.probes and Path(c.probes) / "probes")}, kind="run of edits")
    edits = edit_list(c)
    batches = [edits[i:i + c.batch_size] for i in range(0, len(edits), c.batch_size)]
    todo = [b for b in range(len(batches)) if not _batch_path(workdir, b).exists()]
    tqdm.write(f"editing {len(plan.layers)} layers at steps {list(plan.steps)}: {len(edits)} edits, runs "
               f"{', '.join(('no_edit', 'edited') + tuple(c.controls))}")
    # The first batch compiles the edit program (a scan over steps around a scan over Adam iterations).
    bar = tqdm(todo, desc="edits", unit="batch", initial=len(batches) - len(todo), total=len(batches),
               postfix="compiling…" if todo else None, disable=not mesh.is_main())
    for b in bar:
        out = run_batch(c, plan, pipe, batches[b], b, workdir)
        if mesh.is_main():
            with io.atomic_path(_batch_path(workdir, b)) as tmp:
                np.savez(tmp, **out)
        bar.set_postfix_str("", refresh=False)
    summary = write_report(c, workdir, plan, edits, len(batches)) if mesh.is_main() else {}
    mesh.barrier("report")
    return summary


def load_scores(workdir: Path, num_batches: int) -> dict[str, np.ndarray]:
    """Every batch's arrays, concatenated over edits."""
    parts = []
    for b in range(num_batches):
        with np.load(_batch_path(workdir, b), allow_pickle=False) as f:
            parts.append({k: f[k] for k in f.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts and parts[0] else {}


def summarize(scores: dict[str, np.ndarray], runs) -> dict:
    """{run: {metric: {'mean', 'ci95', 'n'}}}: means over the edits where the metric is defined (a centroid
    needs an object in both images), with 95% percentile-bootstrap intervals."""
    out = {}
    for run in runs:
        out[run] = {}
        for m in edit_metrics.METRICS:
            v = scores[f"{run}|{m}"]
            v = v[np.isfinite(v)]
            if len(v):
                mean, lo, hi = metrics.mean_ci(v)
                out[run][m] = {"mean": float(mean), "ci95": [float(lo), float(hi)], "n": int(len(v))}
    return out


# The success bar on the toy model (transfer, its interval, the paired IoU gain, objects kept, the random
# control): (run, metric, statistic, comparison, value).
GOALS = (("edited", "transfer", "mean", ">=", 0.5), ("edited", "transfer", "ci_low", ">=", 0.3),
         ("edited", "delta_iou", "ci_low", ">", 0.0), ("edited", "found", "mean", ">=", 0.9),
         ("random", "transfer", "ci_contains", "contains", 0.0))


def goals(summary: dict) -> list[dict]:
    """Each success check of `GOALS` with its measured value and whether it passes (None: not measured)."""
    out = []
    for run, metric, stat, op, bar in GOALS:
        s = summary.get(run, {}).get(metric)
        value = passed = None
        if s:
            lo, hi = s["ci95"]
            value = {"mean": s["mean"], "ci_low": lo, "ci_contains": [lo, hi]}[stat]
            passed = {">=": lambda: value >= bar, ">": lambda: value > bar,
                      "contains": lambda: lo <= bar <= hi}[op]()
        out.append({"run": run, "metric": metric, "statistic": stat, "goal": f"{op} {bar}", "value": value,
                    "passed": passed})
    return out


def write_report(c, workdir: Path, plan: Plan, edits: list[dict], num_batches: int) -> dict:
    """edits.csv, results.csv, summary.json and figures/ from the batches' files."""
    scores = load_scores(workdir, num_batches)
    runs = ("no_edit", "edited") + tuple(c.controls)
    layers = "+".join(scene_layers.short_layer_name(l) for l in plan.layers)
    summary = {"config": c.to_dict(), "layers": list(plan.layers), "steps": list(plan.steps), "edits": len(edits)}
    rows = []
    for e in edits:
        for run in runs:
            row = {**{k: e[k] for k in ("k", "prompt", "seed", "dx", "dy")}, "control": run,
                   "image": f"{DIRS.get(run, run)}/{e['k']}.png", "layers": layers,
                   "steps": " ".join(map(str, plan.steps))}
            row.update({m: float(scores[f"{run}|{m}"][e["k"]]) for m in edit_metrics.METRICS if scores})
            rows.append(row)
    io.write_csv(workdir / "edits.csv", rows, list(rows[0]))
    if scores:
        summary["runs"] = summarize(scores, runs)
        summary["goals"] = goals(summary["runs"])
        report.write_results_csv(workdir / "results.csv", [
            {"model": run, "task": c.task, "layer": layers, "step": plan.steps[0], "split": "test", "metric": m,
             "value": s["mean"]} for run, by_metric in summary["runs"].items() for m, s in by_metric.items()])
        edit_figures.runs_figure(workdir / "figures" / "runs.png", summary["runs"], title=f"{c.task} edit of "
                                 f"{len(plan.layers)} layers at steps {list(plan.steps)}, {len(edits)} edits")
        n = min(8, len(edits))
        images = {run: np.stack([io.read_png(workdir / DIRS.get(run, run) / f"{k}.png") for k in range(n)])
                  for run in ("no_edit", "edited")}
        edit_figures.edit_grid(workdir / "figures" / "edits.png", images["no_edit"], scores["target"][:n],
                               images["edited"], scores["mask|no_edit"][:n], scores["mask|edited"][:n],
                               titles=[f"k={e['k']} dx={e['dx']} dy={e['dy']}" for e in edits[:n]])
    io.write_json(workdir / "summary.json", summary)
    return summary


def headline(summary: dict, *, with_goals: bool = True) -> list[str]:
    """One line per run: transfer and paired IoU gain with intervals, objects found and colours kept; then the
    success checks of `GOALS` (`with_goals`)."""
    lines = []
    for run, s in summary.get("runs", {}).items():
        parts = [f"{m} {s[m]['mean']:+.3f} [{s[m]['ci95'][0]:+.3f}, {s[m]['ci95'][1]:+.3f}]"
                 for m in ("transfer", "delta_iou") if m in s]
        parts += [f"{m} {s[m]['mean']:.0%}" for m in ("found", "colour") if m in s]
        if "background_change" in s:
            parts.append(f"background change {s['background_change']['mean']:.3f}")
        lines.append(f"{run:9s} " + "; ".join(parts))
    for g in summary.get("goals", ()) if with_goals else ():
        value = round(g["value"], 3) if isinstance(g["value"], float) else g["value"]
        verdict = "not measured" if g["passed"] is None else "met" if g["passed"] else "NOT MET"
        lines.append(f"goal: {g['run']} {g['metric']} {g['statistic']} {g['goal']}: {value}, {verdict}")
    return lines


def ablate(c, workdir) -> list[dict]:
    """Run the study once per `c.ablation` entry ({name: {config key: value}} over `c`), each in workdir/<name>
    (resumable like any run), then write workdir/ablation.csv (setting, what changed, each run's metric mean and
    95% interval) and figures/ablation.png. Returns the rows."""
    workdir = Path(workdir)
    settings = c.ablation.to_dict()
    if not settings:
        raise ValueError("config.ablation is empty: give {name: {config key: value}} entries to compare")
    if not c.labelers_dir:
        raise ValueError("config.ablation compares the edits' measures, which need config.labelers_dir")
    configs = {name: _override(c, name, over) for name, over in settings.items()}
    pipe = jobs.load_checked_pipeline(c)
    for name, sc in configs.items():  # every setting is checked before the first one runs
        with validate.config_key(f"ablation.{name}"):
            check(sc, pipe)
    rows = []
    for i, (name, over) in enumerate(settings.items()):
        tqdm.write(f"[{i + 1}/{len(settings)}] ablation setting {name}: {over or 'the base config'}")
        summary = run(configs[name], workdir / name, pipe)
        for run_name, by_metric in summary.get("runs", {}).items():  # process 0 of a multi-host run
            for m, s in by_metric.items():
                rows.append({"setting": name, "changed": " ".join(f"{k}={v}" for k, v in over.items()),
                             "layers": len(summary["layers"]), "steps": " ".join(map(str, summary["steps"])),
                             "run": run_name, "metric": m, "mean": s["mean"], "ci_low": s["ci95"][0],
                             "ci_high": s["ci95"][1], "n": s["n"]})
    if mesh.is_main():
        io.write_csv(workdir / "ablation.csv", rows, list(rows[0]))
        edit_figures.ablation_figure(workdir / "figures" / "ablation.png", rows)
    return rows


def _override(c, name: str, over: dict):
    """`c` without its ablation, with one setting's overrides."""
    sc = c.copy_and_resolve_references()
    with sc.unlocked():
        del sc["ablation"]
    for key, value in over.items():
        if key not in sc:
            raise ValueError(f"config.ablation.{name}: unknown config key {key!r}; valid keys: {', '.join(sc)}")
        sc[key] = tuple(value) if isinstance(value, list) else value
    return sc
