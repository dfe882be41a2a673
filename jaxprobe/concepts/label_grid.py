"""The 2x2 of label source x negatives at one checkpoint: which findings come from the labels, not the network.

Label source: "clip" (the concept scores of the paper's recipe) or "truth" (the toy cards' exact concepts, one-hot
through the same set-making code). Negatives (`sets.NEGATIVES`): "others" (the paper: random images that are not
positives, so they carry a common concept at about its base rate) or "non_candidates" (random images whose group
softmax does not put the concept on top; under "truth", images without the concept). The four cells, named
"<labels>/<negatives>": clip/others is the paper's recipe, truth/non_candidates the clean control.

Every cell probes every module of one checkpoint (the sweep runs the last) with each family, beside the raw-pixel
baseline on the same sets; test accuracies carry their 95 % intervals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from jaxprobe import io
from jaxprobe.concepts import sets

COLUMNS = ("cell", "labels", "negatives", "family", "model", "concept", "module", "accuracy", "ci_low", "ci_high")
BEST_COLUMNS = ("cell", "family", "concept", "module", "accuracy", "ci_low", "ci_high", "pixels", "pixels_ci_low",
                "pixels_ci_high")


def cell_name(labels: str, negatives: str) -> str:
    return f"{labels}/{negatives}"


def cell_sets(score_by_source: Mapping[str, Mapping[str, np.ndarray]], groups, c) -> dict[str, list]:
    """{cell name: ConceptSets} for every label source in `score_by_source` x every kind of negatives, drawn with
    the sweep's sizes and seed (so a cell equal to the sweep's own setting has the sweep's sets)."""
    return {cell_name(source, neg): sets.make_sets(score, groups, num_positive=c.num_positive,
                                                   num_negative=c.num_negative, test_fraction=c.test_fraction,
                                                   seed=c.seed, negatives=neg)
            for source, score in score_by_source.items() for neg in sets.NEGATIVES}


def grid_rows(cell: str, probe_rows: Sequence[dict]) -> list[dict]:
    """The test rows of one cell's probes (`sweep.probe_rows` output) as rows of `COLUMNS`."""
    labels, negatives = cell.split("/")
    return [{"cell": cell, "labels": labels, "negatives": negatives, "family": r["family"], "model": r["model"],
             "concept": r["task"], "module": r["layer"], "accuracy": r["value"], "ci_low": r["ci_low"],
             "ci_high": r["ci_high"]} for r in probe_rows if r["split"] == "test"]


def best(rows: Sequence[dict], pixels: str) -> list[dict]:
    """Per cell, family and concept: the network's best module (highest test accuracy, first in module order on
    ties) with its interval, beside the raw-pixel baseline (model `pixels`) on the same sets."""
    out = []
    keys = dict.fromkeys((r["cell"], r["family"], r["concept"]) for r in rows)
    for cell, family, concept in keys:
        mine = [r for r in rows if (r["cell"], r["family"], r["concept"]) == (cell, family, concept)]
        top = max((r for r in mine if r["model"] != pixels), key=lambda r: float(r["accuracy"]))
        base, = [r for r in mine if r["model"] == pixels]
        out.append({"cell": cell, "family": family, "concept": concept, "module": top["module"],
                    **{k: float(top[k]) for k in ("accuracy", "ci_low", "ci_high")},
                    "pixels": float(base["accuracy"]), "pixels_ci_low": float(base["ci_low"]),
                    "pixels_ci_high": float(base["ci_high"])})
    return out


def write(directory: Path, rows: Sequence[dict], pixels: str) -> list[dict]:
    """grid.csv (every probe's test accuracy) and best.csv (`best`) in `directory`; returns the best rows."""
    io.write_csv(Path(directory) / "grid.csv", list(rows), list(COLUMNS))
    top = best(rows, pixels)
    io.write_csv(Path(directory) / "best.csv", top, list(BEST_COLUMNS))
    return top
