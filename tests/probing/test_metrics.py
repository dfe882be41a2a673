"""Metrics on hand-made cases whose answers are worked out by hand in the comments."""
import numpy as np
import pytest
import scipy.stats

from jaxprobe.probing import metrics

# 2x3 masks: pred has 3 pixels, true has 2, they share 1.
PRED = np.array([[1, 1, 0], [0, 1, 0]], bool)
TRUE = np.array([[1, 0, 0], [0, 0, 1]], bool)


def test_dice_iou_hand_computed():
    # Dice = 2*1 / (3 + 2) = 0.4; IoU = 1 / |union| = 1 / 4.
    assert metrics.dice(PRED[None], TRUE[None]) == pytest.approx([0.4])
    assert metrics.iou(PRED[None], TRUE[None]) == pytest.approx([0.25])
    # Identical masks score 1, disjoint ones 0.
    assert metrics.dice(TRUE[None], TRUE[None]) == pytest.approx([1.0])
    assert metrics.iou(~TRUE[None], TRUE[None]) == pytest.approx([0.0])


def test_dice_iou_empty_masks():
    empty = np.zeros((1, 2, 3), bool)
    assert metrics.dice(empty, empty) == pytest.approx([1.0])  # both empty: defined as a perfect match
    assert metrics.iou(empty, empty) == pytest.approx([1.0])
    assert metrics.dice(empty, TRUE[None]) == pytest.approx([0.0])  # one empty: nothing overlaps
    assert metrics.dice(TRUE[None], empty) == pytest.approx([0.0])


def test_metrics_broadcast_over_probes():
    """pred [P, N, H, W] vs true [N, H, W] -> [P, N], equal to scoring each (probe, image) alone."""
    rng = np.random.default_rng(0)
    pred, true = rng.random((3, 4, 5, 6)) < 0.5, rng.random((4, 5, 6)) < 0.5
    depth_p, depth_t = rng.normal(size=(3, 4, 5, 6)), rng.normal(size=(4, 5, 6))
    for fn, p, t in [(metrics.dice, pred, true), (metrics.iou, pred, true), (metrics.accuracy, pred, true),
                     (metrics.rmse, depth_p, depth_t), (metrics.pearson, depth_p, depth_t),
                     (metrics.spearman, depth_p, depth_t)]:
        out = fn(p, t)
        assert out.shape == (3, 4)
        loop = [[fn(p[i, j][None], t[j][None])[0] for j in range(4)] for i in range(3)]
        np.testing.assert_allclose(out, loop, rtol=1e-12, err_msg=fn.__name__)


def test_accuracy():
    # PRED and TRUE differ at (0,1), (1,1), (1,2): 3 of 6 pixels agree.
    assert metrics.accuracy(PRED[None], TRUE[None]) == pytest.approx([0.5])
    # Per-image labels with axis=(): correctness per image.
    np.testing.assert_array_equal(metrics.accuracy(np.array([1, 0, 2]), np.array([1, 1, 2]), axis=()), [1, 0, 1])


def test_rmse_hand_computed():
    pred = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    true = np.array([[[1.0, 1.0], [2.0, 0.0]]])
    # errors 1, 0, 0, 3 -> mean square 10/4 -> sqrt(2.5)
    assert metrics.rmse(pred, true) == pytest.approx([np.sqrt(2.5)])


def test_pearson_spearman():
    x = np.arange(1.0, 7.0).reshape(1, 2, 3)
    assert metrics.pearson(2 * x + 1, x) == pytest.approx([1.0])
    assert metrics.pearson(-x, x) == pytest.approx([-1.0])
    # A monotone but non-linear map keeps Spearman at 1 while Pearson drops below 1.
    assert metrics.spearman(np.exp(3 * x), x) == pytest.approx([1.0])
    assert metrics.pearson(np.exp(3 * x), x)[0] < 0.9
    # Ties: pred (1, 1, 2) ranks (1.5, 1.5, 3); true (1, 2, 3) ranks (1, 2, 3).
    # Centred: (-0.5, -0.5, 1) . (-1, 0, 1) = 1.5; norms sqrt(1.5) and sqrt(2) -> 1.5 / sqrt(3) = sqrt(3)/2.
    assert metrics.spearman(np.array([[[1.0, 1.0, 2.0]]]), np.array([[[1.0, 2.0, 3.0]]])) == pytest.approx(
        [np.sqrt(3) / 2])


def _ap_by_definition(scores, true):
    """AP of one image straight from its definition: the distinct thresholds, descending, each adding
    (R_n - R_{n-1}) P_n, every pixel scored at or above the threshold predicted positive."""
    scores, true = scores.ravel(), true.ravel()
    ap, recall = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        hit = scores >= threshold
        precision, new_recall = true[hit].mean(), true[hit].sum() / true.sum()
        ap += (new_recall - recall) * precision
        recall = new_recall
    return ap


def _tied_case(seed=0):
    """Scores [3, 5, 6, 7] rounded to one decimal (many ties) for 5 masks with positives."""
    rng = np.random.default_rng(seed)
    true = rng.random((5, 6, 7)) < 0.3
    true[:, 0, 0] = True
    return np.round(rng.random((3, 5, 6, 7)), 1), true


