"""The sweep's fit stage: every (model, task) unit's probes fitted a layer part at a time, on every process (the SGD
fits run on the global mesh), then scored and written by process 0 alone: probes/<model>_<task>.safetensors
(`jaxprobe.probing.saved`), scores/<model>_<task>_<split>.npz, and the best trained probe's test predictions. A
rerun skips the units already scored."""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxprobe import io, jobs, mesh
from jaxprobe.probing import fit, probes, report, ridge, saved, store
from jaxprobe.probing.tasks import Task
from jaxprobe.scene import baselines
from jaxprobe.scene.tasks import BY_NAME

RIDGE_VAL_FRACTION = 0.2  # ridge picks each probe's lambda on this seeded fraction of the train split
SPLITS = ("train", "test")


def fit_and_score(c, workdir: Path, act_store: store.ProcessStores, task_labels: dict, layers: Sequence[str],
                  steps: Sequence[int]) -> None:
    """Fit and score every (model, task) unit not already scored (`fit_unit`, every process), then write its
    probes, scores and predictions (`save_unit`, process 0). Process 0 alone fits ridge probes (no collectives)."""
    units = [(m, t) for m in c.models for t in c.tasks  # decided once, so that every process runs the same fits
             if not all(scores_path(workdir, m, t, s).exists() for s in SPLITS)]
    if not mesh.is_main() and c.probe.kind == "ridge":
        return
    for model, task in tqdm(units, desc="probes", unit="fit", disable=not mesh.is_main()):
        names = [baselines.VAE_LAYER] if model in baselines.VAE_MODELS else list(layers)
        fitted, scores = fit_unit(c, workdir, act_store, model, task, names, task_labels[task])
        if mesh.is_main():
            save_unit(c, workdir, act_store, model, task, fitted, scores, task_labels[task], steps)


def fit_unit(c, workdir: Path, act_store: store.ProcessStores, model: str, task: str, layers: Sequence[str],
             y: np.ndarray) -> tuple[dict, dict]:
    """One unit's probes {(layer, step index): params} and, on process 0, their per-image scores {split: {(layer,
    step index): {metric: [N]}}} (empty elsewhere). `y`: the task's labels of every image, train split first.

    The layers are read from the store a part at a time (`layer_parts`: config.fit_memory_gb), the part's train rows
    for the fit and the train scores, then its test rows; no probe depends on which layers share its part."""
    n = c.num_train + c.num_test
    train, test = np.arange(c.num_train), np.arange(c.num_train, n)
    rows = max(c.num_train, c.num_test)  # a part is read one split at a time
    parts = layer_parts({name: act_store.row_bytes(f"{model}/{name}") * rows for name in layers}, c.fit_memory_gb)
    spec, fitted, scores = BY_NAME[task], {}, {split: {} for split in SPLITS}
    for part in tqdm(parts, desc=f"{model} {task}: layer parts", unit="part", leave=False,
                     disable=len(parts) == 1 or not mesh.is_main()):
        acts = {layer: act_store.read(f"{model}/{layer}", rows=train) for layer in part}
        checkpoints = workdir / "probe_checkpoints" / f"{model}_{task}"
        if len(parts) > 1:  # named by its layers, so that another split of the layers starts afresh
            checkpoints /= f"layers_{zlib.crc32(chr(0).join(part).encode()):08x}"
        got = _fit_part(c.probe, acts, y[train], spec, checkpoints)
        fitted.update(got)
        if not mesh.is_main():
            continue
        scores["train"].update(probes.evaluate_sweep(got, acts, y[train], spec))
        del acts
        acts = {layer: act_store.read(f"{model}/{layer}", rows=test) for layer in part}
        scores["test"].update(probes.evaluate_sweep(got, acts, y[test], spec))
        del acts
    return fitted, scores


def _fit_part(p, acts: dict, y: np.ndarray, task: Task, checkpoints: Path) -> dict:
    """The probes of one layer part, by config.probe.kind: ridge in closed form on block-mean targets
    (probe.label_mode, epochs, lr do not apply), else `fit.fit_sweep` checkpointed per epoch."""
    if p.kind == "ridge":
        return ridge.fit_ridge_sweep(acts, y, task, seed=p.seed, val_fraction=RIDGE_VAL_FRACTION)[0]
    return fit.fit_sweep(acts, y, task, kind=p.kind, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, seed=p.seed,
                         label_mode=p.label_mode, hidden=p.hidden, checkpoint_dir=checkpoints.absolute())


def save_unit(c, workdir: Path, act_store: store.ProcessStores, model: str, task: str, fitted: dict, scores: dict,
              y: np.ndarray, steps: Sequence[int]) -> None:
    """Process 0: the unit's probes (keyed by denoising step, with the config and the pipeline's fingerprint),
    its scores per split and, for the trained model, the best probe's test predictions."""
    saved.save(saved.path_for(workdir / "probes", model, BY_NAME[task]), saved.SavedProbes(
        model=model, task=BY_NAME[task], kind=c.probe.kind, probes={(layer, steps[i]): v for (layer, i), v in fitted.items()},
        meta={**json.loads((workdir / "config.json").read_text()),
              "pipeline_sha256": jobs.weights_fingerprint(c.pipeline_dir)}))
    for split in SPLITS:
        _save_scores(scores_path(workdir, model, task, split), report.with_denoising_steps(scores[split], steps))
    if model == "trained":
        test = np.arange(c.num_train, c.num_train + c.num_test)
        _save_predictions(workdir, task, fitted, act_store, test, y[test], steps)


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


def scores_path(workdir: Path, model: str, task: str, split: str) -> Path:
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
    scores = load_scores(scores_path(workdir, "trained", task, "test"))
    metric = BY_NAME[task].headline
    pick = min if report.LOWER_IS_BETTER[metric] else max
    layer, step = pick(scores, key=lambda k: float(np.mean(scores[k][metric])))
    index = list(steps).index(step)
    k = test[:8]
    x = jnp.asarray(np.asarray(act_store.read(f"trained/{layer}", rows=k)[:, index], np.float32))
    pred = probes.predict(fitted[(layer, index)], x, truth.shape[1:])
    with io.atomic_path(workdir / "scores" / f"best_{task}.npz") as tmp:
        np.savez(tmp, pred=np.asarray(pred), truth=truth[:len(k)], index=k, layer=np.str_(layer), step=step)
