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

PIXELS = "pixels"  # the raw-pixel baseline's model and module name (sweep.PIXELS)
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
    """The paper's module x family table at the last checkpoint, per concept: the trained model's test accuracy per
    family, then each family's 95 % interval (`<family>_ci_low`, `<family>_ci_high`); the raw-pixel baseline is the
    module `pixels` (if the rows hold it)."""
    last = max(int(r["step"]) for r in rows)
    cell = {(r["task"], r["layer"], r["family"]): r for r in rows if int(r["step"]) == last
            and r["model"] in ("trained", PIXELS) and r["split"] == "test"}
    concepts = list(dict.fromkeys(r["task"] for r in rows))
    modules = [*layers, *([PIXELS] if any(r["model"] == PIXELS for r in rows) else [])]
    out = []
    for t in concepts:
        for m in modules:
            here = {f: cell[(t, m, f)] for f in families}
            out.append({"concept": t, "module": m, "step": last,
                        **{f: round(float(here[f]["value"]), 4) for f in families},
                        **{f"{f}_{k}": round(float(here[f][k]), 4) for f in families for k in ("ci_low", "ci_high")}})
    return out


def intervals_figure(path, rows: Sequence[dict], concept: str, family: str, layers: Sequence[str]) -> None:
    """Test accuracy per module at the last checkpoint with its 95 % interval (a band), for the trained model and
    the shuffled control, and the raw-pixel baseline as a horizontal band: what a difference must exceed."""
    last = max(int(r["step"]) for r in rows)
    picked = [r for r in rows if r["task"] == concept and r["split"] == "test" and int(r["step"]) == last]
    fig = Figure(figsize=(max(6.0, 0.45 * len(layers) + 2.5), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(layers))
    for model, colour in (("trained", "C0"), ("shuffled", "C7")):
        by_layer = {r["layer"]: r for r in picked if r["model"] == model}
        if not by_layer:
            continue
        v = np.array([[float(by_layer[l][k]) for k in ("value", "ci_low", "ci_high")] for l in layers])
        ax.plot(x, v[:, 0], marker="o", color=colour, label=model)
        ax.fill_between(x, v[:, 1], v[:, 2], color=colour, alpha=0.2, linewidth=0)
    base = [r for r in picked if r["model"] == PIXELS]
    if base:
        b = base[0]
        ax.axhline(float(b["value"]), color="C3", linestyle="--", label="pixels (mean RGB)")
        ax.axhspan(float(b["ci_low"]), float(b["ci_high"]), color="C3", alpha=0.12, linewidth=0)
    ax.set_xticks(x, layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (95 % interval)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(f"{concept}, {family}: per module at step {last}")
    report.save_figure(fig, path)


def write_report(workdir, rows: Sequence[dict], families: Sequence[str], layers: Sequence[str],
                 quality: Sequence[dict], label_grid: dict | None = None) -> dict:
    """Per family results.csv (the means), intervals.csv (the test rows with their 95 % intervals) and figures
    (the what-where-when maps of the means; the per-module intervals at the last checkpoint), table.csv and
    summary.json (with the 2x2 `label_grid`'s best rows, if given); returns the summary."""
    workdir = Path(workdir)
    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    for family in families:
        out = workdir / family
        report.write_results_csv(out / "results.csv", [{k: r[k] for k in report.COLUMNS} for r in by_family[family]])
        columns = [*report.COLUMNS, "ci_low", "ci_high"]
        io.write_csv(out / "intervals.csv", [{k: r[k] for k in columns} for r in by_family[family]
                                             if r["split"] == "test"], columns)
        typed = report.read_results_csv(out / "results.csv")
        for concept in dict.fromkeys(r["task"] for r in typed):
            report.heatmap_figure(typed, concept, "accuracy", out / "figures" / f"{concept}.png",
                                  layer_order=layers, models=("trained", PIXELS, "shuffled"),
                                  xlabel="checkpoint (training step)",
                                  what=f"{family}, per module and checkpoint")
            intervals_figure(out / "figures" / f"{concept}_intervals.png", by_family[family], concept, family, layers)
    tab = table(rows, families, layers)
    io.write_csv(workdir / "table.csv", tab, list(tab[0]))
    summary = {"families": list(families), "last_step": tab[0]["step"], "label_quality": list(quality),
               "best_module_at_last_checkpoint": _best(tab, families),
               "best_module_ci95": _best(tab, families, ci=True),
               "pixels_at_last_checkpoint": _pixels(tab, families)}
    if label_grid:
        summary["label_grid"] = label_grid
    io.write_json(workdir / "summary.json", summary)
    return summary


def _best(tab: Sequence[dict], families: Sequence[str], ci: bool = False) -> dict:
    """{concept: {family: [module, test accuracy]}} (or, with `ci`, [module, accuracy, ci_low, ci_high]) at the
    last checkpoint, over the network's modules."""
    out: dict = defaultdict(dict)
    for f in families:
        for concept in dict.fromkeys(r["concept"] for r in tab):
            best = max((r for r in tab if r["concept"] == concept and r["module"] != PIXELS), key=lambda r: r[f])
            out[concept][f] = [best["module"], best[f], *([best[f"{f}_ci_low"], best[f"{f}_ci_high"]] if ci else [])]
    return dict(out)


def _pixels(tab: Sequence[dict], families: Sequence[str]) -> dict:
    """{concept: {family: [accuracy, ci_low, ci_high]}} of the raw-pixel baseline ({} without it)."""
    return {r["concept"]: {f: [r[f], r[f"{f}_ci_low"], r[f"{f}_ci_high"]] for f in families}
            for r in tab if r["module"] == PIXELS}
