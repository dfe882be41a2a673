"""The scene-probing sweep, as one resumable job: data -> capture -> probes -> metrics -> report.

1. Data: prompts and images. `generated` (the paper): prompts are toy-world captions (or a prompts file), images are
   the model's own samples, labels come from the labelers (the paper uses a saliency net and MiDaS). `encoded`:
   real toy-world scenes with exact labels, encoded by the VAE and noised to each step's t_k.
2. Capture: ONE sampling pass per batch records every selected layer at every selected step, for the trained UNet
   and (same inputs, permuted weights) the randomized one, plus the VAE-decoder baseline on each step's predicted x0.
   Batches go to an on-disk `ActivationStore` as they finish; a rerun skips the batches already written.
3. Probes: every (layer, step) probe of a model and task is fit with `fit.fit_sweep` (vmapped, checkpointed per
   epoch) or `ridge.fit_ridge_sweep`; the fitted probes go to probes/<model>_<task>.safetensors
   (`jaxprobe.probing.saved`), per-image scores to scores/, so a rerun skips finished units.
4. Report: `results.csv` (model,task,layer,step,split,metric,value), `summary.json`, figures.

Stages (`config.stage`): 'all' runs the four in one job; 'capture', 'label', 'fit' and 'report' run one each, so that
real SD v1 images can be labelled elsewhere between capture and label: capture writes images/<row>.png and
images/index.csv (`image_index`), label writes labels/ (`labels`: the user's files checked against that index, a
DPT depth model, the toy labelers, or exact labels), fit and report read them.

Before any of it `check_config` validates the whole config against the loaded pipeline, so that a typo fails in
seconds and before the workdir is claimed, not after a capture.
"""
from __future__ import annotations

import dataclasses
import json
import math
import zlib
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxprobe import hooks, io, mesh
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.probing import fit, probes, report, ridge, saved, store
from jaxprobe.scene import capture, figures, image_index, labels
from jaxprobe.scene import layers as scene_layers
from jaxprobe.scene import tasks as scene_tasks
from jaxprobe import jobs, validate
from jaxprobe.validate import check_choice

STAGES = ("all", "capture", "label", "fit", "report")
MODELS = ("trained", "randomized", "vae")
DATA_MODES = ("generated", "encoded")
TASKS = (scene_tasks.SALIENCY.name, scene_tasks.DEPTH.name)
PROBE_KINDS = probes.KINDS + ("ridge",)  # ridge: closed form (`ridge.fit_ridge_sweep`), no epochs
STORE_DTYPES = ("float32", "bfloat16", "float16")
VAE_LAYER = "decoder/mid_block/attentions_0"
# Keys a later run may set or change: the label sources are often known only once the images exist, and the fit's
# memory budget only once it runs out (no probe depends on it).
STAGE_KEYS = ("stage", "labels_dir", "labelers_dir", "depth_model_dir", "fit_memory_gb")
RIDGE_VAL_FRACTION = 0.2  # ridge picks each probe's lambda on this seeded fraction of the train split
# The least valid value of each numeric config key (probe.lr, a float, is checked on its own: > 0 and finite).
AT_LEAST = {"num_train": 1, "num_test": 1, "batch_size": 1, "num_inference_steps": 1, "probe.epochs": 0,
            "probe.batch_size": 1, "probe.hidden": 1, "seed": 0, "randomized_seed": 0, "scene_seed_offset": 0,
            "fit_memory_gb": 0}


@dataclasses.dataclass
class Dataset:
    """What the probes learn from: prompts, and (encoded mode) the real images with their exact labels."""

    prompts: list[str]
    images: np.ndarray | None = None  # uint8 [N, H, W, 3], encoded mode only
    salient: np.ndarray | None = None  # bool [N, H, W]
    depth: np.ndarray | None = None  # float32 [N, H, W], raw depth (z-scored later with train statistics)


