"""Figures of an intervention study: before / target / after rows, and each run's effect with its interval."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from jaxprobe.probing import report

RUN_COLOURS = {"edited": "tab:blue", "no_edit": "black", "null": "tab:gray", "random": "tab:orange",
               "opposite": "tab:red", "roll": "tab:green",
               "shuffled": "tab:brown"}


def _outline(ax, mask, colour: str, **style) -> None:
    """A mask's outline over an image (nothing for an empty mask)."""
    if np.any(mask) and not np.all(mask):
        ax.contour(np.asarray(mask, float), levels=[0.5], colors=colour, **{"linewidths": 1.2, **style})


def edit_grid(path, before, target, after, before_mask, after_mask, *, titles: Sequence[str]) -> None:
    """One row per edit: the plain sample with its salient outline | the probe target (a mask, or a depth map)
    with the plain outline | the edited sample with its own outline (cyan) and the target's (dashed white when
    the target is a mask). images uint8 [N, H, W, 3]; masks and targets [N, H, W]."""
    n = len(before)
    fig = Figure(figsize=(7.2, 2.3 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    is_mask = np.asarray(target).dtype == bool
    for i in range(n):
        axes[i, 0].imshow(before[i])
        _outline(axes[i, 0], before_mask[i], "cyan")
        axes[i, 1].imshow(target[i], cmap="gray" if is_mask else "magma", interpolation="nearest")
        _outline(axes[i, 1], before_mask[i], "cyan")
        axes[i, 2].imshow(after[i])
        _outline(axes[i, 2], after_mask[i], "cyan")
        if is_mask:
            _outline(axes[i, 2], target[i], "white", linewidths=1, linestyles="dashed")
        axes[i, 0].set_ylabel(titles[i], fontsize=8)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(("before (no edit)", "probe target", "after the edit")[j], fontsize=10)
    fig.suptitle("cyan: the labeler's salient object; dashed: the target", fontsize=9)
    report.save_figure(fig, path)


def runs_figure(path, summary: Mapping[str, Mapping[str, dict]], *, title: str,
                metrics: Sequence[str] = ("transfer", "delta_iou", "colour", "background_change")) -> None:
    """One panel per metric: each run's mean over edits with its 95% interval (`edit_report.summarize`)."""
    fig = Figure(figsize=(3.4 * len(metrics), 3.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        runs = [r for r in summary if m in summary[r]]
        means = [summary[r][m]["mean"] for r in runs]
        err = np.array([[summary[r][m]["mean"] - summary[r][m]["ci95"][0],
                         summary[r][m]["ci95"][1] - summary[r][m]["mean"]] for r in runs]).T
        ax.bar(range(len(runs)), means, yerr=err if len(runs) else None, capsize=3,
               color=[RUN_COLOURS.get(r, "tab:purple") for r in runs])
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(runs)), runs, rotation=30, fontsize=8)
        ax.set_title(m, fontsize=10)
    fig.suptitle(title, fontsize=10)
    report.save_figure(fig, path)


def ablation_figure(path, rows, *, run: str = "edited",
                    metrics: Sequence[str] = ("transfer", "delta_iou", "colour", "background_change")):
    """One panel per metric: every ablation setting's `run` mean with its 95% interval (`edit_study.ablate`)."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig = Figure(figsize=(3.6 * len(metrics), 0.32 * len(settings) + 1.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    for ax, m in zip(axes, metrics):
        cell = {r["setting"]: r for r in rows if r["run"] == run and r["metric"] == m}
        ys = [i for i, s in enumerate(settings) if s in cell]
        means = np.array([cell[settings[i]]["mean"] for i in ys])
        err = np.array([[cell[settings[i]]["mean"] - cell[settings[i]]["ci_low"],
                         cell[settings[i]]["ci_high"] - cell[settings[i]]["mean"]] for i in ys]).T
        ax.errorbar(means, ys, xerr=err if len(ys) else None, fmt="o", color=RUN_COLOURS.get(run), capsize=3)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(m, fontsize=10)
    axes[0].set_yticks(range(len(settings)), settings, fontsize=8)
    axes[0].invert_yaxis()
    report.save_figure(fig, path)


def tradeoff_figure(path, rows, *, reference: str, run: str = "edited",
                    kept: Sequence[str] = ("colour", "background_change"), legend_max: int = 12) -> None:
    """Transfer (y) against each scene-kept measure (x, one panel each) for every ablation setting's `run`, with
    95% intervals on both axes (`edit_study.ablate`'s rows): the trade-off between moving the object and keeping the
    scene. `reference` (the paper's setting) is marked with a star; the unedited samples' level is a dotted line.
    Up to `legend_max` settings get a legend; more are labelled at their points by their names' first word (e.g.
    'm25' of 'm25_hold_lr_1e_2'), so that the plot stays readable."""
    cell = {(r["setting"], r["run"], r["metric"]): r for r in rows}
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    legend = len(settings) <= legend_max
    fig = Figure(figsize=(5.2 * len(kept) + (2.0 if legend else 0.0), 4.4 if legend else 5.6), layout="constrained")
    axes = fig.subplots(1, len(kept), squeeze=False)[0]
    for ax, m in zip(axes, kept):
        for i, s in enumerate(settings):
            x, y = cell.get((s, run, m)), cell.get((s, run, "transfer"))
            if not (x and y):
                continue
            ax.errorbar(x["mean"], y["mean"], xerr=[[x["mean"] - x["ci_low"]], [x["ci_high"] - x["mean"]]],
                        yerr=[[y["mean"] - y["ci_low"]], [y["ci_high"] - y["mean"]]], fmt="*" if s == reference
                        else "o", markersize=12 if s == reference else 5, color=colormaps["tab20"](i % 20), capsize=2,
                        elinewidth=0.8 if legend else 0.5, alpha=1.0 if legend else 0.6,
                        label=s + (" (paper)" if s == reference else ""))
            if not legend:
                ax.annotate(s.split("_")[0], (x["mean"], y["mean"]), xytext=(3, 3), textcoords="offset points",
                            fontsize=7)
        plain = [cell[(s, "no_edit", m)]["mean"] for s in settings if (s, "no_edit", m) in cell]
        if plain:
            ax.axvline(float(np.mean(plain)), color="black", linestyle=":", linewidth=0.8, label="no edit")
        ax.set_xlabel(f"{m} ({'higher' if m == 'colour' else 'lower'} keeps the scene)")
        ax.set_ylabel("transfer (1 = moved as far as asked)")
        ax.axhline(0, color="black", linewidth=0.5)
    if legend:
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"moving the object vs keeping the scene, {run} run of each setting (star: {reference}; dotted: no "
                 "edit); 95% intervals clustered by image", fontsize=10)
    report.save_figure(fig, path)
