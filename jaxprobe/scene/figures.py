"""The scene study's figures: the probing report's generic figures with the study's layer names, models and
line styles bound in, and the prediction grid of the saliency and depth probes."""
from __future__ import annotations

import functools
import re
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from jaxprobe.probing import report
from jaxprobe.scene import layers as scene_layers

REFERENCE_MODEL = "trained"  # the model whose probes the baselines are compared with


def level_styles(layers: Sequence[str]) -> dict[str, dict]:
    """Line style per layer: colour by UNet resolution level (dark = full resolution, light = bottleneck), marker
    by attention index within its block, solid for down/mid blocks and dotted for up blocks; grey for layers of
    no UNet block."""
    levels = scene_layers.resolution_levels(layers)
    top = max([v for v in levels.values() if v is not None], default=0)
    cmap = matplotlib.colormaps["plasma"]
    styles = {}
    for l in layers:
        short = scene_layers.short_layer_name(l)
        attn = re.search(r"\.a(\d+)", short)
        styles[l] = {"color": "grey" if levels[l] is None else cmap(0.8 * levels[l] / max(top, 1)),
                     "marker": "os^Dv"[int(attn[1]) % 5] if attn else "o",
                     "linestyle": ":" if short.startswith("up") else "-"}
    return styles


heatmap_figure = functools.partial(report.heatmap_figure, layer_names=scene_layers.names,
                                   layer_groups=scene_layers.groups)
curves_figure = functools.partial(report.curves_figure, model=REFERENCE_MODEL, layer_names=scene_layers.names,
                                  layer_styles=level_styles, layer_groups=scene_layers.groups)
layer_profile_figure = functools.partial(report.layer_profile_figure, layer_names=scene_layers.names)


def prediction_grid(path, images, true_mask, pred_mask, true_depth, pred_depth, *,
                    titles: Sequence[str], suptitle: str | None = None) -> None:
    """One row per image: image | true mask | predicted mask | true depth | predicted depth.

    images uint8 [N, H, W, 3]; masks [N, h, w] (nonzero = salient); depths [N, h', w'] (z-scored). The two
    depth maps of a row share one colour scale (with a colourbar) so they can be compared; `titles` [N] (e.g.
    the prompts) label the rows; `suptitle` can say which probes predicted (e.g. 'saliency: up3.a0 step 4').
    """
    images = report.check_images(images)
    maps = {"true mask": true_mask, "predicted mask": pred_mask, "true depth": true_depth,
            "predicted depth": pred_depth}
    maps = {k: np.asarray(v) for k, v in maps.items()}
    n = len(images)
    for k, v in maps.items():
        if v.ndim != 3 or len(v) != n:
            raise ValueError(f"{k} must be [N={n}, H, W], got shape {v.shape}")
    report.check_titles(titles, n)
    fig = Figure(figsize=(12.5, 2.6 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 5, squeeze=False)
    for i in range(n):
        lo = min(maps["true depth"][i].min(), maps["predicted depth"][i].min())
        hi = max(maps["true depth"][i].max(), maps["predicted depth"][i].max())
        axes[i, 0].imshow(images[i])
        for ax, k in zip(axes[i, 1:3], ("true mask", "predicted mask")):
            ax.imshow(maps[k][i] != 0, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for ax, k in zip(axes[i, 3:], ("true depth", "predicted depth")):
            im = ax.imshow(maps[k][i], cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=axes[i, 3:].tolist(), shrink=0.8, label="depth (z)")
        axes[i, 0].set_ylabel(report.wrap(titles[i]), fontsize=8)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(["image", *maps][j], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    report.save_figure(fig, path)
