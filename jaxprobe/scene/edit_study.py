"""The intervention study as one resumable job: move the object by editing activations against a sweep's frozen
probes, and measure that it moved, against controls run with the same seeds and prompts.

1. Checks (`edit_checks.check`): the whole config, the probes (fitted on this pipeline, by sha256; one for every
   edited layer and step) and the label and target sources, before the workdir is claimed or anything is sampled.
2. Edits: edit k edits image k // shifts_per_image (a toy-world caption, seed `seed + image`) towards its own
   salient mask translated by a drawn (dx, dy) (`intervene.draw_shifts`; the paper's 5 shifts per image), or its
   depth shifted the same way, or a user's target file.
3. Per batch of edits: the plain sample ('no_edit'; with config.hold_background, keeping its latents, which the edit
   and its controls blend with outside the region); its labels (the toy labelers, as the sweep's); the targets;
   then the edit and each control, every one a sample with the same seeds and prompts:
   - 'null': the same optimisation towards the image's own label (shift 0), same lr and iterations;
   - 'random': the edit's per-image step norm at every edited layer and step, in a random direction;
   - 'opposite': the edit towards the label translated by (-dx, -dy);
   - 'roll': no probe: the edited layers' activations rolled by (dx, dy) at the edited steps
     (`edit_controls.RollHook`), the edit any probe-free method could make;
   - 'shuffled': the edit with the sweep's shuffled-label probes (`baselines.SHUFFLED`), which read no image's own
     label.
   Each run's images go to <run>/<k>.png; each run is labelled and scored against the edit's shift and target
   (`edit_metrics`); the batch's scores are written before the next batch starts, so a rerun resumes at the first
   missing batch.
4. Report (`edit_report`): edits.csv, results.csv, summary.json, figures.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxprobe import io, jobs, mesh, validate
from jaxprobe.diffusion import sampling
from jaxprobe.probing import metrics
from jaxprobe.scene import edit_controls, edit_figures, edit_metrics, edit_modes, intervene
from jaxprobe.scene.captions import toy_captions
from jaxprobe.scene.edit_checks import EditSetup, check
from jaxprobe.scene.edit_report import batch_path, headline, image_path, load_scores, paired, write_report
from jaxprobe.scene.tasks import BY_NAME

__all__ = ["run", "run_batch", "ablate", "check", "headline", "edit_list"]

# Every sample of an edit is a run: the plain one ('no_edit'), the edit, and the controls of config.controls (all
# with the edit's seed and prompt).
# The target of each run: the label moved by sign x (dx, dy) (the roll control has no probe: the shift is its sign).
SIGNS = {"edited": 1, "null": 0, "random": 1, "opposite": -1, "roll": 1, "shuffled": 1}


def edit_list(c) -> list[dict]:
    """Every edit: k, its image (index), that image's prompt and seed, dx, dy (0, 0 for a user's target)."""
    n = c.num_images * c.shifts_per_image
    shifts = np.zeros((n, 2), int) if c.target_file else intervene.draw_shifts(
        n, c.resolution, c.seed, fraction=tuple(c.shift_fraction))
    prompts = jobs.prompts(c, c.num_images, toy_captions(c))
    return [{"k": k, "image": k // c.shifts_per_image, "prompt": prompts[k // c.shifts_per_image],
             "seed": c.seed + k // c.shifts_per_image,
             "dx": int(shifts[k, 0]), "dy": int(shifts[k, 1])} for k in range(n)]


def _label(setup: EditSetup, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(salient bool [N,H,W], depth z-scored with the labelers' own statistics [N,H,W])."""
    salient, depth = setup.labelers.label(images)
    cfg = setup.labelers.config
    return salient, metrics.zscore(depth, cfg.depth_mean, cfg.depth_std)


def _targets(c, setup: EditSetup, edits: list[dict], salient, depth, sign: int) -> np.ndarray:
    """The probe targets [B, H, W] of a run: the plain sample's label moved by sign x (dx, dy) (sign 0: the null
    edit's own label), or the user's target."""
    if setup.target is not None and sign:
        return np.stack([setup.target] * len(edits))
    if c.task == "saliency":
        return _moved(intervene.translate_mask, salient, edits, sign)
    return _moved(intervene.shift_depth, depth, edits, sign, value_range=tuple(c.depth_range))


def _moved(move, maps, edits: list[dict], sign: int, **kw) -> np.ndarray:
    """`move` (translate_mask or shift_depth) of each edit's map by sign x (dx, dy) -> [B, H, W]."""
    return np.stack([move(m, sign * e["dx"], sign * e["dy"], **kw) for m, e in zip(maps, edits)])


