"""The prior and the ceiling on labels whose answers are known: block-constant labels, train and test that differ."""
import numpy as np
import pytest

from jaxprobe.probing import metrics, probes, references
from jaxprobe.probing.tasks import Task
from jaxprobe.scene import reference_stage
from jaxprobe.scene.fit_stage import load_scores, scores_path

SALIENCY = Task("saliency", "mask", ("dice", "iou", "ap"), headline="dice")
DEPTH = Task("depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse")


def _blocky(rng, n, grid, k, task):
    """Labels [n, grid*k, grid*k] constant on each k x k block (every mask holds an object)."""
    if task == SALIENCY:
        tokens = rng.random((n, grid, grid)) < 0.4
        tokens[:, 0, 0] = True
    else:
        tokens = rng.normal(size=(n, grid, grid)).astype(np.float32)
    return np.repeat(np.repeat(tokens, k, 1), k, 2)


def test_ceiling_is_exact_at_the_labels_own_grid_and_below_one_at_a_coarser_grid():
    rng = np.random.default_rng(0)
    mask, depth = _blocky(rng, 5, 4, 4, SALIENCY), _blocky(rng, 5, 4, 4, DEPTH)
    at_grid = references.score_ceiling(mask, (4, 4), SALIENCY)
    for m in ("dice", "iou", "ap"):
        np.testing.assert_array_equal(at_grid[m], 1.0)
    np.testing.assert_allclose(references.score_ceiling(depth, (4, 4), DEPTH)["rmse"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(references.score_ceiling(mask, (8, 8), SALIENCY)["dice"], 1.0)  # finer grid
    coarse = references.score_ceiling(mask, (2, 2), SALIENCY)
    assert coarse["dice"].mean() < 1 and coarse["ap"].mean() < 1
    assert references.score_ceiling(depth, (2, 2), DEPTH)["rmse"].min() > 0.1
    # The ceiling map is the block mean, nearest-upsampled as a probe's prediction is.
    block = mask[:, :8, :8].mean(axis=(1, 2))
    np.testing.assert_allclose(references.ceiling_map(mask, (2, 2), SALIENCY)[:, 3, 5], block)
    with pytest.raises(ValueError, match="not an integer multiple of the 3x3 token grid"):
        references.score_ceiling(mask, (3, 3), SALIENCY)


def _top_train_bottom_test():
    """4 train masks with the object in the top half, 6 test masks with it in the bottom half: the train rows'
    mean predicts the top half, the mean of all rows (top 0.4, bottom 0.6) the bottom half."""
    labels = np.zeros((10, 8, 8), bool)
    labels[:4, :4] = True
    labels[4:, 4:] = True
    labels[0, 0, 0] = False
    return labels


def test_prior_is_the_mean_of_the_fit_rows_only():
    labels = _top_train_bottom_test()
    train, test = labels[:4], labels[4:]
    prior = references.prior_map(train, SALIENCY)
    np.testing.assert_allclose(prior, train.mean(axis=0))
    got = references.score_prior(train, test, SALIENCY)
    np.testing.assert_array_equal(got["dice"], 0.0)
    np.testing.assert_allclose(got["ap"], metrics.average_precision(prior, test))
    np.testing.assert_array_equal(references.score_prior(train, train, SALIENCY)["iou"], [31 / 32, 1, 1, 1])
    depth = np.random.default_rng(1).normal(size=(6, 8, 8)).astype(np.float32)
    got = references.score_prior(depth[:4], depth[4:], DEPTH)
    np.testing.assert_allclose(got["rmse"], metrics.rmse(depth[:4].mean(axis=0), depth[4:]), rtol=1e-6)


def test_reference_stage_builds_the_prior_from_the_train_rows_and_a_ceiling_per_layer(tmp_path):
    labels = _top_train_bottom_test()
    rows = {"train": np.arange(4), "test": np.arange(4, 10)}
    grids = {"fine": (8, 8), "coarse": (2, 2), "also_coarse": (2, 2)}
    reference_stage.write_references(tmp_path, {"saliency": labels}, rows, grids, steps=(0, 3))
    prior = load_scores(scores_path(tmp_path, "prior", "saliency", "test"))
    assert set(prior) == {(reference_stage.PRIOR_LAYER, 0), (reference_stage.PRIOR_LAYER, 3)}
    for cell in prior.values():
        np.testing.assert_array_equal(cell["dice"], 0.0)  # 1 had the test rows entered the mean
    ceiling = load_scores(scores_path(tmp_path, "ceiling", "saliency", "train"))
    assert set(ceiling) == {(layer, s) for layer in grids for s in (0, 3)}
    np.testing.assert_array_equal(ceiling["fine", 3]["ap"], 1.0)
    np.testing.assert_array_equal(ceiling["coarse", 0]["dice"], ceiling["also_coarse", 3]["dice"])
    np.testing.assert_array_equal(ceiling["coarse", 0]["dice"],
                                  references.score_ceiling(labels[:4], (2, 2), SALIENCY)["dice"])


def test_references_score_a_chunk_of_images_at_a_time(monkeypatch):
    rng = np.random.default_rng(2)
    mask = _blocky(rng, 5, 8, 2, SALIENCY)
    whole = references.score_ceiling(mask, (4, 4), SALIENCY), references.score_prior(mask[:2], mask, SALIENCY)
    monkeypatch.setattr(probes, "EVAL_BYTES", 1)  # one image per chunk
    chunked = references.score_ceiling(mask, (4, 4), SALIENCY), references.score_prior(mask[:2], mask, SALIENCY)
    for w, c in zip(whole, chunked):
        for m in SALIENCY.metrics:
            np.testing.assert_array_equal(c[m], w[m])


def test_references_refuse_image_level_tasks():
    label = Task("has_object", "label", ("accuracy",), headline="accuracy")
    with pytest.raises(ValueError, match="references need label maps"):
        references.score_prior(np.ones(4), np.ones(4), label)
