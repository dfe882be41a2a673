"""Did the edit move the object? Per-edit measures of an intervention, read off the labelers' masks and depth of an
image sampled with an edit (or a control edit) and of the plain sample with the same seed and prompt.

Everything is measured against the edit's intended shift v = (dx, dy) and its target, whatever the run, so the
controls read on the same scale: the opposite translation should score a negative transfer, a null or
random-direction edit about zero.
"""
from __future__ import annotations

import numpy as np

from jaxprobe.probing import metrics

# name -> what it is; every per-edit array `edit_scores` returns, in this order.
IMAGE_METRICS = {
    "transfer": "salient centroid's displacement along v / |v|^2 (1 = moved as far as asked)",
    "transfer_clipped": "transfer / the target's own centroid shift along v (a target the border clips cannot "
                        "reach 1 in `transfer`; here 1 = as far as the target moved); NaN where the target moved "
                        "less than MIN_REACH of v, whose ratio would be noise",
    "drift": "the displacement's part orthogonal to v, / |v|",
    "iou": "IoU of the salient mask with the target mask",
    "delta_iou": "IoU with the target minus the plain sample's IoU with it (paired)",
    "found": "a salient object is found (>= min_pixels pixels)",
    "colour": "the salient object's colour is the caption's (toy-world captions only, else NaN)",
    "vacated": "fraction of the plain object's pixels outside the target that are no longer salient",
    "background_change": "mean |image - plain sample| / 255 where neither has the object nor the target has it",
    "depth_rmse": "RMSE of the z-scored depth to the depth target (shifted, not rescaled)",
    "depth_rmse_gain": "the plain sample's depth RMSE to that target minus this image's (> 0: closer)",
}
# What the edit did to the activations (the hook's aux, `edit_modes.change_ratios`; NaN for the roll control).
CHANGE_METRICS = {
    "change_overall": "||delta a|| / ||a|| of the edited conditional activations, summed over layers and steps",
    "change_in": "the same inside the dilated source and target region (`edit_study._region`)",
    "change_out": "the same outside it (0: a local edit)",
}
METRICS = {**IMAGE_METRICS, **CHANGE_METRICS}  # the CSV columns and the summary, in this order
MIN_REACH = 0.25  # transfer_clipped needs the clipped target itself to move this fraction of the asked shift


def centroids(masks: np.ndarray) -> np.ndarray:
    """[N, H, W] masks -> [N, 2] (x, y) centroids in pixels; NaN for an empty mask."""
    masks = np.asarray(masks, bool)
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.arange(masks.shape[1]), np.arange(masks.shape[2])
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (masks.sum(axis=1) * xs).sum(axis=1) / area
        y = (masks.sum(axis=2) * ys).sum(axis=1) / area
    return np.stack([x, y], axis=1)


def displacement(before: np.ndarray, after: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(transfer, drift) [N] of the salient centroid from mask `before` to `after` [N, H, W] for intended shifts
    [N, 2] (dx, dy): the displacement d along v as a fraction of v (d.v / |v|^2), and the rest of d over |v|."""
    v = np.asarray(shifts, np.float64)
    d = centroids(after) - centroids(before)
    vv = np.maximum((v * v).sum(axis=1), 1e-12)
    along = (d * v).sum(axis=1) / vv
    drift = np.linalg.norm(d - along[:, None] * v, axis=1) / np.sqrt(vv)
    return along, drift


def vacated(plain_mask, mask, target_mask) -> np.ndarray:
    """Fraction [N] of the pixels the plain sample's object held outside the target (masks [N, H, W]) that are no
    longer salient: 1 = the object left its old place; NaN where the target covers the whole old object."""
    source = np.asarray(plain_mask, bool) & ~np.asarray(target_mask, bool)
    still = (source & np.asarray(mask, bool)).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - still / source.sum(axis=(1, 2))


def background_change(plain_image, image, keep_out) -> np.ndarray:
    """Mean absolute change [N] of uint8 images [N, H, W, 3] over the pixels where `keep_out` [N, H, W] is False,
    in units of the full intensity range (0 = untouched); NaN where no pixel is left."""
    diff = np.abs(np.asarray(image, np.float64) - np.asarray(plain_image, np.float64)).mean(axis=-1) / 255.0
    background = ~np.asarray(keep_out, bool)
    with np.errstate(invalid="ignore"):
        return (diff * background).sum(axis=(1, 2)) / background.sum(axis=(1, 2))


def edit_scores(*, plain_image, image, plain_mask, mask, target_mask, shifts, found, colour, plain_depth=None,
                depth=None, target_depth=None) -> dict[str, np.ndarray]:
    """Every metric of `IMAGE_METRICS` per edit [N] for one run: uint8 images [N, H, W, 3] (the plain sample,
    this run); masks [N, H, W] (the plain sample's, this run's, the target); shifts [N, 2]; found/colour [N] for
    this run; z-scored depth maps [N, H, W] and the depth target (or None: depth metrics NaN). Centroid metrics are
    NaN where either image has no salient object."""
    transfer, drift = displacement(plain_mask, mask, shifts)
    reach = displacement(plain_mask, target_mask, shifts)[0]  # how far the (clipped) target itself moved along v
    nan = np.full(len(shifts), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        clipped = np.where(reach >= MIN_REACH, transfer / reach, np.nan)
    out = {"transfer": transfer, "transfer_clipped": clipped, "drift": drift, "iou": metrics.iou(mask, target_mask),
           "delta_iou": metrics.iou(mask, target_mask) - metrics.iou(plain_mask, target_mask),
           "found": np.asarray(found, np.float64), "colour": np.asarray(colour, np.float64),
           "vacated": vacated(plain_mask, mask, target_mask),
           "background_change": background_change(plain_image, image, np.asarray(plain_mask, bool)
                                                  | np.asarray(mask, bool) | np.asarray(target_mask, bool)),
           "depth_rmse": nan, "depth_rmse_gain": nan}
    if target_depth is not None:
        rmse = metrics.rmse(depth, target_depth)
        out.update(depth_rmse=rmse, depth_rmse_gain=metrics.rmse(plain_depth, target_depth) - rmse)
    return {k: np.asarray(out[k], np.float64) for k in IMAGE_METRICS}