def run_batch(c, setup: EditSetup, pipe, edits: list[dict], batch: int, workdir: Path) -> dict[str, np.ndarray]:
    """Sample, write, label and score one batch of edits -> {'<run>|<metric>': [B], 'mask|<run>': [B,H,W],
    'target': [B,H,W]} (empty without labelers)."""
    prompts, seeds = [e["prompt"] for e in edits], [e["seed"] for e in edits]
    plain = sampling.sample(pipe, prompts, setup.sampler, seed=seeds,
                            **({"hook": intervene.KEEP_LATENTS, "keep_steps": None} if c.hold_background else {}))
    images = {"no_edit": plain.images}
    reference = intervene.held_reference(plain) if c.hold_background else None
    labelled = {"no_edit": _label(setup, images["no_edit"])} if setup.labelers else {}
    salient, depth = labelled.get("no_edit", (None, None))
    if setup.plain_labels is not None:
        salient, depth = (a[[e["image"] for e in edits]] for a in setup.plain_labels)
    targets = {run: _targets(c, setup, edits, salient, depth, SIGNS[run]) for run in ("edited",) + tuple(c.controls)}
    changes = {}  # run -> {'overall', 'in', 'out': ||delta a|| / ||a|| per edit}
    shifts = np.asarray([[e["dx"], e["dy"]] for e in edits], np.float64)  # (dx, dy) in pixels
    for run, target in targets.items():
        if run == "roll":
            hook = edit_controls.RollHook(setup.layers)
            extra = {"active": setup.active, "shift": (shifts / c.resolution).astype(np.float32)}
        else:
            hook = intervene.EditHook(setup.layers, BY_NAME[c.task], lr=c.lr, iterations=c.iterations,
                                      random_direction=run == "random", random_scale=c.random_scale, mode=c.mode,
                                      relative=c.relative, stop_loss=c.stop_loss, local=c.local, margin=c.margin,
                                      hold_background=c.hold_background, uncond_too=c.uncond_too)
            extra = {"probes": setup.control_probes if run == "shuffled" else setup.probes, "active": setup.active,
                     "target": target, "key": jax.random.fold_in(jax.random.key(c.seed), batch)}
            if salient is not None:
                extra["region"] = _region(c, setup, edits, salient, SIGNS[run])
            if reference is not None:
                extra["reference"] = reference
        out = sampling.sample(pipe, prompts, setup.sampler, seed=seeds, hook=hook, extra=extra,
                              keep_steps=() if run == "roll" else None)
        images[run] = out.images
        if run != "roll":
            aux = jax.tree.map(mesh.gather, out.kept["aux"])  # on every process, whichever devices hold it
            changes[run] = {k: np.asarray(v) for k, v in edit_modes.change_ratios(aux).items()}
    for run, ims in images.items():
        for e, im in zip(edits, ims):
            if mesh.is_main():
                io.write_png(workdir / image_path(run, e["k"]), im)
    if not setup.labelers:
        return {}
    if setup.target is None:  # the edit's target moved the plain sample's labels by (dx, dy)
        target_mask = _moved(intervene.translate_mask, salient, edits, 1)
        target_depth = _moved(intervene.shift_depth, depth, edits, 1, value_range=None)
    elif c.task == "saliency":  # a user's mask: the intended shift is its centroid's
        target_mask, target_depth = np.broadcast_to(setup.target.astype(bool), salient.shape), None
        shifts = edit_metrics.centroids(target_mask) - edit_metrics.centroids(salient)
    else:  # a user's depth map: no intended shift of the object
        target_mask, target_depth = salient, np.broadcast_to(setup.target.astype(np.float32), depth.shape)
        shifts = np.full_like(shifts, np.nan)
    out = {"target": targets["edited"]}
    nan = np.full(len(edits), np.nan)
    for run, ims in images.items():
        mask, run_depth = labelled.get(run) or _label(setup, ims)
        found, colour = _found_and_colour(ims, mask, prompts, c.min_pixels)
        scores = edit_metrics.edit_scores(plain_image=images["no_edit"], image=ims, plain_mask=salient, mask=mask,
                                          target_mask=target_mask, shifts=shifts, found=found, colour=colour,
                                          plain_depth=depth, depth=run_depth, target_depth=target_depth)
        scores.update({f"change_{k}": changes.get(run, {}).get(k, nan) for k in ("overall", "in", "out")})
        out.update({f"{run}|{m}": v for m, v in scores.items()})
        out[f"mask|{run}"] = mask
    return out


def _region(c, setup: EditSetup, edits: list[dict], salient, sign: int) -> np.ndarray:
    """A run's region [B, H, W]: the plain sample's object and its target (the object moved by sign x (dx, dy), or
    the user's mask), united and dilated by config.region_radius label pixels (`edit_modes.edit_region`). A local
    edit changes only the tokens there; every edit reports its change inside and outside it."""
    if setup.target is not None and sign and c.task == "saliency":
        moved = np.broadcast_to(setup.target > 0, salient.shape)
    else:
        moved = _moved(intervene.translate_mask, salient, edits, sign)
    return edit_modes.edit_region(salient, moved, c.region_radius)


