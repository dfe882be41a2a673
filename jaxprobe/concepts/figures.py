"""What the concept sweep writes for people: per family results.csv and what-where-when maps, the module x family
table at the last checkpoint, and the label-quality grid of each concept's top positives."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxprobe import io
from jaxprobe.probing import report

RANKS = tuple(range(0, 100, 5))  # 0-based ranks 1, 6, ..., 96 of the top positives, as the paper's post shows


def top_positives_figure(path, concept_sets, images: np.ndarray, ranks: Sequence[int] = RANKS) -> None:
    """One row per concept: its positives at `ranks` (best score first), so the labels can be judged by eye."""
    ranks = [r for r in ranks if r < min(len(cs.positives) for cs in concept_sets)]
    fig = Figure(figsize=(0.75 * len(ranks) + 1.2, 0.8 * len(concept_sets) + 0.5), layout="constrained")
    axes = fig.subplots(len(concept_sets), len(ranks), squeeze=False)
    for row, cs in zip(axes, concept_sets):
        for ax, r in zip(row, ranks):
            ax.imshow(images[cs.positives[r]])
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(cs.concept, fontsize=9)
    for ax, r in zip(axes[0], ranks):
        ax.set_title(str(r + 1), fontsize=7)
    fig.suptitle("top positives per concept (rank)", fontsize=10)
    report.save_figure(fig, path)


def table(rows: Sequence[dict], families: Sequence[str], layers: Sequence[str]) -> list[dict]:
    """The paper's module x family table: test accuracy of the trained model at the last checkpoint, per concept."""
    last = max(int(r["step"]) for r in rows)
    cell = {(r["task"], r["layer"], r["family"]): float(r["value"]) for r in rows
            if int(r["step"]) == last and r["model"] == "trained" and r["split"] == "test"}
    concepts = list(dict.fromkeys(r["task"] for r in rows))
    return [{"concept": t, "module": l, "step": last, **{f: round(cell[(t, l, f)], 4) for f in families}}
            for t in concepts for l in layers]


def write_report(workdir, rows: Sequence[dict], families: Sequence[str], layers: Sequence[str],
                 quality: Sequence[dict]) -> dict:
    """results.csv and figures per family, table.csv and summary.json; returns the summary."""
    workdir = Path(workdir)
    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append({k: r[k] for k in report.COLUMNS})
    for family in families:
        out = workdir / family
        report.write_results_csv(out / "results.csv", by_family[family])
        typed = report.read_results_csv(out / "results.csv")
        for concept in dict.fromkeys(r["task"] for r in typed):
            report.heatmap_figure(typed, concept, "accuracy", out / "figures" / f"{concept}.png",
                                  layer_order=layers, models=("trained", "shuffled"),
                                  xlabel="checkpoint (training step)",
                                  what=f"{family}, per module and checkpoint")
    tab = table(rows, families, layers)
    io.write_csv(workdir / "table.csv", tab, list(tab[0]))
    summary = {"families": list(families), "last_step": tab[0]["step"], "label_quality": list(quality),
               "best_module_at_last_checkpoint": _best(tab, families)}
    io.write_json(workdir / "summary.json", summary)
    return summary


def _best(tab: Sequence[dict], families: Sequence[str]) -> dict:
    """{concept: {family: [module, test accuracy]}} at the last checkpoint."""
    out: dict = defaultdict(dict)
    for f in families:
        for concept in dict.fromkeys(r["concept"] for r in tab):
            best = max((r for r in tab if r["concept"] == concept), key=lambda r: r[f])
            out[concept][f] = [best["module"], best[f]]
    return dict(out)
