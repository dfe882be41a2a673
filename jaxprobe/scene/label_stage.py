"""The sweep's label stage: each task's label source (exact for encoded scenes, else from the config), checked
before any work, then labels/ written once per workdir and read back prepared for the probes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from jaxprobe import jobs, mesh, validate
from jaxprobe.probing import store
from jaxprobe.scene import baselines, capture, labels
from jaxprobe.scene.sweep_data import Dataset, expected_index


def label_sources(c) -> dict[str, labels.Source]:
    """Each task's label source: exact for encoded scenes, else from config (`labels.sources`)."""
    if c.data == "encoded":
        return {task: labels.Source("exact") for task in c.tasks}
    return labels.sources(c, c.tasks)


def check_label_sources(c, pipe, layers: Sequence[str]) -> None:
    """Every task has one label source, and it fits: the user's files match the images' index (order, count) and
    a size the probes can use (headers only), a DPT directory holds a DPT, the toy labelers take these images."""
    if c.data != "encoded":  # a DPT's depth is inverse already: names config.tasks, so outside labels_dir's key
        labels.check_inverse_depth(c, c.tasks)
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
        if baselines.vae_models(c.models):
            grids.append((c.resolution // pipe.vae_scale_factor,) * 2)
        with validate.config_key("labels_dir"):
            labels.check_files(srcs, expected_index(c), grids, (c.resolution, c.resolution))


def label(c, workdir: Path, data: Dataset, act_store: store.ProcessStores) -> None:
    """Write labels/ (raw labels per task and where they came from), unless the same sources already wrote it.
    Labels from other sources are refused: the workdir's probes and scores were fitted on the first ones."""
    srcs = label_sources(c)
    record = {task: {"source": str(src), "sha256": jobs.weights_fingerprint(src.path) if src.path else ""}
              for task, src in srcs.items()}
    directory = workdir / "labels"
    if labels.check_saved(directory, record):  # same content, wherever its files lie now; other content refused
        tqdm.write(f"labels: already in {directory.absolute()}")
        return
    tqdm.write("labels: " + "; ".join(f"{task} from {src}" for task, src in srcs.items()))
    exact = {"saliency": data.salient, "depth": data.depth}
    arrays = labels.make(c, srcs, lambda: act_store.read("images"), exact)
    labels.prepare(arrays, c.num_train)  # refuses labels the probes cannot use, before they are saved
    if mesh.is_main():
        labels.save(directory, arrays, record)
    mesh.barrier("labels")


def labels_for(c, workdir: Path) -> dict[str, np.ndarray]:
    """The label stage's labels, prepared for the probes: masks bool, depth (and inverse depth) z-scored with the
    train split's global mean/std."""
    raw = labels.load(workdir / "labels", c.tasks)
    if raw is None:
        raise ValueError(f"{workdir} has no labels yet: run --config.stage=label first")
    return labels.prepare(raw, c.num_train)
