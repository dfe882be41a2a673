"""The sweep's fit stage: every (model, task) unit's probes fitted a layer part at a time, on every process (the SGD
fits run on the global mesh), then scored and written by process 0 alone: probes/<model>_<task>.safetensors
(`jaxprobe.probing.saved`), scores/<model>_<task>_<split>.npz, and the best trained probe's test predictions; then
the trained model's chosen cell refit with other probe seeds (scores/seeds_<task>.json). A rerun skips what is
written.

Probes are fit on the first num_train - num_val images ('train'), and scored on those, on the last num_val train
images ('val', which chooses every reported cell) and on the test images: `split_rows`."""
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

RIDGE_VAL_FRACTION = 0.2  # ridge picks each probe's lambda on this seeded fraction of its fit rows
SPLITS = report.SPLITS  # train (the fit rows), val, test


def split_rows(c) -> dict[str, np.ndarray]:
    """The image rows of each split the config has: 'train' (the probes' fit rows, the first num_train - num_val),
    'val' (the last num_val train images; absent when num_val = 0) and 'test'. Carving val from the END of the
    train images keeps every image, seed and label where it was."""
    fit_rows = c.num_train - c.num_val
    rows = dict(zip(SPLITS, (np.arange(fit_rows), np.arange(fit_rows, c.num_train),
                             np.arange(c.num_train, c.num_train + c.num_test))))
    return {split: r for split, r in rows.items() if len(r)}


def selection_split(c) -> str:
    """The split that chooses the reported cells: 'val', or 'test' (optimistic, and reported so) without one."""
    return "val" if c.num_val else "test"


def fit_and_score(c, workdir: Path, act_store: store.ProcessStores, task_labels: dict, layers: Sequence[str],
                  steps: Sequence[int]) -> None:
    """Fit and score every (model, task) unit not already scored (`fit_unit`, every process), then write its
    probes, scores and predictions (`save_unit`, process 0). Process 0 alone fits ridge probes (no collectives)."""
    units = [(m, t) for m in c.models for t in c.tasks  # decided once, so that every process runs the same fits
             if not all(scores_path(workdir, m, t, s).exists() for s in split_rows(c))]
    spread = [t for t in c.tasks if "trained" in c.models and c.probe.headline_seeds > 1
              and not spread_path(workdir, t).exists()]
    if not mesh.is_main() and c.probe.kind == "ridge":
        return
    for model, task in tqdm(units, desc="probes", unit="fit", disable=not mesh.is_main()):
        names = [baselines.VAE_LAYER] if model in baselines.VAE_MODELS else list(layers)
        fitted, scores = fit_unit(c, workdir, act_store, model, task, names, task_labels[task])
        if mesh.is_main():
            save_unit(c, workdir, act_store, model, task, fitted, scores, task_labels[task], names, steps)
    if spread and c.probe.kind != "ridge":
        mesh.barrier("trained scores")  # process 0 wrote the scores that choose the cell every process refits
    for task in tqdm(spread, desc="probe seeds", unit="task", disable=not mesh.is_main()):
        seed_spread(c, workdir, act_store, task, task_labels[task], layers, steps)


def fit_unit(c, workdir: Path, act_store: store.ProcessStores, model: str, task: str, layers: Sequence[str],
             y: np.ndarray) -> tuple[dict, dict]:
    """One unit's probes {(layer, step index): params} and, on process 0, their per-image scores {split: {(layer,
    step index): {metric: [N]}}} for every split of `split_rows` (empty elsewhere). `y`: the task's labels of every
    image, in row order; the shuffled-label control fits on them permuted among the fit images
    (`baselines.shuffled_labels`) and is scored, as every model, against the true ones.

    The layers are read from the store a part at a time (`layer_parts`: config.fit_memory_gb), the part's fit rows
    for the fit and the train scores, then its val and test rows; no probe depends on which layers share its
    part."""
    splits = split_rows(c)
    train = splits["train"]
    source = baselines.activations_of(model)
    fit_y = baselines.shuffled_labels(y[train], c.probe.seed) if model == baselines.SHUFFLED else y[train]
    rows = max(map(len, splits.values()))  # a part is read one split at a time
    parts = layer_parts({name: act_store.row_bytes(f"{source}/{name}") * rows for name in layers}, c.fit_memory_gb)
    spec, fitted, scores = BY_NAME[task], {}, {split: {} for split in splits}
    for part in tqdm(parts, desc=f"{model} {task}: layer parts", unit="part", leave=False,
                     disable=len(parts) == 1 or not mesh.is_main()):
        acts = {layer: act_store.read(f"{source}/{layer}", rows=train) for layer in part}
        checkpoints = workdir / "probe_checkpoints" / f"{model}_{task}"
        if len(parts) > 1:  # named by its layers, so that another split of the layers starts afresh
            checkpoints /= f"layers_{zlib.crc32(chr(0).join(part).encode()):08x}"
        got = _fit_part(c.probe, acts, fit_y, spec, checkpoints)
        fitted.update(got)
        if not mesh.is_main():
            continue
        scores["train"].update(probes.evaluate_sweep(got, acts, y[train], spec))  # every split: the true labels
        for split in [s for s in splits if s != "train"]:
            del acts
            acts = {layer: act_store.read(f"{source}/{layer}", rows=splits[split]) for layer in part}
            scores[split].update(probes.evaluate_sweep(got, acts, y[splits[split]], spec))
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
              y: np.ndarray, layers: Sequence[str], steps: Sequence[int]) -> None:
    """Process 0: the unit's probes (keyed by denoising step, with the config and the pipeline's fingerprint),
    its scores per split and, for the trained model, the test predictions of the probe `selection_split` chooses
    (`report.best_cell` over `layers`, as the summary chooses)."""
    saved.save(saved.path_for(workdir / "probes", model, BY_NAME[task]), saved.SavedProbes(
        model=model, task=BY_NAME[task], kind=c.probe.kind, probes={(layer, steps[i]): v for (layer, i), v in fitted.items()},
        meta={**json.loads((workdir / "config.json").read_text()),
              "pipeline_sha256": jobs.weights_fingerprint(c.pipeline_dir)}))
    by_step = {split: report.with_denoising_steps(scores[split], steps) for split in scores}
    for split in by_step:
        save_scores(scores_path(workdir, model, task, split), by_step[split])
    if model == "trained":
        cell = report.best_cell(by_step[selection_split(c)], BY_NAME[task].headline, layers)
        test = split_rows(c)["test"]
        _save_predictions(workdir, task, fitted, act_store, cell, test, y[test], steps)


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


