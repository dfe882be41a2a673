"""The sweep's reference points, written beside the fit stage's scores as two more models of results.csv: 'prior'
(the train rows' mean label map, what location alone gives) and 'ceiling' (each label block-averaged to a probed
layer's token grid, the best a per-token probe can score there); see `jaxprobe.probing.references`.

Both are scored in the fit stage's format (`fit_stage.save_scores`), keyed (layer, denoising step), so that
curves, heatmaps and summaries read them as they read a baseline: the prior as one layer, `PRIOR_LAYER`, with the
same per-image values at every captured step (a flat reference), the ceiling at every probed layer and step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from jaxprobe import mesh
from jaxprobe.probing import references
from jaxprobe.scene import capture
from jaxprobe.scene.fit_stage import save_scores, scores_path
from jaxprobe.scene.tasks import BY_NAME

REFERENCES = ("prior", "ceiling")  # results.csv models, always written, never fitted
PRIOR_LAYER = "mean_label"


def probed_grids(c, pipe, layers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{layer: the token grid its probes read}: its output grid at config.resolution, pooled by config.store_pool
    as the capture stores it. Layers without a token grid are left out (they have no per-token ceiling)."""
    grids = capture.token_grids(pipe, layers, c.resolution, c.resolution)
    return {layer: (g[0] // c.store_pool, g[1] // c.store_pool) for layer, g in grids.items() if g}


def write_references(workdir: Path, task_labels: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray],
                     grids: Mapping[str, tuple[int, int]], steps: Sequence[int]) -> None:
    """Process 0: scores/{prior,ceiling}_<task>_<split>.npz for every task of `task_labels` ({task: labels of every
    image, as the probes are fitted and scored on them}) and every split of `rows` ({split: row indices}, 'train'
    the fit rows the prior is the mean of), at every denoising step of `steps`; a rerun skips what is written."""
    if not mesh.is_main():
        return
    if "train" not in rows:
        raise ValueError(f"the references need the 'train' (fit) rows; splits given: {', '.join(rows)}")
    for task, y in task_labels.items():
        spec = BY_NAME[task]
        for split, idx in rows.items():
            path = scores_path(workdir, "prior", task, split)
            if not path.exists():
                per_image = references.score_prior(y[rows["train"]], y[idx], spec)
                save_scores(path, {(PRIOR_LAYER, int(s)): per_image for s in steps})
            path = scores_path(workdir, "ceiling", task, split)
            if not path.exists():
                by_grid = {g: references.score_ceiling(y[idx], g, spec) for g in set(grids.values())}
                save_scores(path, {(layer, int(s)): by_grid[g] for layer, g in grids.items() for s in steps})
