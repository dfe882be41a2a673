"""Per-image scores of probe predictions at label resolution, and bootstrap intervals of their means.

Every score reduces over the pixel axes (`axis`, default the last two) and broadcasts over the leading ones, so
the predictions of many probes `[..., N, H, W]` are scored against one label set `[N, H, W]` in one call and
come back as `[..., N]` (one value per probe and image). Host-side numpy/scipy: evaluation runs once per probe
and needs `scipy.stats.rankdata`, which has no jax counterpart.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats

Axis = int | Sequence[int]


def _flat(pred, true, axis: Axis) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast `pred` against `true`, move the reduced `axis` to the end and flatten it: -> [..., M] each."""
    pred, true = np.broadcast_arrays(np.asarray(pred), np.asarray(true))
    axes = [a % pred.ndim for a in np.atleast_1d(axis)]
    keep = [a for a in range(pred.ndim) if a not in axes]
    shape = [pred.shape[a] for a in keep] + [-1]
    return (np.transpose(pred, keep + axes).reshape(shape), np.transpose(true, keep + axes).reshape(shape))


def dice(pred, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Dice 2|A∩B| / (|A| + |B|) of boolean masks pred [..., N, H, W] vs true [N, H, W] -> [..., N].

    Both masks empty counts as a perfect match (Dice = 1): the probe correctly found no salient object, and a
    0/0 NaN would silently drop that image from the mean.
    """
    p, t = _flat(np.asarray(pred, bool), np.asarray(true, bool), axis)
    inter = np.sum(p & t, axis=-1)
    total = np.sum(p, axis=-1) + np.sum(t, axis=-1)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def iou(pred, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Intersection over union of boolean masks -> [..., N]; both empty = 1, as for `dice`."""
    p, t = _flat(np.asarray(pred, bool), np.asarray(true, bool), axis)
    inter = np.sum(p & t, axis=-1)
    union = np.sum(p | t, axis=-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def accuracy(pred, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Fraction of equal entries over `axis` -> [..., N]: pixel accuracy per image by default; with per-image
    labels [N] and `axis=()` it is per-image correctness, whose mean is the classification accuracy."""
    p, t = _flat(pred, true, axis)
    return np.mean(p == t, axis=-1)


def rmse(pred, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Root mean squared error per image -> [..., N]; both inputs z-scored with the same global statistics."""
    p, t = _flat(pred, true, axis)
    return np.sqrt(np.mean(np.square(p.astype(np.float64) - t), axis=-1))


def pearson(pred, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Pearson correlation over the pixels of each image -> [..., N]; NaN where either map is constant."""
    p, t = _flat(pred, true, axis)
    return scipy.stats.pearsonr(p.astype(np.float64), t.astype(np.float64), axis=-1).statistic


def spearman(pred, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Spearman rank correlation per image -> [..., N]: Pearson of the ranks, ties given their average rank.

    Average ranks matter here: a nearest-upsampled prediction repeats every token value f*f times.
    """
    p, t = _flat(pred, true, axis)
    return pearson(scipy.stats.rankdata(p, axis=-1), scipy.stats.rankdata(t, axis=-1), axis=-1)


def average_precision(scores, true, axis: Axis = (-2, -1)) -> np.ndarray:
    """Average precision of real-valued scores [..., N, H, W] (e.g. the positive class's probability) against
    boolean masks [N, H, W] -> [..., N], as scikit-learn's `average_precision_score` defines it per image:
    sum over the distinct score thresholds, descending, of (R_n - R_{n-1}) P_n, pixels with equal scores crossing
    a threshold together. Threshold-free, so a probe that ranks a small object's pixels first scores well even
    if none of them crosses 0.5 (where Dice sees nothing).

    An image with no positive pixel has no AP; it scores 1 if no pixel's score exceeds 0.5 (the probe, thresholded
    as the class predictions are, found nothing, as Dice scores an empty-vs-empty image 1) and 0 otherwise, never
    NaN. One sort per image, vectorised over the leading axes; working memory is `AP_BYTES` per pixel.
    """
    s, t = _flat(np.asarray(scores, np.float64), np.asarray(true, bool), axis)
    order = np.argsort(-s, axis=-1, kind="stable")
    s, t = np.take_along_axis(s, order, -1), np.take_along_axis(t, order, -1)
    tp = np.cumsum(t, axis=-1)
    precision = tp / np.arange(1, s.shape[-1] + 1)
    # each pixel's precision is the one at the end of its run of equal scores, where the threshold passes them all
    last = np.append(s[..., 1:] != s[..., :-1], np.ones(s.shape[:-1] + (1,), bool), axis=-1)
    end = np.where(last, np.arange(s.shape[-1]), s.shape[-1])
    end = np.minimum.accumulate(end[..., ::-1], axis=-1)[..., ::-1]
    positives = np.sum(t, axis=-1)
    ap = np.sum(np.where(t, np.take_along_axis(precision, end, -1), 0.0), axis=-1) / np.maximum(positives, 1)
    return np.where(positives == 0, np.all(s <= 0.5, axis=-1).astype(np.float64), ap)


AP_BYTES = 64  # working memory of `average_precision` per pixel, at most (sort order, sorted copies, counts)
# Metrics of real-valued scores (the positive class's probability), not of predicted classes, by results.csv name.
SCORE_METRICS = {"ap": average_precision}


def depth_stats(depth) -> tuple[float, float]:
    """Global mean and standard deviation of depth maps [N, H, W] (over every pixel of every image)."""
    depth = np.asarray(depth, np.float64)
    if depth.size == 0:
        raise ValueError("depth_stats needs at least one depth value, got an empty array")
    return float(depth.mean()), float(depth.std())


def zscore(depth, mean: float, std: float) -> np.ndarray:
    """(depth - mean) / std as float32, with one global mean/std (from `depth_stats` of the train split)."""
    if not std > 0:
        raise ValueError(f"z-scoring needs a positive standard deviation, got {std}")
    return ((np.asarray(depth, np.float64) - mean) / std).astype(np.float32)


def mean_ci(values, *, groups=None, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0):
    """Mean over images and its percentile-bootstrap interval: values [..., N] -> (mean, lo, hi), each [...].

    Percentile rather than BCa so that a degenerate sample (e.g. Dice = 1 on every image) gives (1, 1, 1)
    instead of NaN. The seed is fixed, so the interval is reproducible.

    groups: per-value group ids [N] (e.g. the image each of several edits came from) -> the clustered bootstrap:
    whole groups are drawn with replacement and the statistic is the mean of every value of the drawn groups, so
    values that share a group are not counted as independent evidence (that would understate the interval).
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 0 or values.shape[-1] == 0:
        raise ValueError(f"mean_ci needs values [..., N] with N >= 1, got shape {values.shape}")
    mean = values.mean(axis=-1)
    rng = np.random.default_rng(seed)
    if groups is None:
        if values.shape[-1] == 1:
            return mean, mean, mean
        res = scipy.stats.bootstrap((values,), np.mean, n_resamples=n_resamples, batch=min(n_resamples, 1000),
                                    axis=-1, confidence_level=confidence, method="percentile", rng=rng)
        return mean, res.confidence_interval.low, res.confidence_interval.high
    sums, counts = _group_sums(values, groups)
    if counts.size == 1:
        return mean, mean, mean
    res = scipy.stats.bootstrap((sums, np.broadcast_to(counts, sums.shape)), _pooled_mean, paired=True,
                                n_resamples=n_resamples, batch=min(n_resamples, 1000), axis=-1,
                                confidence_level=confidence, method="percentile", rng=rng)
    return mean, res.confidence_interval.low, res.confidence_interval.high


def _group_sums(values: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums [..., G] of values [..., N] and value counts [G], groups in sorted id order."""
    groups = np.asarray(groups)
    if groups.shape != values.shape[-1:]:
        raise ValueError(f"mean_ci groups must hold one group id per value, shape {values.shape[-1:]}, got "
                         f"{groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    onehot = (index[:, None] == np.arange(index.max() + 1)).astype(np.float64)
    return values @ onehot, onehot.sum(axis=0)


def _pooled_mean(sums, counts, axis=-1):
    """The mean of every value in the drawn groups: their summed values over their summed counts."""
    return sums.sum(axis=axis) / counts.sum(axis=axis)