def save_scores(path: Path, scores: dict) -> None:
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


def _save_predictions(workdir, task, fitted, act_store: store.ProcessStores, cell, test, truth, steps) -> None:
    """The chosen trained probe's test predictions for the figure grid (first images of the test split)."""
    layer, step = cell
    index = list(steps).index(step)
    k = test[:8]
    x = jnp.asarray(np.asarray(act_store.read(f"trained/{layer}", rows=k)[:, index], np.float32))
    pred = probes.predict(fitted[(layer, index)], x, truth.shape[1:])
    with io.atomic_path(workdir / "scores" / f"best_{task}.npz") as tmp:
        np.savez(tmp, pred=np.asarray(pred), truth=truth[:len(k)], index=k, layer=np.str_(layer), step=step)


def spread_path(workdir: Path, task: str) -> Path:
    return workdir / "scores" / f"seeds_{task}.json"


def seed_spread(c, workdir: Path, act_store: store.ProcessStores, task: str, y: np.ndarray, layers: Sequence[str],
                steps: Sequence[int]) -> None:
    """How much the headline moves with the probe's seed: the trained model's chosen cell of `task` (chosen as
    `save_unit` and the summary choose it) refit with seeds config.probe.seed + 1 .. + headline_seeds - 1 on the
    same fit rows by the same recipe (`refit_cell`), each scored on test. Every process fits; process 0 writes
    spread_path: {layer, step, metric, seeds, test: [the sweep's own value, then each refit's]}."""
    spec, splits = BY_NAME[task], split_rows(c)
    choose = load_scores(scores_path(workdir, "trained", task, selection_split(c)))
    layer, step = report.best_cell(choose, spec.headline, layers)
    index = list(steps).index(step)
    seeds = [c.probe.seed + k for k in range(c.probe.headline_seeds)]
    x = cell_activations(act_store, f"trained/{layer}", splits["train"], index, c.batch_size)
    refits = [refit_cell(c.probe, x, y[splits["train"]], spec, layer, index, seed) for seed in seeds[1:]]
    if not mesh.is_main():
        return
    x = cell_activations(act_store, f"trained/{layer}", splits["test"], index, c.batch_size)
    values = [float(np.mean(load_scores(scores_path(workdir, "trained", task, "test"))[layer, step][spec.headline]))]
    for params in refits:
        got = probes.evaluate_sweep({(layer, 0): params}, {layer: x}, y[splits["test"]], spec)
        values.append(float(np.mean(got[layer, 0][spec.headline])))
    io.write_json(spread_path(workdir, task), {"layer": layer, "step": int(step), "metric": spec.headline,
                                               "seeds": seeds, "test": values})


def cell_activations(act_store: store.ProcessStores, name: str, rows: np.ndarray, index: int,
                     batch: int) -> np.ndarray:
    """One captured step's activations of `rows`, [N, 1, ...]: read `batch` rows at a time, so that memory holds
    that step, not the layer's every step."""
    return np.concatenate([act_store.read(name, rows=part)[:, index:index + 1]
                           for part in np.array_split(rows, -(-len(rows) // batch))])


def refit_cell(p, x: np.ndarray, y: np.ndarray, task: Task, layer: str, index: int, seed: int):
    """The probe of one cell (layer, capture index) fit on its activations x [N, 1, ...] with probe seed `seed`, by
    config.probe's recipe as `_fit_part` fits the sweep: ridge by `ridge.fit_ridge_sweep`, SGD by `fit.fit_group`
    (what `fit.fit_sweep` fits each shape group with) under the cell's own init key, so that seed =
    config.probe.seed gives the sweep's probe again. -> its params."""
    if p.kind == "ridge":
        return ridge.fit_ridge_sweep({layer: x}, y, task, seed=seed, val_fraction=RIDGE_VAL_FRACTION)[0][layer, 0]
    keys = probes.probe_key(seed, (layer, index))[None]
    stacked = fit.fit_group(x, y, task, kind=p.kind, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                            seed=seed, label_mode=p.label_mode, hidden=p.hidden, keys=keys)
    return probes.unstack([(layer, index)], stacked)[layer, index]
