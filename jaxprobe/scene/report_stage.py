"""The sweep's report stage: results.csv (model,task,layer,step,split,metric,value), summary.json and the figures,
from the per-image scores the fit stage saved; and the one-line headlines a launcher prints."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from jaxprobe import io
from jaxprobe.probing import report, store
from jaxprobe.scene import baselines, figures
from jaxprobe.scene import layers as scene_layers
from jaxprobe.scene.tasks import BY_NAME
from jaxprobe.scene.fit_stage import load_scores, scores_path, split_rows, spread_path
from jaxprobe.scene.reference_stage import REFERENCES
from jaxprobe.scene.sweep_data import Dataset


def write_report(c, workdir: Path, act_store: store.ActivationStore, layers: Sequence[str], data: Dataset) -> dict:
    """results.csv, summary.json and the figures, from the saved per-image scores. The summary's cells are chosen
    on the validation split (on test when config.num_val = 0), its values are the test split's."""
    tqdm.write(f"writing results.csv, summary.json and figures to {workdir.absolute()}")
    rows, by_split = [], {}
    for model in (*c.models, *REFERENCES):
        for task in c.tasks:
            for split in split_rows(c):
                scores = load_scores(scores_path(workdir, model, task, split))
                rows += report.score_rows(scores, model=model, task=task, split=split)
                by_split.setdefault(split, {}).setdefault(model, {})[task] = scores
    report.write_results_csv(workdir / "results.csv", rows)
    order = list(layers) + ([baselines.VAE_LAYER] if baselines.vae_models(c.models) else [])
    summary = report.summarize(by_split["test"], tasks=[BY_NAME[t] for t in c.tasks], layer_order=order,
                               reference=figures.REFERENCE_MODEL, layer_names=scene_layers.names,
                               select_on=by_split.get("val"))
    _add_seed_spread(c, workdir, summary)
    io.write_json(workdir / "summary.json", {"config": c.to_dict(), "summary": summary})
    test_rows = [r for r in rows if r["split"] == "test"]
    first_step = min(r["step"] for r in test_rows)  # the earliest selected step; step 0 need not be one
    figs = workdir / "figures"
    for task in c.tasks:
        metric = BY_NAME[task].headline
        figures.heatmap_figure(test_rows, task, metric, figs / f"heatmap_{task}_{metric}.png", layer_order=order,
                               models=(*c.models, *REFERENCES))
        figures.curves_figure(test_rows, task, metric, figs / f"curves_{task}_{metric}.png", layer_order=order)
        figures.layer_profile_figure(test_rows, task, metric, figs / f"layers_{task}_{metric}.png", layer_order=order,
                                     step=first_step)
    _prediction_figure(c, workdir, act_store, data, figs / "predictions.png")
    return summary


def _prediction_figure(c, workdir, act_store, data: Dataset, path) -> None:
    if "trained" not in c.models or not {"saliency", "depth"} <= set(c.tasks):  # the trained probes' predictions
        return
    best = {t: np.load(workdir / "scores" / f"best_{t}.npz", allow_pickle=False) for t in ("saliency", "depth")}
    idx = best["saliency"]["index"]
    images = data.images[idx] if data.images is not None else act_store.read("images")[idx]
    figures.prediction_grid(path, images, best["saliency"]["truth"], best["saliency"]["pred"],
                            best["depth"]["truth"], best["depth"]["pred"],
                            titles=[data.prompts[i] for i in idx],
                            suptitle=" | ".join(f"{t}: {scene_layers.short_layer_name(str(best[t]['layer']))} step "
                                                f"{int(best[t]['step'])}" for t in ("saliency", "depth")))


def _add_seed_spread(c, workdir: Path, summary: dict) -> None:
    """The fit stage's probe-seed spread of each task (`fit_stage.seed_spread`) under the trained model's best cell:
    best['seed_spread'] = {seeds, test: [one value per seed], std: their sample standard deviation}."""
    if "trained" not in c.models or c.probe.headline_seeds < 2:
        return
    for task, entry in summary["trained"].items():
        path = spread_path(workdir, task)
        if not path.exists():
            raise ValueError(f"{workdir} has no probe-seed spread of {task} ({path.name}): rerun --config.stage=fit")
        spread = json.loads(path.read_text())
        best = entry["best"]
        if (spread["layer"], spread["step"]) != (best["layer"], best["step"]):
            raise ValueError(f"{path} refit {spread['layer']} step {spread['step']}, but the summary chose "
                             f"{best['layer']} step {best['step']}: the scores changed after the fit")
        best["seed_spread"] = {"seeds": spread["seeds"], "test": spread["test"],
                               "std": float(np.std(spread["test"], ddof=1))}


def headline(summary: dict) -> list[str]:
    """One line per (task, model): the best cell (and the split that chose it; with the spread of its test value
    over probe seeds when the fit stage refit it) and, for the trained model, the paired gap to each baseline AT
    THAT CELL (`report.summarize`'s 'gap'), which is not the difference of the two models' best cells."""
    lines = []
    for model, by_task in summary.items():
        for task, s in by_task.items():
            b = s["best"]
            spread = (f" ± {b['seed_spread']['std']:.3f} over {len(b['seed_spread']['seeds'])} probe seeds"
                      if "seed_spread" in b else "")
            line = (f"{task:8s} {model:10s} best {s['metric']} {b['mean']:.3f} "
                    f"[{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]{spread} at {b['short']} step {b['step']} "
                    f"(chosen on {s['selected_on']})")
            for base, g in s.get("gap", {}).items():
                line += (f"; vs {base} at this cell (paired, + = {model} better): {g['mean']:+.3f} "
                         f"[{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
            lines.append(line)
    return lines