def test_average_precision_is_the_definition_per_image_with_ties():
    scores, true = _tied_case()
    got = metrics.average_precision(scores, true)
    assert got.shape == (3, 5)
    want = [[_ap_by_definition(scores[g, i], true[i]) for i in range(5)] for g in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_average_precision_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, true = _tied_case(1)
    want = [[sklearn_metrics.average_precision_score(true[i].ravel(), scores[g, i].ravel()) for i in range(5)]
            for g in range(3)]
    np.testing.assert_allclose(metrics.average_precision(scores, true), want, rtol=1e-12)


def test_average_precision_perfect_ranking_and_no_positive_convention():
    scores, true = _tied_case(2)
    ranked = true + 0.5 * scores[0]  # every positive above every negative, in any order among themselves
    np.testing.assert_allclose(metrics.average_precision(ranked, true), 1.0)
    assert metrics.average_precision(1.0 - ranked, true).max() < 1  # the reverse ranking is not perfect
    # All-equal scores: one threshold, AP = the positive fraction.
    np.testing.assert_allclose(metrics.average_precision(np.zeros_like(scores[0]), true), true.mean(axis=(1, 2)))
    # No positive pixel: 1 if no score exceeds 0.5 (nothing found, as Dice's empty-vs-empty), 0 otherwise.
    empty = np.zeros((3, 6, 7), bool)
    quiet, loud = np.full((3, 6, 7), 0.5), np.full((3, 6, 7), 0.5)
    loud[1, 2, 3] = 0.51
    np.testing.assert_array_equal(metrics.average_precision(quiet, empty), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(metrics.average_precision(loud, empty), [1.0, 0.0, 1.0])


def test_zscore_and_depth_stats():
    depth = np.array([[[1.0, 3.0], [5.0, 7.0]]])  # mean 4, population std sqrt(5)
    mean, std = metrics.depth_stats(depth)
    assert (mean, std) == pytest.approx((4.0, np.sqrt(5.0)))
    z = metrics.zscore(depth, mean, std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, (depth - 4.0) / np.sqrt(5.0), rtol=1e-6)
    with pytest.raises(ValueError, match="standard deviation"):
        metrics.zscore(depth, 0.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        metrics.depth_stats(np.zeros((0, 2, 2)))


def test_mean_ci():
    mean, lo, hi = metrics.mean_ci(np.full(10, 0.7))
    assert (mean, lo, hi) == pytest.approx((0.7, 0.7, 0.7))  # degenerate sample: no spread
    # Normal sample: the 95% interval of the mean is about mean +- 1.96 * s / sqrt(n).
    values = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    mean, lo, hi = metrics.mean_ci(values, n_resamples=4000)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert mean == pytest.approx(values.mean())
    assert lo == pytest.approx(mean - half, abs=0.1 * half) and hi == pytest.approx(mean + half, abs=0.1 * half)
    assert metrics.mean_ci(values, n_resamples=500) == metrics.mean_ci(values, n_resamples=500)  # fixed seed
    # Vectorised over leading axes: each row on its own.
    rows = np.stack([values, values + 1.0])
    m2, lo2, hi2 = metrics.mean_ci(rows, n_resamples=500)
    assert m2.shape == lo2.shape == hi2.shape == (2,)
    np.testing.assert_allclose(hi2 - lo2, hi2[0] - lo2[0], rtol=0.2)
    with pytest.raises(ValueError, match="N >= 1"):
        metrics.mean_ci(np.zeros(0))


def test_mean_ci_without_groups_is_the_plain_percentile_bootstrap():
    values = np.random.default_rng(3).normal(size=40)
    plain = scipy.stats.bootstrap((values,), np.mean, n_resamples=9999, batch=1000, axis=-1, confidence_level=0.95,
                                  method="percentile", rng=np.random.default_rng(0))
    mean, lo, hi = metrics.mean_ci(values)
    assert (mean, lo, hi) == (values.mean(), plain.confidence_interval.low, plain.confidence_interval.high)


def test_mean_ci_clustered_draws_whole_groups():
    # Two edits per image that are exact copies carry one image's evidence: the clustered interval is the interval
    # of one edit per image; the unclustered one counts each image twice and is narrower.
    values = np.random.default_rng(3).normal(size=40)
    copies, image = np.repeat(values, 2), np.repeat(np.arange(40), 2)
    one = metrics.mean_ci(values, n_resamples=2000)
    clustered = metrics.mean_ci(copies, groups=image, n_resamples=2000)
    np.testing.assert_allclose(clustered, one, rtol=1e-12)
    _, lo, hi = metrics.mean_ci(copies, n_resamples=2000)
    assert hi - lo < 0.8 * (clustered[2] - clustered[1])
    # Group ids need not be sorted or consecutive; leading axes are rows of their own.
    shuffled = np.random.default_rng(0).permutation(80)
    labels = 7 * image + 3
    np.testing.assert_allclose(metrics.mean_ci(copies[shuffled], groups=labels[shuffled], n_resamples=2000),
                               one, rtol=1e-12)
    _, lo2, hi2 = metrics.mean_ci(np.stack([copies, copies + 1.0]), groups=image, n_resamples=2000)
    np.testing.assert_allclose(lo2, [one[1], one[1] + 1.0], rtol=1e-12)
    assert metrics.mean_ci(copies[:2], groups=image[:2]) == (values[0], values[0], values[0])  # one group
    with pytest.raises(ValueError, match="one group id per value"):
        metrics.mean_ci(copies, groups=image[:-1])