def _found_and_colour(images, masks, prompts, min_pixels):
    """`quality.found_and_colour` for toy-world captions, which name the salient object's colour; other prompts
    get colour NaN."""
    from jaxprobe.toy import quality
    try:
        return quality.found_and_colour(images, masks, prompts, min_pixels=min_pixels)
    except ValueError:
        return masks.sum(axis=(1, 2)) >= min_pixels, np.full(len(images), np.nan)


def run(c, workdir, pipe=None) -> dict:
    """The whole study; rerunning with the same config and workdir resumes at the first batch not written.
    `pipe`: config.pipeline_dir already loaded. Multi-host (`--distributed`): every process samples on the global
    mesh; process 0 writes (and returns the summary; the others return {})."""
    jobs.check_workdir(workdir)
    pipe = pipe or jobs.load_checked_pipeline(c)
    setup = check(c, pipe)
    jobs.check_memory(pipe, c.resolution, c.resolution, c.batch_size, jnp.float32)
    workdir = jobs.claim(workdir, {**c.to_dict(), "weights_sha256": jobs.weights_fingerprint(
        c.pipeline_dir, c.labelers_dir, c.probes and Path(c.probes) / "probes")}, kind="run of edits")
    edits = edit_list(c)
    batches = [edits[i:i + c.batch_size] for i in range(0, len(edits), c.batch_size)]
    todo = [b for b in range(len(batches)) if not batch_path(workdir, b).exists()]
    tqdm.write(f"editing {len(setup.layers)} layers at steps {list(setup.steps)}: {len(edits)} edits, runs "
               f"{', '.join(('no_edit', 'edited') + tuple(c.controls))}")
    # The first batch compiles the edit program (a scan over steps around a scan over Adam iterations).
    bar = tqdm(todo, desc="edits", unit="batch", initial=len(batches) - len(todo), total=len(batches),
               postfix="compiling…" if todo else None, disable=not mesh.is_main())
    for b in bar:
        out = run_batch(c, setup, pipe, batches[b], b, workdir)
        if mesh.is_main():
            with io.atomic_path(batch_path(workdir, b)) as tmp:
                np.savez(tmp, **out)
        bar.set_postfix_str("", refresh=False)
    summary = write_report(c, workdir, setup, edits, len(batches)) if mesh.is_main() else {}
    mesh.barrier("report")
    return summary


def ablate(c, workdir) -> list[dict]:
    """Run the study once per `c.ablation` entry ({name: {config key: value}} over `c`), each in workdir/<name>
    (resumable like any run), then write workdir/ablation.csv (setting, what changed, each run's metric mean and
    95% interval clustered by image, and its paired difference from the first setting, the reference) and
    figures/ablation.png and tradeoff.png (transfer against the scene kept, the first setting starred). Returns the
    rows."""
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
    reference = next(iter(settings))
    rows = []
    for i, (name, over) in enumerate(settings.items()):
        tqdm.write(f"[{i + 1}/{len(settings)}] ablation setting {name}: {over or 'the base config'}")
        summary = run(configs[name], workdir / name, pipe)
        if not summary:  # not process 0 of a multi-host run
            continue
        differences = _paired_with(configs, workdir, name, reference)
        for run_name, by_metric in summary.get("runs", {}).items():
            for m, s in by_metric.items():
                d = differences.get(run_name, {}).get(m)
                rows.append({"setting": name, "changed": " ".join(f"{k}={v}" for k, v in over.items()),
                             "layers": len(summary["layers"]), "steps": " ".join(map(str, summary["steps"])),
                             "run": run_name, "metric": m, "mean": s["mean"], "ci_low": s["ci95"][0],
                             "ci_high": s["ci95"][1], "n": s["n"], "images": s["images"],
                             "paired_with": reference if d else "", "paired_mean": d["mean"] if d else "",
                             "paired_ci_low": d["ci95"][0] if d else "", "paired_ci_high": d["ci95"][1] if d else ""})
    if mesh.is_main():
        io.write_csv(workdir / "ablation.csv", rows, list(rows[0]))
        edit_figures.ablation_figure(workdir / "figures" / "ablation.png", rows)
        edit_figures.tradeoff_figure(workdir / "figures" / "tradeoff.png", rows, reference=reference)
    return rows


def _paired_with(configs: dict, workdir: Path, name: str, reference: str) -> dict:
    """{run: {metric: stats}} of setting `name` minus the `reference` setting, edit by edit (clustered by image),
    where both made the same edits (prompts, seeds, shifts) and labelled them; {} otherwise (and for the reference
    itself)."""
    edits = {n: edit_list(configs[n]) for n in (name, reference)}
    if name == reference or edits[name] != edits[reference]:
        return {}
    scores = {n: load_scores(workdir / n, -(-len(edits[n]) // configs[n].batch_size)) for n in (name, reference)}
    if not all(scores.values()):
        return {}
    images = np.asarray([e["image"] for e in edits[name]])
    runs = ("no_edit", "edited") + tuple(configs[name].controls)
    return {r: paired(scores[name], scores[reference], r, images) for r in runs
            if r in ("no_edit", "edited") + tuple(configs[reference].controls)}


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
