"""The edit study's summary: intervals resample images (an image's edits share its seed and prompt), and runs that
share seeds are compared by their per-edit differences (paired), not by two intervals side by side."""
import json
import types

import numpy as np
import pytest

from configs.scene import toy_intervene
from jaxprobe import io
from jaxprobe.probing import metrics
from jaxprobe.scene import edit_figures, edit_metrics, edit_report, edit_study

IMAGES, SHIFTS = 30, 2


def _scores(runs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every metric of each run set to that run's per-edit values."""
    return {f"{run}|{m}": v for run, v in runs.items() for m in edit_metrics.METRICS}


def _two_runs(d: float = 0.3):
    """Per-edit values of two runs with the same seeds: shared per-image noise, the edit d higher on every edit."""
    image = np.repeat(np.arange(IMAGES), SHIFTS)
    noise = np.random.default_rng(0).normal(size=IMAGES)[image]
    return image, {"edited": noise + d, "random": noise}


def test_runs_sharing_seeds_are_compared_paired():
    image, runs = _two_runs()
    scores = _scores(runs)
    summary = edit_report.summarize(scores, runs, image)
    a, b = (summary[r]["transfer"]["ci95"] for r in ("edited", "random"))
    assert a[0] < b[1] and b[0] < a[1]  # side by side, the two intervals overlap: no difference seen
    d = edit_report.paired(scores, scores, "edited", image, other_run="random")["transfer"]
    assert d["mean"] == pytest.approx(0.3) and d["ci95"] == pytest.approx([0.3, 0.3], abs=1e-9)
    assert (d["n"], d["images"]) == (IMAGES * SHIFTS, IMAGES)


def test_intervals_resample_images_not_edits():
    image, runs = _two_runs()
    s = edit_report.summarize(_scores(runs), runs, image)["edited"]["transfer"]
    one_per_image = metrics.mean_ci(runs["edited"][::SHIFTS])  # an image's two edits are equal here
    np.testing.assert_allclose([s["mean"], *s["ci95"]], one_per_image, rtol=1e-12)
    _, lo, hi = metrics.mean_ci(runs["edited"])  # edits as if independent: too narrow
    assert hi - lo < 0.8 * (s["ci95"][1] - s["ci95"][0])
    undefined = runs["edited"].copy()
    undefined[:2 * SHIFTS] = np.nan  # no object in images 0 and 1: those edits drop out, and so do the images
    s = edit_report.stats(undefined, image)
    assert (s["n"], s["images"]) == ((IMAGES - 2) * SHIFTS, IMAGES - 2)
    assert edit_report.stats(np.full(4, np.nan), np.arange(4)) is None


def test_the_report_says_how_its_intervals_are_made(tmp_path):
    image, runs = _two_runs()
    n = len(image)
    c = toy_intervene.get_config()
    c.controls, c.shifts_per_image = ("random",), SHIFTS
    masks = np.zeros((n, 8, 8), bool)
    masks[:, 2:5, 2:5] = True
    arrays = {**_scores({"no_edit": np.zeros(n), **runs}), "target": masks, "mask|no_edit": masks,
              "mask|edited": masks}
    with io.atomic_path(edit_report.batch_path(tmp_path, 0)) as tmp:
        np.savez(tmp, **arrays)
    for run in ("no_edit", "edited"):
        for k in range(8):
            io.write_png(tmp_path / edit_report.image_path(run, k), np.zeros((8, 8, 3), np.uint8))
    edits = [{"k": k, "image": int(image[k]), "prompt": "p", "seed": int(image[k]), "dx": 2, "dy": 0}
             for k in range(n)]
    setup = types.SimpleNamespace(layers=("up_blocks_1/attentions_0/transformer_blocks_0/attn1/to_out_0",),
                                  steps=(0, 1))
    edit_report.write_report(c, tmp_path, setup, edits, 1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "clustered by image" in summary["intervals"] and summary["paired_intervals"].startswith("paired")
    assert summary["paired"]["edited - random"]["transfer"]["ci95"] == pytest.approx([0.3, 0.3], abs=1e-9)
    # the edit against every other run, and every control against the unedited sample with the same seeds
    assert set(summary["paired"]) == {"edited - no_edit", "edited - random", "random - no_edit"}
    assert summary["paired"]["random - no_edit"]["transfer"]["mean"] == pytest.approx(runs["random"].mean())
    assert summary["runs"]["edited"]["transfer"]["images"] == IMAGES
    lines = edit_report.headline(summary)
    assert "clustered by image" in lines[0]
    assert any(line.startswith("paired edited - random: transfer +0.300 [+0.300, +0.300]") for line in lines)
    assert summary["goals"][1]["value"] == summary["runs"]["edited"]["transfer"]["ci95"][0]  # the clustered one


def test_ablation_settings_are_paired_with_the_first_where_they_make_the_same_edits(tmp_path):
    base = toy_intervene.get_config()
    base.num_images, base.shifts_per_image, base.batch_size, base.controls = 3, SHIFTS, 4, ()
    configs = {name: base.copy_and_resolve_references() for name in ("best", "lr", "seed")}
    configs["lr"].lr, configs["seed"].seed = 2e-2, 1
    noise = np.random.default_rng(0).normal(size=6)
    for name, values in (("best", noise), ("lr", noise + 0.25), ("seed", noise)):
        for b in (0, 1):
            with io.atomic_path(edit_report.batch_path(tmp_path / name, b)) as tmp:
                np.savez(tmp, **{k: v[4 * b:4 * b + 4] for k, v in
                                 _scores({"no_edit": np.zeros(6), "edited": values}).items()})
    d = edit_study._paired_with(configs, tmp_path, "lr", "best")
    assert d["edited"]["transfer"]["ci95"] == pytest.approx([0.25, 0.25], abs=1e-9)
    assert d["edited"]["transfer"]["images"] == 3 and d["no_edit"]["transfer"]["mean"] == 0
    assert edit_study._paired_with(configs, tmp_path, "seed", "best") == {}  # other seeds: other edits
    assert edit_study._paired_with(configs, tmp_path, "best", "best") == {}


def test_the_tradeoff_figure_draws_every_setting_with_both_intervals(tmp_path):
    rows = [{"setting": s, "run": run, "metric": m, "mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
            for s, t in (("paper", 0.2), ("local", 0.5)) for run in ("no_edit", "edited")
            for m, v in (("transfer", t if run == "edited" else 0.0), ("colour", 0.8), ("background_change", 0.05))]
    edit_figures.tradeoff_figure(tmp_path / "tradeoff.png", rows, reference="paper")
    assert io.read_png(tmp_path / "tradeoff.png").shape[1] > 800
