"""What a concept accuracy is compared with: its 95 % interval over test images, the raw-pixel baseline, and the 2x2
of label source x negatives."""
import numpy as np

from configs.concepts import toy
from jaxprobe.concepts import label_grid, scores, sets, sweep
from jaxprobe.probing import metrics

GROUPS = {"color": ("red", "blue", "none"), "pattern": ("dotted", "none")}


def test_test_accuracies_carry_the_bootstrap_interval_over_their_images():
    rng = np.random.default_rng(0)
    correct = (rng.random((3, 40)) < [[0.6], [0.8], [0.95]]).astype(np.float64)  # 3 probes x 40 test images
    rows = sweep.accuracy_rows(correct, "test")
    mean, lo, hi = metrics.mean_ci(correct)  # resampled along the image axis
    assert [r["value"] for r in rows] == list(correct.mean(1))
    assert [r["ci_low"] for r in rows] == list(lo) and [r["ci_high"] for r in rows] == list(hi)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["ci_low"] < r["ci_high"] for r in rows)
    more = sweep.accuracy_rows(np.tile(correct, 4), "test")  # the same test set, 4 times: same means, narrower
    for r, m in zip(rows, more):
        assert m["value"] == r["value"] and m["ci_high"] - m["ci_low"] < r["ci_high"] - r["ci_low"]
    assert all("ci_low" not in r for r in sweep.accuracy_rows(correct, "train"))  # no interval for a fit's own data


def _cards(n=120, seed=0):
    """Toy images: a red or a blue square on grey, with noise; red for the first half."""
    rng = np.random.default_rng(seed)
    images = rng.integers(100, 140, size=(n, 8, 8, 3)).astype(np.uint8)
    red = np.arange(n) < n // 2
    images[red, 2:6, 2:6] = (200, 30, 30)
    images[~red, 2:6, 2:6] = (30, 30, 200)
    return images, {"color": np.where(red, "red", "blue"), "pattern": np.where(np.arange(n) % 2, "dotted", "none")}


def test_pixel_baseline_reads_the_mean_rgb_with_each_family():
    images, truth = _cards()
    np.testing.assert_allclose(sweep.mean_rgb(images)[:, 0, 0], images.reshape(len(images), -1, 3).mean(1),
                               rtol=1e-6)
    made = sets.make_sets(scores.truth_scores(truth, GROUPS), GROUPS, num_positive=20, num_negative=40,
                          negatives="non_candidates")
    c = toy.get_config()
    c.probe.epochs, c.probe.non_gap_epochs, c.probe.hidden = 30, 30, 8
    rows = sweep.pixel_rows(images, made, c)
    assert len(rows) == len(c.families) * 3 * 2 and all(r["model"] == r["layer"] == sweep.PIXELS for r in rows)
    assert all("step" not in r for r in rows)  # one score for every checkpoint
    test = {(r["family"], r["task"]): r["value"] for r in rows if r["split"] == "test"}
    assert min(test[f, t] for f in c.families for t in ("red", "blue")) >= 0.9  # colour is in the mean RGB
    assert max(test[f, "dotted"] for f in c.families) <= 0.85  # the pattern label here is noise


def test_the_2x2_has_four_named_cells_and_exact_labels_match_the_truth():
    rng = np.random.default_rng(1)
    truth = {g: np.asarray(words)[rng.integers(len(words), size=600)] for g, words in GROUPS.items()}
    clip_like = {"color": rng.dirichlet(np.ones(3), size=600), "pattern": rng.dirichlet(np.ones(2), size=600)}
    c = toy.get_config()
    cells = label_grid.cell_sets({"clip": clip_like, "truth": scores.truth_scores(truth, GROUPS)}, GROUPS, c)
    assert set(cells) == {"clip/others", "clip/non_candidates", "truth/others", "truth/non_candidates"}
    for cell in ("truth/others", "truth/non_candidates"):
        for cs in cells[cell]:
            assert np.all(truth[cs.group][cs.positives] == cs.concept), (cell, cs.concept)
    for cs in cells["truth/non_candidates"]:
        assert not np.any(truth[cs.group][cs.negatives] == cs.concept), cs.concept
    for cs in cells["truth/others"]:  # the paper's negatives: any non-positive, so some carry the concept
        assert np.any(truth[cs.group][cs.negatives] == cs.concept), cs.concept
    own = sets.make_sets(clip_like, GROUPS, seed=c.seed)  # the sweep's own setting is one of the cells
    assert all(np.array_equal(a.test, b.test) for a, b in zip(own, cells["clip/others"]))


def test_the_2x2_best_rows_put_the_pixel_baseline_beside_the_best_module():
    def row(cell, model, module, acc):
        return {"cell": cell, "labels": cell.split("/")[0], "negatives": cell.split("/")[1], "family": "linear_gap",
                "model": model, "concept": "red", "module": module, "accuracy": acc, "ci_low": acc - 0.1,
                "ci_high": acc + 0.05}
    rows = [row("truth/others", "trained", "features_0", 0.9), row("truth/others", "trained", "features_1", 0.95),
            row("truth/others", "pixels", "pixels", 0.8), row("clip/others", "trained", "features_0", 0.7),
            row("clip/others", "pixels", "pixels", 0.75)]
    best = {r["cell"]: r for r in label_grid.best(rows, "pixels")}
    assert best["truth/others"]["module"] == "features_1" and best["truth/others"]["accuracy"] == 0.95
    assert best["truth/others"]["pixels"] == 0.8 and best["clip/others"]["module"] == "features_0"
    assert best["clip/others"]["pixels_ci_low"] == 0.75 - 0.1
