"""Probe-sweep scores -> the tables (results.csv, a JSON summary) and figures a researcher reads.

Input everywhere is what `probes.evaluate_sweep` returns, `{(layer, step): {metric: per-image scores [N]}}`, with
`step` the denoising step index (`with_denoising_steps` maps capture indices to it). Tables are long: one row per
number, columns `COLUMNS`. Figures are drawn on bare `matplotlib.figure.Figure`s (Agg canvas, no pyplot global
state, so sweeps can plot from threads) and written atomically through `jaxprobe.io`.

Nothing here knows a study: the caller passes its tasks, its models (and which one the others are compared with)
and how its layers are called (`layer_names`, a `LayerNamer`); without a namer a layer is shown by its path.
"""
from __future__ import annotations

import csv
import textwrap
from typing import Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxprobe import io
from jaxprobe.probing import metrics
from jaxprobe.probing.tasks import LOWER_IS_BETTER, Task, check_task
from jaxprobe.validate import check_choice

COLUMNS = ("model", "task", "layer", "step", "split", "metric", "value")
SPLITS = ("train", "val", "test")  # val: carved from the train images, chooses the reported cells

Scores = Mapping[tuple[str, int], Mapping[str, np.ndarray]]


def _direction(metric: str) -> str:
    return "lower is better" if LOWER_IS_BETTER[metric] else "higher is better"


def _better(metric: str):
    """min or max, whichever picks the better of several values of `metric` (first one on ties)."""
    return min if LOWER_IS_BETTER[metric] else max


# ------------------------------------------------------------------------------------------------ layer names

# A namer takes layer paths and returns {path: (tick-label-sized name, resolution level or None)} for the paths it
# knows (level 0 = full resolution, growing towards the bottleneck); a study passes its own (the scene study's
# UNet/VAE names: `jaxprobe.scene.layers.names`). A path the namer does not know is shown as it is.
LayerNamer = Callable[[Sequence[str]], Mapping[str, tuple[str, int | None]]]
# A styler takes layer paths and returns {path: matplotlib line keyword arguments} for `curves_figure`.
LayerStyler = Callable[[Sequence[str]], Mapping[str, dict]]
# A grouper takes layer paths and returns {path: group name} (e.g. the transformer a block of it belongs to): above
# MAX_LAYER_LABELS layers, figures label groups instead of layers (SDXL's 70 attn1 layers).
LayerGrouper = Callable[[Sequence[str]], Mapping[str, str]]
MAX_LAYER_LABELS = 32


def name_layers(layers: Sequence[str], namer: LayerNamer | None = None) -> dict[str, tuple[str, int | None]]:
    """{path: (short name, resolution level)} by `namer`; (path, None) for a path it does not know (or no namer)."""
    known = dict(namer(list(layers))) if namer is not None else {}
    return {l: known.get(l, (l, None)) for l in layers}


def _short(layers: Sequence[str], namer: LayerNamer | None) -> list[str]:
    names = name_layers(layers, namer)
    return [names[l][0] for l in layers]


def _groups(layers: Sequence[str], grouper: LayerGrouper | None) -> dict[str, list[str]] | None:
    """{group: its layers, in order} when `grouper` is given and there are more than MAX_LAYER_LABELS layers; None
    (one label per layer) otherwise."""
    if grouper is None or len(layers) <= MAX_LAYER_LABELS:
        return None
    named = grouper(list(layers))
    groups: dict[str, list[str]] = {}
    for l in layers:
        groups.setdefault(named.get(l, l), []).append(l)
    return groups


def _ordered(layers, layer_order: Sequence[str]) -> list[str]:
    """`layers` in `layer_order`; layers it does not list (a baseline's own, e.g. the VAE's) follow, as first seen."""
    present = list(dict.fromkeys(layers))
    return [l for l in layer_order if l in present] + [l for l in present if l not in layer_order]


# -------------------------------------------------------------------------------------------------- tables


def with_denoising_steps(scores: Scores, steps: Sequence[int]) -> dict:
    """Re-key `evaluate_sweep` output from capture indices to denoising steps: (layer, i) -> (layer, steps[i]).

    `steps` is the `steps` list given to `capture_activations` (after `capture.select_steps`).
    """
    steps = [int(s) for s in steps]
    out = {}
    for (layer, i), per_metric in scores.items():
        if not 0 <= i < len(steps):
            raise ValueError(f"capture index {i} of layer {layer!r} is outside the {len(steps)} captured steps "
                             f"{steps}")
        out[(layer, steps[i])] = per_metric
    return out


