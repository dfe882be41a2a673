"""What a spatial task's score means next to what is free: two references scored exactly as probes are
(`probes.score`, the task's metrics at label resolution).

- prior: the fit rows' mean label map predicts every image: what location alone gives. Mask tasks: the mean mask is
  a probability map, its classes the pixels above 0.5 (as a probe's argmax), its ranking metrics ('ap') the map.
- ceiling at a token grid: each image's own label block-averaged to the grid and nearest-upsampled back as a
  probe's prediction is (`probes.upsample`), mask tasks thresholded at 0.5 likewise: the best any per-token probe
  can score at that resolution.

Labels are the ones the probes are fitted and scored on (masks; dense maps in their probe space, e.g. z-scored
depth). Images are scored a chunk at a time (`probes.chunk_size`), so memory stays within `probes.EVAL_BYTES`.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxprobe.probing import probes
from jaxprobe.probing.tasks import Task, check_task


def prior_map(fit_labels, task: Task) -> np.ndarray:
    """The fit rows' mean label map: fit_labels [N, H, W] -> [H, W] (mask tasks: the positive fraction per pixel)."""
    task = _spatial(task)
    fit_labels = probes.check_labels(fit_labels, task)
    return np.asarray(probes.truth_of(fit_labels, task).mean(axis=0, dtype=np.float64), np.float32)


def ceiling_map(labels, grid_hw: tuple[int, int], task: Task) -> np.ndarray:
    """Each label map block-averaged to the `grid_hw` token grid and nearest-upsampled back: [N, H, W] -> [N, H, W]
    (mask tasks: the positive fraction of each pixel's token block). The grid must divide the label size."""
    task = _spatial(task)
    labels = probes.check_labels(labels, task)
    means = probes.blocks(jnp.asarray(probes.truth_of(labels, task), jnp.float32), tuple(grid_hw)).mean(axis=(2, 4))
    return np.asarray(probes.upsample(means, tuple(labels.shape[1:])))


def score_prior(fit_labels, labels, task: Task) -> dict[str, np.ndarray]:
    """Per-image scores {metric: [N]} of the `prior_map` of fit_labels [M, H, W] predicting labels [N, H, W]."""
    prior = prior_map(fit_labels, task)
    labels = probes.check_labels(labels, task)
    if prior.shape != labels.shape[1:]:
        raise ValueError(f"the prior's fit labels are {prior.shape[0]}x{prior.shape[1]} but the scored labels are "
                         f"{labels.shape[1]}x{labels.shape[2]}")
    return _score_chunks(labels, task, lambda rows: np.broadcast_to(prior, (len(rows), *prior.shape)))


def score_ceiling(labels, grid_hw: tuple[int, int], task: Task) -> dict[str, np.ndarray]:
    """Per-image scores {metric: [N]} of the `ceiling_map` of labels [N, H, W] at token grid `grid_hw`."""
    labels = probes.check_labels(labels, _spatial(task))
    probes.factors(grid_hw, labels.shape[1:], f"labels of shape {tuple(labels.shape)} (ceiling)")
    return _score_chunks(labels, task, lambda rows: ceiling_map(labels[rows], grid_hw, task))


def _score_chunks(labels: jnp.ndarray, task: Task, predicted: Callable[[np.ndarray], np.ndarray]) -> dict:
    """`probes.score` of the reference maps `predicted(rows)` [n, H, W] a chunk of images at a time -> {metric: [N]}."""
    chunk = probes.chunk_size(int(np.prod(labels.shape[1:])), task)
    parts = []
    for start in range(0, len(labels), chunk):
        rows = np.arange(start, min(start + chunk, len(labels)))
        value = predicted(rows)
        pred = value > 0.5 if task.kind == "mask" else value
        parts.append(probes.score(pred, probes.truth_of(labels[rows], task), task, value))
    return {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}


def _spatial(task: Task) -> Task:
    if not check_task(task).spatial:
        raise ValueError(f"references need label maps; task {task.name!r} of kind {task.kind!r} has one label per "
                         "image")
    return task