def check_config(c, pipe) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validate the whole sweep config against the loaded pipeline before the workdir is claimed or anything is
    captured: a typo must cost seconds, not a capture, and must not leave a workdir that refuses the corrected
    rerun. Returns the selected layers and denoising steps (negative steps resolved)."""
    check_choice("config.stage", c.stage, STAGES)
    check_choice("config.data", c.data, DATA_MODES)
    validate.check_choices(c, "models", MODELS)
    validate.check_choices(c, "tasks", TASKS)
    check_choice("config.probe.kind", c.probe.kind, PROBE_KINDS)
    check_choice("config.probe.label_mode", c.probe.label_mode, probes.LABEL_MODES)
    check_choice("config.store_dtype", c.store_dtype, STORE_DTYPES)
    if c.data == "encoded" and "vae" in c.models:
        raise ValueError("config.models has 'vae', which decodes each sampling step's predicted x0, so it needs "
                         "data='generated'; drop 'vae' from config.models for encoded data")
    validate.at_least(c, AT_LEAST)
    mesh.check_batch(c.batch_size, "config.batch_size")
    validate.positive_finite(c, "probe.lr")
    if c.probe.kind == "ridge" and not 0 < round(c.num_train * RIDGE_VAL_FRACTION) < c.num_train:
        raise ValueError(f"config.num_train={c.num_train} leaves ridge no images to pick lambda on: "
                         f"config.probe.kind='ridge' holds out {RIDGE_VAL_FRACTION:.0%} of the train split")
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
    _check_prompts_file(c, pipe)
    if c.stage in ("all", "label"):
        check_label_sources(c, pipe, layers)
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


def _check_prompts_file(c, pipe) -> None:
    """Enough prompts, each short enough for the tokenizer: a long one would fail only at its capture batch."""
    if c.prompts_file:  # toy-world captions: as many as asked for
        jobs.prompts(c, c.num_train + c.num_test, _captions(c), tokenize=pipe.tokenize,
                     what="config.num_train + config.num_test =")


def label_sources(c) -> dict[str, labels.Source]:
    """Each task's label source: exact for encoded scenes, else from config (`labels.sources`)."""
    if c.data == "encoded":
        return {task: labels.Source("exact") for task in c.tasks}
    return labels.sources(c, c.tasks)