def score_rows(scores: Scores, *, model: str, task: str, split: str) -> list[dict]:
    """One row per (layer, step, metric): the mean over images. -> [{model, task, layer, step, split, metric,
    value}], sorted by layer, step, metric so files diff cleanly."""
    check_choice("split", split, SPLITS)
    for what, v in (("model", model), ("task", task)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{what} must be a non-empty string, got {v!r}")
    if not scores:
        raise ValueError(f"no scores for model {model!r}, task {task!r}: the scores dict is empty")
    rows = []
    for (layer, step), per_metric in sorted(scores.items()):
        for metric, values in sorted(per_metric.items()):
            check_choice("metric", metric, LOWER_IS_BETTER)
            values = np.asarray(values, np.float64)
            if values.ndim != 1 or values.size == 0:
                raise ValueError(f"{metric} of ({layer!r}, {step}) must be per-image scores [N], N >= 1; got "
                                 f"shape {values.shape}")
            rows.append({"model": model, "task": task, "layer": layer, "step": int(step), "split": split,
                         "metric": metric, "value": float(values.mean())})
    return rows


def write_results_csv(path, rows: Sequence[dict]) -> None:
    """rows (`score_rows` output, any number of models/tasks concatenated) -> results.csv, written atomically."""
    if not rows:
        raise ValueError("no rows to write to results.csv")
    for r in rows:
        if set(r) != set(COLUMNS):
            raise ValueError(f"a results row must have exactly the columns {', '.join(COLUMNS)}; got "
                             f"{', '.join(r)}")
    io.write_csv(path, list(rows), list(COLUMNS))


def read_results_csv(path) -> list[dict]:
    """results.csv -> rows with `step` as int and `value` as float (the types `score_rows` made)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}; results.csv needs exactly "
                             f"{', '.join(COLUMNS)}")
        return [{**r, "step": int(r["step"]), "value": float(r["value"])} for r in reader]


# ------------------------------------------------------------------------------------------------- summary


def _cell_values(scores: Scores, metric: str, where: str) -> dict[tuple[str, int], np.ndarray]:
    """{(layer, step): per-image [N]} of one metric; every cell must hold it, for the same N images."""
    if not scores:
        raise ValueError(f"no scores for {where}")
    cells = {}
    for cell, per_metric in scores.items():
        if metric not in per_metric:
            raise ValueError(f"{where}: cell {cell} has no {metric!r} scores (has {', '.join(per_metric)})")
        cells[cell] = np.asarray(per_metric[metric], np.float64)
    sizes = {v.shape for v in cells.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise ValueError(f"{where}: every cell needs per-image {metric} scores [N] for the same N; got shapes "
                         f"{sorted(sizes)}")
    return cells


def _ci(values) -> dict:
    mean, lo, hi = metrics.mean_ci(values)
    return {"mean": float(mean), "ci95": [float(lo), float(hi)]}


def how_early(curve: Mapping[int, float], metric: str, *, fraction: float = 0.9) -> dict:
    """The first denoising step at which a layer reaches `fraction` of its final-step quality.

    `curve` maps step -> mean score. Quality is the score itself when higher is better and its reciprocal when
    lower is better, so step s qualifies when score(s) >= fraction * score(final) (Dice, IoU, accuracy) or
    score(s) <= score(final) / fraction (RMSE: at most ~11% more error than at the final step, for 0.9). `final`
    is the largest step in `curve`, so the answer always exists; it is the first qualifying step in step order,
    even if a later step dips below again. Meant for the non-negative headline metrics.
    -> {'step', 'value', 'final_step', 'final_value', 'fraction'}.
    """
    check_choice("metric", metric, LOWER_IS_BETTER)
    if not curve:
        raise ValueError("how_early needs a non-empty {step: score} curve")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    steps = sorted(curve)
    final = curve[steps[-1]]
    ok = (lambda v: v * fraction <= final) if LOWER_IS_BETTER[metric] else (lambda v: v >= fraction * final)
    step = next(s for s in steps if ok(curve[s]))
    return {"step": int(step), "value": float(curve[step]), "final_step": int(steps[-1]),
            "final_value": float(final), "fraction": fraction}


def _cell_order(cells, layer_order: Sequence[str]) -> list[tuple[str, int]]:
    """The cells in layer_order (unlisted layers after, as first seen), each layer's steps ascending."""
    layers = _ordered([l for l, _ in cells], layer_order)
    return [(l, s) for l in layers for s in sorted(s for m, s in cells if m == l)]


def _best(cells: Sequence[tuple[str, int]], means: Mapping, metric: str) -> tuple[str, int]:
    """The cell of `cells` with the best mean; the first of them on ties."""
    return _better(metric)(cells, key=means.get)


def best_cell(scores: Scores, metric: str, layer_order: Sequence[str]) -> tuple[str, int]:
    """The (layer, step) whose mean `metric` over images is best (first in layer_order, then step order, on
    ties): the rule `summarize` chooses its best cell by, for a caller that needs the same cell (a study's
    prediction figure, its seed spread) from the same scores."""
    means = {c: float(v.mean()) for c, v in _cell_values(scores, metric, "best_cell").items()}
    return _best(_cell_order(means, layer_order), means, metric)


def _summarize_one(cells: dict, val: dict | None, metric: str, layer_order: Sequence[str],
                   namer: LayerNamer | None) -> dict:
    """Best cell, per-layer best over steps and 'how early' of one model on one task: every cell chosen by the
    means of `val` (the validation split's per-image scores; None: of `cells` themselves), every value reported
    from `cells` (the test split's)."""
    order = _cell_order(cells, layer_order)
    layers = list(dict.fromkeys(l for l, _ in order))
    choose = {c: float((cells if val is None else val)[c].mean()) for c in order}
    best = _best(order, choose, metric)
    per_layer_cells = [_best([c for c in order if c[0] == l], choose, metric) for l in layers]
    mean, lo, hi = metrics.mean_ci(np.stack([cells[c] for c in per_layer_cells]))  # one batched bootstrap
    short = dict(zip(layers, _short(layers, namer)))
    per_layer = [{"layer": l, "short": short[l], "step": int(s), "mean": float(m),
                  "ci95": [float(a), float(b)]} for (l, s), m, a, b in zip(per_layer_cells, mean, lo, hi)]
    curve = {s: float(cells[(l, s)].mean()) for l, s in order if l == best[0]}
    return {"metric": metric, "direction": _direction(metric), "n_images": int(cells[best].size),
            "selected_on": "test" if val is None else "val", "n_val": 0 if val is None else int(val[best].size),
            "best": {"layer": best[0], "short": short[best[0]], "step": int(best[1]),
                     **_ci(cells[best])},
            "per_layer": per_layer,
            "how_early": {"layer": best[0], **how_early(curve, metric)}}


def paired_gap(ref: dict, base: dict, base_val: dict | None, cell: tuple[str, int], metric: str, baseline: str,
               reference: str) -> dict:
    """One baseline's entry of `summarize`'s 'gap' (see there): bootstrapping the per-image difference
    resamples the images of both models jointly, which is the paired bootstrap. A baseline without the cell's
    layer is taken at its best layer at that step, chosen as `cell` was: on `base_val`, or on `base` if None."""
    layer, step = cell
    if cell in base:
        other = cell
    else:
        at_step = [c for c in base if c[1] == step]
        if not at_step:
            raise ValueError(f"baseline {baseline!r} has no scores at step {step} (the {reference} "
                             f"model's best); its steps: {sorted({s for _, s in base})}")
        chooser = base if base_val is None else base_val
        other = _better(metric)(sorted(at_step), key=lambda c: chooser[c].mean())
    if base[other].shape != ref[cell].shape:
        raise ValueError(f"a paired gap needs the same images: {reference} has {ref[cell].size} test "
                         f"images, {baseline!r} has {base[other].size}")
    sign = -1.0 if LOWER_IS_BETTER[metric] else 1.0
    return {"layer": layer, "step": int(step), "baseline_layer": other[0],
            "baseline_mean": float(base[other].mean()), **_ci(sign * (ref[cell] - base[other]))}


def summarize(scores_by_model: Mapping[str, Mapping[str, Scores]], *, tasks: Sequence[Task],
              layer_order: Sequence[str], reference: str, layer_names: LayerNamer | None = None,
              select_on: Mapping[str, Mapping[str, Scores]] | None = None) -> dict:
    """The JSON summary of a sweep: {model: {task: {...}}}, judged by each task's headline metric.

    scores_by_model: {model: {task name: evaluate_sweep scores keyed by (layer, denoising step)}}, test split.
    select_on: the same, on a validation split (the same models, tasks and cells, other images): every cell below
    is CHOSEN by its means, so that no reported value was picked on the images it is measured on; without it the
    cells are chosen on the test scores themselves, optimistically, and the summary says so.
    tasks: the Task of every task name there; reference: the model the others are baselines of (it need not be
    among the models); layer_names: how layers are called in 'short' (their paths without a namer).
    Per model and task (every mean and interval is of the test scores):
      selected_on  'val' (with n_val, its image count) or 'test' (n_val 0): the split that chose every cell;
      best       the best (layer, step) by the choosing split's mean over images (`best_cell`: first in
                 layer_order, then step order, on ties), with its test mean and 95% percentile-bootstrap CI
                 (`metrics.mean_ci`);
      per_layer  for each layer (in layer_order; layers it lacks, e.g. the VAE's, after) its best step, mean, CI;
      how_early  `how_early` on the best layer's curve over steps;
      gap        (the reference model only) {baseline: improvement at the reference's best (layer, step) over
                 the baseline's same cell, or, for a baseline without that layer (the VAE), over its best layer at
                 that step}: mean of the per-image difference, signed so that > 0 means the reference is better
                 (baseline - reference for RMSE), with a 95% paired-bootstrap CI (images resampled jointly).
    """
    if not scores_by_model:
        raise ValueError("summarize needs scores of at least one model")
    headline = {check_task(t).name: t.headline for t in tasks}
    cells, vals = {}, {}
    for model, by_task in scores_by_model.items():
        if not by_task:
            raise ValueError(f"model {model!r} has no tasks")
        for task, scores in by_task.items():
            check_choice(f"task of model {model!r} (one of the tasks given)", task, headline)
            where = f"model {model!r}, task {task!r}"
            cells[model, task] = _cell_values(scores, headline[task], where)
            vals[model, task] = None
            if select_on is not None:
                val = select_on.get(model, {}).get(task, {})
                if set(val) != set(scores):
                    differ = sorted(set(val) ^ set(scores), key=str)
                    raise ValueError(f"select_on must score the same cells as the test scores of {where}; "
                                     f"{len(differ)} differ, e.g. {differ[0]}")
                vals[model, task] = _cell_values(val, headline[task], f"{where}, validation split")
    summary = {model: {task: _summarize_one(cells[model, task], vals[model, task], headline[task], layer_order,
                                            layer_names)
                       for task in by_task}
               for model, by_task in scores_by_model.items()}
    for task, entry in summary.get(reference, {}).items():
        best = (entry["best"]["layer"], entry["best"]["step"])
        entry["gap"] = {m: paired_gap(cells[reference, task], cells[m, task], vals[m, task], best, headline[task],
                                      m, reference)
                        for m in scores_by_model if m != reference and (m, task) in cells}
    return summary


# ------------------------------------------------------------------------------------------------- figures


def _select(rows: Sequence[dict], task: str, metric: str, split: str) -> list[dict]:
    """The rows of one task/metric/split; a clear error naming what the rows do hold otherwise."""
    check_choice("metric", metric, LOWER_IS_BETTER)
    if not rows:
        raise ValueError("no rows to plot: the rows list is empty")
    picked = [r for r in rows if r["task"] == task and r["metric"] == metric and r["split"] == split]
    if not picked:
        held = sorted({(r["task"], r["metric"], r["split"]) for r in rows})
        raise ValueError(f"no rows for task {task!r}, metric {metric!r}, split {split!r}; the rows hold (task, "
                         f"metric, split) = {held}")
    return picked


def _grid(rows: Sequence[dict], layers: Sequence[str], steps: Sequence[int]) -> np.ndarray:
    """Values [len(layers), len(steps)] of one model's rows; NaN where a (layer, step) was not scored."""
    li, si = {l: i for i, l in enumerate(layers)}, {s: i for i, s in enumerate(steps)}
    out = np.full((len(layers), len(steps)), np.nan)
    for r in rows:
        out[li[r["layer"]], si[r["step"]]] = r["value"]
    return out


def _by_model(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["model"], []).append(r)
    return out


_REF_COLOURS = ("black", "tab:gray", "tab:brown", "tab:olive", "tab:pink", "tab:cyan")  # dashed baselines


def save_figure(fig: Figure, path) -> None:
    """Write `fig` as a PNG at `path`, atomically."""
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _title(task: str, metric: str, split: str, what: str) -> str:
    return f"{task}: {metric} ({_direction(metric)}) {what}, {split} split"


def heatmap_figure(rows: Sequence[dict], task: str, metric: str, path, *, layer_order: Sequence[str],
                   models: Sequence[str], split: str = "test", xlabel: str = "denoising step",
                   what: str = "per layer and step", layer_names: LayerNamer | None = None,
                   layer_groups: LayerGrouper | None = None) -> None:
    """One layer x step heatmap per model of `models` (stacked in that order, sharing the step axis and one colour
    scale), cell values printed; the colour map is flipped for lower-is-better metrics so that bright always means
    better. Models absent from `rows` are left out; a model with one layer (a baseline) is a one-row panel. Above
    MAX_LAYER_LABELS layers (with `layer_groups`), rows are labelled and ruled off by group, without values."""
    picked = _by_model(_select(rows, task, metric, split))
    shown = [m for m in models if m in picked]
    if not shown:
        raise ValueError(f"none of the models {list(models)} has {task}/{metric} rows; rows hold models "
                         f"{sorted(picked)}")
    steps = sorted({r["step"] for m in shown for r in picked[m]})
    layers = {m: _ordered([r["layer"] for r in picked[m]], layer_order) for m in shown}
    grids = {m: _grid(picked[m], layers[m], steps) for m in shown}
    vmin = min(np.nanmin(g) for g in grids.values())
    vmax = max(np.nanmax(g) for g in grids.values())
    cmap = "viridis_r" if LOWER_IS_BETTER[metric] else "viridis"
    groups = {m: _groups(layers[m], layer_groups) for m in shown}
    row = 0.12 if any(groups.values()) else 0.3  # inches per layer
    heights = [len(layers[m]) + 1.2 / row * 0.3 for m in shown]  # room for each panel's title
    fig = Figure(figsize=(1.0 + 0.55 * len(steps) + 1.6, row * sum(heights) + 1.2), layout="constrained")
    axes = fig.subplots(len(shown), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    for ax, m in zip(axes, shown):
        g = grids[m]
        im = ax.imshow(g, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(m, fontsize=10, loc="left")
        ax.set_ylabel("layer")
        if groups[m]:
            starts = np.cumsum([0] + [len(v) for v in groups[m].values()])
            ax.set_yticks((starts[:-1] + starts[1:] - 1) / 2, [f"{k} ({len(v)})" if len(v) > 1 else k
                                                               for k, v in groups[m].items()], fontsize=7)
            for y in starts[1:-1]:
                ax.axhline(y - 0.5, color="white", linewidth=0.6)
            continue
        ax.set_yticks(range(len(layers[m])), _short(layers[m], layer_names), fontsize=8)
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(g):
            if np.isfinite(v):  # dark text on the bright half of viridis, white on the dark half
                bright = (v > mid) != LOWER_IS_BETTER[metric]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if bright else "white")
    axes[-1].set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=8)
    axes[-1].set_xlabel(xlabel)
    fig.colorbar(im, ax=list(axes), label=f"{metric} ({_direction(metric)})", shrink=0.9)
    fig.suptitle(_title(task, metric, split, what))
    save_figure(fig, path)


def _best_per_step(rows: Sequence[dict], metric: str) -> tuple[list[int], list[float]]:
    """A model's best value over its layers at each step -> (steps, values)."""
    best: dict[int, float] = {}
    for r in rows:
        s = r["step"]
        best[s] = r["value"] if s not in best else _better(metric)(best[s], r["value"])
    steps = sorted(best)
    return steps, [best[s] for s in steps]


def curves_figure(rows: Sequence[dict], task: str, metric: str, path, *, layer_order: Sequence[str], model: str,
                  split: str = "test", layer_names: LayerNamer | None = None,
                  layer_styles: LayerStyler | None = None, layer_groups: LayerGrouper | None = None) -> None:
    """`metric` vs denoising step, one line per layer of `model` (styled by `layer_styles`, default matplotlib's
    colour cycle), or above MAX_LAYER_LABELS layers (with `layer_groups`) one per group, its best layer at each
    step; every other model in `rows` is one dashed reference line, its best layer at each step."""
    picked = _by_model(_select(rows, task, metric, split))
    if model not in picked:
        raise ValueError(f"no {task}/{metric} rows of model {model!r}; rows hold models {sorted(picked)}")
    layers = _ordered([r["layer"] for r in picked[model]], layer_order)
    styles = layer_styles(layers) if layer_styles is not None else {l: {"marker": "o"} for l in layers}
    groups = _groups(layers, layer_groups)
    lines = ({f"{k} (best of {len(v)})" if len(v) > 1 else k: v for k, v in groups.items()} if groups else
             {short: [l] for l, short in zip(layers, _short(layers, layer_names))})
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for label, members in lines.items():
        ax.plot(*_best_per_step([r for r in picked[model] if r["layer"] in members], metric), label=label,
                markersize=4, linewidth=1.2, **styles[members[0]])
    for other, colour in zip([m for m in picked if m != model], _REF_COLOURS):
        ax.plot(*_best_per_step(picked[other], metric), linestyle="--", color=colour, linewidth=1.8,
                label=f"{other} (best layer per step)")
    ax.set_xticks(sorted({r["step"] for rs in picked.values() for r in rs}))
    ax.set_xlabel("denoising step")
    ax.set_ylabel(f"{metric} ({_direction(metric)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title=f"{model} layer",
              title_fontsize=8, ncols=1 + len(lines) // 20)
    ax.set_title(_title(task, metric, split, "vs step"))
    save_figure(fig, path)


def layer_profile_figure(rows: Sequence[dict], task: str, metric: str, path, *, layer_order: Sequence[str],
                         step: int, split: str = "test", layer_names: LayerNamer | None = None) -> None:
    """`metric` per layer (in `layer_order`) at one denoising step, one line per model. A model scored at a
    single layer of `layer_order`, or at none (the VAE), is a dashed horizontal line at its best layer instead,
    as long as some other model spans several layers. The bottleneck level (the deepest `layer_names` knows) is
    shaded."""
    picked = {m: [r for r in rs if r["step"] == step]
              for m, rs in _by_model(_select(rows, task, metric, split)).items()}
    picked = {m: rs for m, rs in picked.items() if rs}
    if not picked:
        held = sorted({r["step"] for r in _select(rows, task, metric, split)})
        raise ValueError(f"no {task}/{metric} rows at step {step}; steps present: {held}")
    spans = {m: {r["layer"] for r in rs} & set(layer_order) for m, rs in picked.items()}
    lines = [m for m in picked if len(spans[m]) > 1] or [m for m in picked if spans[m]]
    if not lines:
        raise ValueError(f"none of the layers in layer_order has {task}/{metric} rows at step {step}")
    layers = [l for l in layer_order if any(l in spans[m] for m in lines)]
    x = {l: i for i, l in enumerate(layers)}
    fig = Figure(figsize=(max(6.0, 0.55 * len(layers) + 2.5), 4.5), layout="constrained")
    ax = fig.subplots()
    levels = {l: level for l, (_, level) in name_layers(layers, layer_names).items()}
    bottom = max([v for v in levels.values() if v is not None], default=None)
    for l in layers:
        if bottom is not None and levels[l] == bottom:
            ax.axvspan(x[l] - 0.5, x[l] + 0.5, color="0.9", zorder=0)
    for m in lines:
        ax.plot(*zip(*sorted((x[r["layer"]], r["value"]) for r in picked[m] if r["layer"] in x)), marker="o",
                label=m)
    for m, colour in zip([m for m in picked if m not in lines], _REF_COLOURS):
        ax.axhline(_better(metric)(r["value"] for r in picked[m]), linestyle="--", color=colour,
                   label=f"{m} (best layer)")
    ax.set_xticks(range(len(layers)), _short(layers, layer_names), rotation=45, ha="right",
                  fontsize=8)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_xlabel("layer (shaded: bottleneck)" if bottom is not None else "layer")
    ax.set_ylabel(f"{metric} ({_direction(metric)})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(_title(task, metric, split, f"per layer at step {step}"))
    save_figure(fig, path)


def samples_figure(path, images, captions: Sequence[str], *, columns: int = 4) -> None:
    """Generated images uint8 [N, H, W, 3] in a grid, each under its (wrapped) caption [N]."""
    images = check_images(images)
    check_titles(captions, len(images))
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, caption in zip(axes, images, captions):
        ax.imshow(image)
        ax.set_title(wrap(caption), fontsize=8)
    save_figure(fig, path)


def check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(f"images must be uint8 [N, H, W, 3] with N >= 1, got {images.dtype} {images.shape}")
    return images


def check_titles(titles: Sequence[str], n: int) -> None:
    if len(titles) != n:
        raise ValueError(f"titles must hold one title per image ({n}), got {len(titles)}")


def wrap(text) -> str:
    return "\n".join(textwrap.wrap(str(text), 30))
