"""The scene-probing sweep, as one resumable job: data -> capture -> labels -> probes -> report.

1. Data (`sweep_data`): prompts and images. `generated` (the paper): prompts are toy-world captions (or a prompts
   file), images are the model's own samples, labels come from the labelers (the paper uses a saliency net and
   MiDaS). `encoded`: real toy-world scenes with exact labels, encoded by the VAE and noised to each step's t_k.
2. Capture (`capture_stage`): ONE sampling pass per batch records every selected layer at every selected step, for
   the trained UNet and (same inputs, permuted weights) the randomized one, plus the VAE-decoder baseline on each
   step's predicted x0. Batches go to an on-disk `ActivationStore` as they finish; a rerun skips the batches
   already written.
3. Labels (`label_stage`): labels/ from the user's files checked against the images' index, a DPT depth model, the
   toy labelers, or exact labels.
4. Probes (`fit_stage`): every (layer, step) probe of a model and task is fit with `fit.fit_sweep` (vmapped,
   checkpointed per epoch) or `ridge.fit_ridge_sweep`; the fitted probes go to probes/, per-image scores to scores/,
   so a rerun skips finished units.
5. Report (`report_stage`): `results.csv` (model,task,layer,step,split,metric,value), `summary.json`, figures.

Stages (`config.stage`): 'all' runs them in one job; 'capture', 'label', 'fit' and 'report' run one each, so that
real SD v1 images can be labelled elsewhere between capture and label: capture writes images/<row>.png and
images/index.csv (`image_index`), label writes labels/, fit and report read them. Before any of it
`sweep_checks.check_config` validates the whole config against the loaded pipeline.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm import tqdm

from jaxprobe import jobs, mesh
from jaxprobe.probing import store
from jaxprobe.scene import image_index
from jaxprobe.scene.baselines import VAE_LAYER
from jaxprobe.scene.capture_stage import capture_all, capture_holds, capture_request, export_images
from jaxprobe.scene.fit_stage import fit_and_score, layer_parts, scores_path, split_rows
from jaxprobe.scene.label_stage import label, labels_for
from jaxprobe.scene.reference_stage import REFERENCES, probed_grids, write_references
from jaxprobe.scene.report_stage import headline, write_report
from jaxprobe.scene.sweep_checks import STAGE_KEYS, check_config
from jaxprobe.scene.sweep_data import make_dataset

# What launchers and tests use, whichever stage module defines it.
__all__ = ["run", "headline", "check_config", "labels_for", "layer_parts", "VAE_LAYER"]

def run(c, workdir) -> dict:
    """The whole sweep, or the one stage config.stage names; rerunning with the same config and workdir resumes
    where a killed run stopped. Returns the summary once the report is written, else {}.

    Multi-host (`--distributed`): every process runs this; each stores the rows its devices captured
    (`store.ProcessStores`), the fits run on the global mesh, and process 0 writes probes, scores and the report."""
    jobs.check_workdir(workdir)
    capturing = c.stage in ("all", "capture")
    pipe = jobs.load_checked_pipeline(c, weights=capturing)  # the later stages need its shapes only
    layers, steps = check_config(c, pipe)
    request = capture_request(c, layers, steps)
    if capturing:
        jobs.check_memory(pipe, c.resolution, c.resolution, c.batch_size, jnp.float32,
                          holds=capture_holds(pipe, request))
    workdir = jobs.claim(workdir, {**c.to_dict(), "weights_sha256": jobs.weights_fingerprint(c.pipeline_dir)},
                         kind="sweep", may_change=STAGE_KEYS)
    data = make_dataset(c)
    act_store = store.ProcessStores(workdir / "activations", jax.process_index(), jax.process_count())
    every = c.stage == "all"
    if capturing:
        capture_all(c, pipe, request, data, act_store)
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
        task_labels = labels_for(c, workdir)
        fit_and_score(c, workdir, act_store, task_labels, layers, steps)
        write_references(workdir, task_labels, split_rows(c), probed_grids(c, pipe, layers), steps)
        mesh.barrier("fit")  # process 0 wrote every score
        if not every:
            tqdm.write(f"probes and scores are in {workdir.absolute()}; next: --config.stage=report")
            return {}
    _require(all(scores_path(workdir, m, t, s).exists() for m in (*c.models, *REFERENCES) for t in c.tasks
                 for s in split_rows(c)),
             workdir, "fit")
    summary = write_report(c, workdir, act_store, layers, data) if mesh.is_main() else {}
    mesh.barrier("report")
    return summary


def _require(done: bool, workdir: Path, stage: str) -> None:
    if not done:
        raise ValueError(f"{workdir} has not finished the {stage} stage: run --config.stage={stage} (or 'all') first")