def check_label_sources(c, pipe, layers: Sequence[str]) -> None:
    """Every task has one label source, and it fits: the user's files match the images' index (order, count) and
    a size the probes can use (headers only), a DPT directory holds a DPT, the toy labelers take these images."""
    with validate.config_key("labels_dir"):
        srcs = label_sources(c)
    kinds = {src.kind for src in srcs.values()}
    if "labelers" in kinds:
        labels.check_labelers(c)
    if "depth_model" in kinds:
        from jaxprobe.models import load
        path = validate.existing_path(c, "depth_model_dir", "a transformers DPTForDepthEstimation directory",
                                      ("config.json",))
        with validate.config_key("depth_model_dir"):
            load.build_dpt(load.read_config(path, what="DPT"))
    if kinds & {"file", "segmentation"}:
        grids = [g for g in capture.token_grids(pipe, layers, c.resolution, c.resolution).values() if g]
        if "vae" in c.models:
            grids.append((c.resolution // pipe.vae_scale_factor,) * 2)
        with validate.config_key("labels_dir"):
            labels.check_files(srcs, expected_index(c), grids, (c.resolution, c.resolution))


def expected_index(c) -> list[dict[str, str]]:
    """images/index.csv as the capture writes it (known from the config alone)."""
    prompts = _prompts(c)
    return image_index.rows(prompts, [c.seed + i for i in range(len(prompts))], c.num_train)


def make_dataset(c) -> Dataset:
    """Prompts (toy-world captions, or a prompts file) and, for encoded data, the scenes with exact labels."""
    prompts = _prompts(c)
    if c.data == "generated":  # captions only: no need to render
        return Dataset(prompts=prompts)
    from jaxprobe.toy.world import render
    scenes = render.render_batch(list(range(c.scene_seed_offset, c.scene_seed_offset + len(prompts))), c.resolution)
    return Dataset(prompts=prompts, images=scenes["rgb"], salient=scenes["salient"], depth=scenes["depth"])


def _prompts(c) -> list[str]:
    """The prompts file's first N lines, or the captions of toy-world scenes scene_seed_offset .. + N."""
    return jobs.prompts(c, c.num_train + c.num_test, _captions(c))


def _captions(c):
    def captions(n: int) -> list[str]:
        from jaxprobe.toy.world import render
        return [render.sample_scene(s).caption for s in range(c.scene_seed_offset, c.scene_seed_offset + n)]
    return captions


def capture_all(c, pipe, data: Dataset, act_store: store.ProcessStores) -> None:
    """Fill the store batch by batch (chunk k holds images k*B .. k*B+B-1); finished chunks are skipped. Each
    process stores the rows its devices computed."""
    n, b = len(data.prompts), c.batch_size
    layers = hooks.select_layers(pipe.unet, list(c.layers))
    steps = list(c.steps) if len(c.steps) else None
    chunks = range(math.ceil(n / b))
    todo = [k for k in chunks if not act_store.has_chunk(k)]
    random_pipe = None
    if c.data == "encoded" and "randomized" in c.models and todo:
        random_pipe = capture.randomized_pipeline(pipe, c.randomized_seed)
    # The first batch compiles the sampling program (about 70 s for SD v1): say so while the bar sits at 0.
    bar = tqdm(todo, desc="capture", unit="batch", initial=len(chunks) - len(todo), total=len(chunks),
               postfix="compiling…" if todo else None)
    for k in bar:
        lo, hi = k * b, min(n, k * b + b)
        seeds = [c.seed + i for i in range(lo, hi)]
        arrays = {}
        if c.data == "generated":
            out = capture.capture_sweep(
                pipe, data.prompts[lo:hi], layers=layers, steps=steps, seed=seeds, guidance_scale=c.guidance_scale,
                num_inference_steps=c.num_inference_steps, scheduler=c.scheduler, store_dtype=_dtype(c.store_dtype),
                randomized_seed=c.randomized_seed if "randomized" in c.models else None,
                vae_baseline="vae" in c.models, height=c.resolution, width=c.resolution, store_pool=c.store_pool)
            arrays["images"] = out.images
            groups = {"trained": out.acts, "randomized": out.randomized, "vae": out.vae}
        else:
            groups = {"trained": capture.capture_encoded(
                pipe, data.images[lo:hi], data.prompts[lo:hi], layers=layers, steps=steps, seed=seeds,
                num_inference_steps=c.num_inference_steps, scheduler=c.scheduler, store_dtype=_dtype(c.store_dtype),
                store_pool=c.store_pool)}
            if "randomized" in c.models:
                groups["randomized"] = capture.capture_encoded(
                    random_pipe, data.images[lo:hi], data.prompts[lo:hi],
                    layers=layers, steps=steps, seed=seeds, num_inference_steps=c.num_inference_steps,
                    scheduler=c.scheduler, store_dtype=_dtype(c.store_dtype), store_pool=c.store_pool)
        rows = {}
        for model, acts in groups.items():
            if model in c.models:
                rows.update({f"{model}/{layer}": mesh.local_rows(a) for layer, a in acts.items()})
        row_from = min(start for start, _ in rows.values())
        arrays = {k: a[row_from:row_from + len(next(iter(rows.values()))[1])] for k, a in arrays.items()}
        arrays.update({name: a for name, (_, a) in rows.items()})
        act_store.write_chunk(k, arrays, {"prompts": data.prompts[lo:hi], "seeds": seeds}, row_from=row_from)
        bar.set_postfix_str("", refresh=False)


def export_images(c, workdir: Path, data: Dataset, act_store: store.ProcessStores) -> None:
    """images/<row>.png and images/index.csv (process 0): what a user labels between the capture and label stages."""
    directory = workdir / "images"
    if mesh.is_main() and not (directory / image_index.INDEX).exists():
        images = data.images if data.images is not None else act_store.read("images")
        image_index.write(directory, images, expected_index(c))
    mesh.barrier("images")


def label(c, workdir: Path, data: Dataset, act_store: store.ProcessStores) -> None:
    """Write labels/ (raw labels per task and where they came from), unless the same sources already wrote it.
    Labels from other sources are refused: the workdir's probes and scores were fitted on the first ones."""
    srcs = label_sources(c)
    record = {task: {"source": str(src), "sha256": jobs.weights_fingerprint(src.path) if src.path else ""}
              for task, src in srcs.items()}
    directory = workdir / "labels"
    have = labels.saved_sources(directory)
    if have is not None and {t: have.get(t) for t in record} == record:
        tqdm.write(f"labels: already in {directory.absolute()}")
        return
    if have is not None:
        raise ValueError(f"{directory} holds labels from {have}; this run's would come from {record}. The "
                         "workdir's probes were fitted on the first: use a new --workdir (or delete its labels/, "
                         "probe_checkpoints/, probes/ and scores/)")
    tqdm.write("labels: " + "; ".join(f"{task} from {src}" for task, src in srcs.items()))
    exact = {"saliency": data.salient, "depth": data.depth}
    arrays = labels.make(c, srcs, lambda: act_store.read("images"), exact)
    labels.prepare(arrays, c.num_train)  # refuses labels the probes cannot use, before they are saved
    if mesh.is_main():
        labels.save(directory, arrays, record)
    mesh.barrier("labels")


def labels_for(c, workdir: Path) -> dict[str, np.ndarray]:
    """The label stage's labels, prepared for the probes: masks bool, depth z-scored with the train split's global
    mean/std."""
    raw = labels.load(workdir / "labels", c.tasks)
    if raw is None:
        raise ValueError(f"{workdir} has no labels yet: run --config.stage=label first")
    return labels.prepare(raw, c.num_train)


def fit_and_score(c, workdir: Path, act_store: store.ProcessStores, labels: dict, layers: Sequence[str],
                  steps: Sequence[int]) -> None:
    """Fit and score every (model, task) unit not already scored; scores go to scores/<model>_<task>_<split>.npz,
    keyed by (layer, denoising step). Multi-host: every process takes part in the SGD fits (on the global mesh);
    process 0 alone fits ridge probes (no collectives), scores and writes.

    A unit's layers are read from the store a part at a time (`layer_parts`: config.fit_memory_gb), its train rows
    for the fit and the train scores, then its test rows; no probe depends on which layers share its part."""
    n = c.num_train + c.num_test
    train, test = np.arange(c.num_train), np.arange(c.num_train, n)
    units = [(m, t) for m in c.models for t in c.tasks  # decided once, so that every process runs the same fits
             if not all(_scores_path(workdir, m, t, s).exists() for s in ("train", "test"))]
    if not mesh.is_main() and c.probe.kind == "ridge":
        return
    p = c.probe
    rows = max(c.num_train, c.num_test)  # a part is read one split at a time
    for model, task in tqdm(units, desc="probes", unit="fit", disable=not mesh.is_main()):
        spec = scene_tasks.BY_NAME[task]
        names = [VAE_LAYER] if model == "vae" else list(layers)
        parts = layer_parts({name: act_store.row_bytes(f"{model}/{name}") * rows for name in names},
                            c.fit_memory_gb)
        fitted, scores = {}, {"train": {}, "test": {}}
        for part in tqdm(parts, desc=f"{model} {task}: layer parts", unit="part", leave=False,
                         disable=len(parts) == 1 or not mesh.is_main()):
            acts = {layer: act_store.read(f"{model}/{layer}", rows=train) for layer in part}
            if p.kind == "ridge":  # closed form on block-mean targets: probe.label_mode, epochs, lr do not apply
                got, _ = ridge.fit_ridge_sweep(acts, labels[task][train], spec, seed=p.seed,
                                               val_fraction=RIDGE_VAL_FRACTION)
            else:
                checkpoints = workdir / "probe_checkpoints" / f"{model}_{task}"
                if len(parts) > 1:  # named by its layers, so that another split of the layers starts afresh
                    checkpoints /= f"layers_{zlib.crc32(chr(0).join(part).encode()):08x}"
                got = fit.fit_sweep(acts, labels[task][train], spec, kind=p.kind, epochs=p.epochs,
                                    batch_size=p.batch_size, lr=p.lr, seed=p.seed, label_mode=p.label_mode,
                                    hidden=p.hidden, checkpoint_dir=checkpoints.absolute())
            fitted.update(got)
            if not mesh.is_main():
                continue
            scores["train"].update(probes.evaluate_sweep(got, acts, labels[task][train], spec))
            del acts
            acts = {layer: act_store.read(f"{model}/{layer}", rows=test) for layer in part}
            scores["test"].update(probes.evaluate_sweep(got, acts, labels[task][test], spec))
            del acts
        if not mesh.is_main():
            continue
        saved.save(saved.path_for(workdir / "probes", model, spec), saved.SavedProbes(
            model=model, task=spec, kind=p.kind, probes={(layer, steps[i]): v for (layer, i), v in fitted.items()},
            meta={**json.loads((workdir / "config.json").read_text()),
                  "pipeline_sha256": jobs.weights_fingerprint(c.pipeline_dir)}))
        for split in ("train", "test"):
            _save_scores(_scores_path(workdir, model, task, split), report.with_denoising_steps(scores[split], steps))
        if model == "trained":
            _save_predictions(workdir, task, fitted, act_store, test, labels[task][test], steps)


def layer_parts(layer_bytes: dict[str, int], memory_gb: float) -> list[list[str]]:
    """The layers in order, cut into consecutive parts whose activations (`layer_bytes`: one split's, as stored)
    hold at most `memory_gb` GB; a layer larger than that is a part alone. memory_gb <= 0: one part."""
    if memory_gb <= 0:
        return [list(layer_bytes)]
    parts, size = [[]], 0
    for layer, nbytes in layer_bytes.items():
        if parts[-1] and size + nbytes > memory_gb * 1e9:
            parts.append([])
            size = 0
        parts[-1].append(layer)
        size += nbytes
    return parts


def _scores_path(workdir: Path, model: str, task: str, split: str) -> Path:
    return workdir / "scores" / f"{model}_{task}_{split}.npz"


def _save_scores(path: Path, scores: dict) -> None:
    """{(layer, step): {metric: [N]}} -> npz with keys 'layer|step|metric' (no pickle)."""
    flat = {f"{layer}|{step}|{m}": v for (layer, step), ms in scores.items() for m, v in ms.items()}
    with io.atomic_path(path) as tmp:
        np.savez(tmp, **flat)


def load_scores(path: Path) -> dict:
    scores: dict = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            layer, step, m = key.split("|")
            scores.setdefault((layer, int(step)), {})[m] = data[key]
    return scores


def _save_predictions(workdir, task, fitted, act_store: store.ProcessStores, test, truth, steps) -> None:
    """The best trained probe's test predictions for the figure grid (first images of the test split)."""
    scores = load_scores(_scores_path(workdir, "trained", task, "test"))
    metric = scene_tasks.BY_NAME[task].headline
    pick = min if report.LOWER_IS_BETTER[metric] else max
    layer, step = pick(scores, key=lambda k: float(np.mean(scores[k][metric])))
    index = list(steps).index(step)
    k = test[:8]
    x = jnp.asarray(np.asarray(act_store.read(f"trained/{layer}", rows=k)[:, index], np.float32))
    pred = probes.predict(fitted[(layer, index)], x, truth.shape[1:])
    with io.atomic_path(workdir / "scores" / f"best_{task}.npz") as tmp:
        np.savez(tmp, pred=np.asarray(pred), truth=truth[:len(k)], index=k, layer=np.str_(layer), step=step)


def write_report(c, workdir: Path, act_store: store.ActivationStore, layers: Sequence[str], data: Dataset) -> dict:
    """results.csv, summary.json and the figures, from the saved per-image scores."""
    tqdm.write(f"writing results.csv, summary.json and figures to {workdir.absolute()}")
    rows, by_model = [], {}
    for model in c.models:
        for task in c.tasks:
            for split in ("train", "test"):
                scores = load_scores(_scores_path(workdir, model, task, split))
                rows += report.score_rows(scores, model=model, task=task, split=split)
                if split == "test":
                    by_model.setdefault(model, {})[task] = scores
    report.write_results_csv(workdir / "results.csv", rows)
    order = list(layers) + ([VAE_LAYER] if "vae" in c.models else [])
    summary = report.summarize(by_model, tasks=[scene_tasks.BY_NAME[t] for t in c.tasks], layer_order=order,
                               reference=figures.REFERENCE_MODEL, layer_names=scene_layers.names)
    io.write_json(workdir / "summary.json", {"config": c.to_dict(), "summary": summary})
    test_rows = [r for r in rows if r["split"] == "test"]
    first_step = min(r["step"] for r in test_rows)  # the earliest selected step; step 0 need not be one
    figs = workdir / "figures"
    for task in c.tasks:
        metric = scene_tasks.BY_NAME[task].headline
        figures.heatmap_figure(test_rows, task, metric, figs / f"heatmap_{task}_{metric}.png", layer_order=order,
                               models=tuple(c.models))
        figures.curves_figure(test_rows, task, metric, figs / f"curves_{task}_{metric}.png", layer_order=order)
        figures.layer_profile_figure(test_rows, task, metric, figs / f"layers_{task}_{metric}.png", layer_order=order,
                                     step=first_step)
    _prediction_figure(c, workdir, act_store, data, figs / "predictions.png")
    return summary


def _prediction_figure(c, workdir, act_store, data: Dataset, path) -> None:
    if "trained" not in c.models or set(c.tasks) != {"saliency", "depth"}:  # the trained probes' predictions
        return
    best = {t: np.load(workdir / "scores" / f"best_{t}.npz", allow_pickle=False) for t in c.tasks}
    idx = best["saliency"]["index"]
    images = data.images[idx] if data.images is not None else act_store.read("images")[idx]
    figures.prediction_grid(path, images, best["saliency"]["truth"], best["saliency"]["pred"],
                            best["depth"]["truth"], best["depth"]["pred"],
                            titles=[data.prompts[i] for i in idx],
                            suptitle=" | ".join(f"{t}: {scene_layers.short_layer_name(str(best[t]['layer']))} step "
                                                f"{int(best[t]['step'])}" for t in ("saliency", "depth")))


def run(c, workdir) -> dict:
    """The whole sweep, or the one stage config.stage names; rerunning with the same config and workdir resumes
    where a killed run stopped. Returns the summary once the report is written, else {}.

    Multi-host (`--distributed`): every process runs this; each stores the rows its devices captured
    (`store.ProcessStores`), the fits run on the global mesh, and process 0 writes probes, scores and the report."""
    pipe = jobs.load_checked_pipeline(c)
    layers, steps = check_config(c, pipe)
    workdir = jobs.claim(workdir, {**c.to_dict(), "weights_sha256": jobs.weights_fingerprint(c.pipeline_dir)},
                         kind="sweep", may_change=STAGE_KEYS)
    data = make_dataset(c)
    act_store = store.ProcessStores(workdir / "activations", jax.process_index(), jax.process_count())
    every = c.stage == "all"
    if every or c.stage == "capture":
        capture_all(c, pipe, data, act_store)
        mesh.barrier("capture")  # every part of every chunk is written
        export_images(c, workdir, data, act_store)
        if not every:
            tqdm.write(f"capture done: the images and their index are in {(workdir / 'images').absolute()}; label "
                       "them (docs/labels.md), then run --config.stage=label")
            return {}
    _require(all(act_store.has_chunk(k) for k in range(math.ceil(len(data.prompts) / c.batch_size)))
             and (workdir / "images" / image_index.INDEX).exists(), workdir, "capture")
    if every or c.stage == "label":
        label(c, workdir, data, act_store)
        if not every:
            tqdm.write(f"labels are in {(workdir / 'labels').absolute()}; next: --config.stage=fit")
            return {}
    if every or c.stage == "fit":
        fit_and_score(c, workdir, act_store, labels_for(c, workdir), layers, steps)
        mesh.barrier("fit")  # process 0 wrote every score
        if not every:
            tqdm.write(f"probes and scores are in {workdir.absolute()}; next: --config.stage=report")
            return {}
    _require(all(_scores_path(workdir, m, t, s).exists() for m in c.models for t in c.tasks
                 for s in ("train", "test")), workdir, "fit")
    summary = write_report(c, workdir, act_store, layers, data) if mesh.is_main() else {}
    mesh.barrier("report")
    return summary


def _require(done: bool, workdir: Path, stage: str) -> None:
    if not done:
        raise ValueError(f"{workdir} has not finished the {stage} stage: run --config.stage={stage} (or 'all') first")


def headline(summary: dict) -> list[str]:
    """One line per (task, model): the best cell and, for the trained model, the paired gap to each baseline AT
    THAT CELL (`report.summarize`'s 'gap'), which is not the difference of the two models' best cells."""
    lines = []
    for model, by_task in summary.items():
        for task, s in by_task.items():
            b = s["best"]
            line = (f"{task:8s} {model:10s} best {s['metric']} {b['mean']:.3f} "
                    f"[{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}] at {b['short']} step {b['step']}")
            for base, g in s.get("gap", {}).items():
                line += (f"; vs {base} at this cell (paired, + = {model} better): {g['mean']:+.3f} "
                         f"[{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
            lines.append(line)
    return lines


def _dtype(name: str):
    return None if name == "float32" else jnp.dtype(name)
