"""The intervention's measures: a translated object scores its intended transfer, a fixed one zero, the opposite
move minus one; undefined cases are NaN, never a silent zero."""
import numpy as np

from jaxprobe.scene import edit_metrics, intervene


def _square(x, y, size=16, side=4):
    m = np.zeros((size, size), bool)
    m[y:y + side, x:x + side] = True
    return m


def test_centroids_are_pixel_centres_and_nan_when_empty():
    c = edit_metrics.centroids(np.stack([_square(2, 6), np.zeros((16, 16), bool)]))
    np.testing.assert_allclose(c[0], [3.5, 7.5])
    assert np.isnan(c[1]).all()


def test_a_move_as_asked_transfers_one_and_the_opposite_minus_one():
    before = np.stack([_square(4, 4)] * 3)
    shifts = np.array([[3, -2], [3, -2], [3, -2]])
    after = np.stack([intervene.translate_mask(before[0], 3, -2), before[0], intervene.translate_mask(before[0], -3, 2)])
    transfer, drift = edit_metrics.displacement(before, after, shifts)
    np.testing.assert_allclose(transfer, [1.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(drift, 0.0, atol=1e-12)


def test_a_sideways_move_is_drift_not_transfer():
    before = np.stack([_square(4, 4)])
    transfer, drift = edit_metrics.displacement(before, np.stack([intervene.translate_mask(before[0], 0, 5)]),
                                                np.array([[5, 0]]))
    np.testing.assert_allclose(transfer, [0.0], atol=1e-12)
    np.testing.assert_allclose(drift, [1.0])


def test_edit_scores_pair_iou_and_depth_with_the_plain_sample():
    plain = np.stack([_square(2, 2), _square(2, 2)])
    target = np.stack([_square(8, 8), _square(8, 8)])
    edited = np.stack([_square(8, 8), _square(2, 2)])  # the first moved onto the target, the second stayed
    depth = np.zeros((2, 16, 16), np.float32)
    image = np.zeros((2, 16, 16, 3), np.uint8)
    changed = image.copy()
    changed[1, 0, :] = 255  # one background row of the second image turns white: 16 of 256 - 32 - 16 pixels
    s = edit_metrics.edit_scores(plain_image=image, image=changed, plain_mask=plain, mask=edited, target_mask=target, shifts=np.array([[6, 6]] * 2),
                                 found=[True, True], colour=[1.0, np.nan], plain_depth=depth, depth=depth + 1,
                                 target_depth=depth + 1)
    assert set(s) == set(edit_metrics.IMAGE_METRICS)
    np.testing.assert_allclose(s["delta_iou"], [1.0, 0.0])
    np.testing.assert_allclose(s["transfer"], [1.0, 0.0])
    np.testing.assert_allclose(s["depth_rmse"], [0.0, 0.0])
    np.testing.assert_allclose(s["depth_rmse_gain"], [1.0, 1.0])
    np.testing.assert_allclose(s["background_change"], [0.0, 16 / (256 - 16 - 16)])
    assert np.isnan(s["colour"][1])
    no_depth = edit_metrics.edit_scores(plain_image=image, image=image, plain_mask=plain, mask=edited, target_mask=target,
                                        shifts=np.array([[6, 6]] * 2), found=[1, 1], colour=[1, 1])
    assert np.isnan(no_depth["depth_rmse"]).all()


def test_a_target_clipped_by_the_border_counts_as_reached_and_the_old_place_as_vacated():
    """A 4x4 object at x=8 asked to move 6 right: the target is clipped to 2 columns at the border (its centroid
    moves 5, not 6), so an object that fills the clipped target transfers 5/6 of the shift but all of the
    clipped one; one that stayed put vacates nothing."""
    plain = np.stack([_square(8, 4)] * 2)
    target = np.stack([intervene.translate_mask(plain[0], 6, 0)] * 2)
    edited = np.stack([target[0], plain[0]])
    image = np.zeros((2, 16, 16, 3), np.uint8)
    s = edit_metrics.edit_scores(plain_image=image, image=image, plain_mask=plain, mask=edited, target_mask=target,
                                 shifts=np.array([[6, 0]] * 2), found=[1, 1], colour=[1, 1])
    np.testing.assert_allclose(s["transfer"], [5 / 6, 0.0])
    np.testing.assert_allclose(s["transfer_clipped"], [1.0, 0.0])
    np.testing.assert_allclose(s["vacated"], [1.0, 0.0])
    empty = edit_metrics.edit_scores(plain_image=image, image=image, plain_mask=plain, mask=edited,
                                     target_mask=np.zeros_like(target), shifts=np.array([[6, 0]] * 2), found=[1, 1],
                                     colour=[1, 1])
    assert np.isnan(empty["transfer_clipped"]).all()  # a target the border removed entirely has no reach
    # a target whose centroid moved 1 of the 6 asked (< MIN_REACH): no ratio, rather than 6x the transfer
    short = np.stack([intervene.translate_mask(_square(4, 4), 1, 0)] * 2)
    near = edit_metrics.edit_scores(plain_image=image, image=image, plain_mask=np.stack([_square(4, 4)] * 2),
                                    mask=short, target_mask=short, shifts=np.array([[6, 0]] * 2), found=[1, 1],
                                    colour=[1, 1])
    assert np.isnan(near["transfer_clipped"]).all() and np.isfinite(near["transfer"]).all()
