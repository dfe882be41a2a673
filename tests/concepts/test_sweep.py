"""The concept sweep end to end on a tiny setting: exact-label sets of toy cards, two MobileNetV2 checkpoints."""
import csv

import numpy as np
import pytest

from configs.concepts import toy
from jaxprobe.concepts import pool, sets, sweep
from jaxprobe.testing import random_mobilenet_checkpoints
from jaxprobe.probing import report

RES = 32


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = toy.get_config()
    c.data.num_images = 240
    c.resolution = RES
    c.labels = "truth"
    c.label_grid = False  # the 2x2 needs CLIP: tests/concepts/test_baselines.py and the toy run cover it
    c.num_positive, c.num_negative = 20, 40
    c.checkpoints_dir = str(random_mobilenet_checkpoints(tmp_path_factory.mktemp("ckpts")))
    c.layers = ("features_0", "features_1", "features_17", "features_18")
    c.probe.epochs, c.probe.lr, c.probe.hidden = 20, 3e-3, 16
    return c


@pytest.fixture(scope="module")
def finished(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    return workdir, sweep.run(config, workdir)


@pytest.mark.slow  # ~90 s on 2 cores: every family compiles per input width
def test_sweep_writes_every_probe_and_the_figures(config, finished):
    workdir, summary = finished
    for family in config.families:
        rows = report.read_results_csv(workdir / family / "results.csv")
        # (2 models x 7 concepts x 4 modules + the pixel baseline's 7 concepts) x 2 checkpoints x 2 splits
        assert len(rows) == (2 * 7 * 4 + 7) * 2 * 2
        assert {r["step"] for r in rows} == {0, 7}
        assert {r["model"] for r in rows} == {"trained", "shuffled", "pixels"}
        assert {r["layer"] for r in rows} == {*config.layers, "pixels"}
        assert all(0.0 <= r["value"] <= 1.0 and r["metric"] == "accuracy" for r in rows)
        assert len(list((workdir / family / "figures").glob("*.png"))) == 7 * 2  # the maps and the intervals
        with open(workdir / family / "intervals.csv") as f:
            intervals = list(csv.DictReader(f))
        test = [r for r in rows if r["split"] == "test"]
        assert [float(r["value"]) for r in intervals] == [r["value"] for r in test]
        assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in intervals)
    assert (workdir / "labels" / "top_positives.png").exists()
    with open(workdir / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 7 * 5 and {r["module"] for r in table} == {*config.layers, "pixels"}
    assert all(float(r[f"{f}_ci_low"]) <= float(r[f]) <= float(r[f"{f}_ci_high"]) for r in table
               for f in config.families)
    assert {q["concept"] for q in summary["label_quality"]} == {"red", "yellow", "green", "blue", "dotted",
                                                                "striped", "zigzagged"}


@pytest.mark.slow  # ~90 s on 2 cores: every family compiles per input width
def test_checkpoints_give_different_activations_and_accuracies(config, finished):
    """The original's bug (one checkpoint loaded for every column) must be impossible."""
    workdir, _ = finished
    module, ckpts = sweep.load_checkpoints(config)
    images = pool.load_pool(config).images[:16]
    a, b = (sweep.capture(module, v, images, config.layers, 8) for _, v in ckpts)
    for layer in config.layers:
        assert not np.allclose(a[layer], b[layer]), layer
    rows = report.read_results_csv(workdir / "non_linear_non_gap" / "results.csv")
    by_step = {s: [r["value"] for r in rows if r["step"] == s and r["model"] != "pixels"] for s in (0, 7)}
    assert by_step[0] != by_step[7]


@pytest.mark.slow  # ~90 s on 2 cores: every family compiles per input width
def test_pixel_baseline_is_the_same_at_every_checkpoint(config, finished):
    """It reads the raw input only, so no checkpoint can change it."""
    workdir, _ = finished
    for family in config.families:
        rows = report.read_results_csv(workdir / family / "results.csv")
        by_step = {s: [(r["task"], r["split"], r["value"]) for r in rows if r["step"] == s and r["model"] == "pixels"]
                   for s in (0, 7)}
        assert len(by_step[0]) == 7 * 2 and by_step[0] == by_step[7]


@pytest.mark.slow  # ~90 s on 2 cores: every family compiles per input width
def test_colour_is_decoded_from_the_first_module_and_shuffled_labels_are_not(finished):
    """Even a random network passes colour through features_0: the probe must beat the shuffled control."""
    workdir, _ = finished
    rows = report.read_results_csv(workdir / "linear_gap" / "results.csv")

    def mean(model, concepts):
        vals = [r["value"] for r in rows if r["model"] == model and r["layer"] == "features_0"
                and r["split"] == "test" and r["task"] in concepts]
        return float(np.mean(vals))

    colours = ("red", "yellow", "green", "blue")
    assert mean("trained", colours) > 0.85
    assert mean("trained", colours) > mean("shuffled", colours) + 0.15


@pytest.mark.slow  # ~90 s on 2 cores: every family compiles per input width
def test_resume_is_bit_identical(config, finished, tmp_path):
    workdir, _ = finished
    import shutil
    shutil.copytree(workdir, tmp_path / "w")
    (tmp_path / "w" / "parts" / "step_0000007.csv").unlink()
    sweep.run(config, tmp_path / "w")
    for family in config.families:
        for name in ("results.csv", "intervals.csv"):
            assert (tmp_path / "w" / family / name).read_bytes() == (workdir / family / name).read_bytes()


def test_bad_inputs_fail_before_any_work(tmp_path):
    """On the shipped checkpoints (no model is initialised, so this stays in the fast tier)."""
    config = toy.get_config()
    config.data.num_images = 400
    bad = config.copy_and_resolve_references()
    bad.model.width_mult = 0.75
    with pytest.raises(ValueError, match="does not fit config.model"):
        sweep.run(bad, tmp_path / "a")
    bad = config.copy_and_resolve_references()
    bad.groups = {"colour": ["red", "none"]}
    with pytest.raises(ValueError, match="unknown concept group 'colour'"):
        sweep.run(bad, tmp_path / "b")
    bad = config.copy_and_resolve_references()
    bad.families = ("linear_gap", "conv")
    with pytest.raises(ValueError, match="unknown config.families entry 'conv'"):
        sweep.run(bad, tmp_path / "c")
    bad = config.copy_and_resolve_references()
    bad.checkpoint_steps = (5,)
    with pytest.raises(ValueError, match=r"config.checkpoint_steps \[5\] are not in"):
        sweep.run(bad, tmp_path / "d")
    assert not any((tmp_path / k).exists() for k in "abcd")
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\]"):
        pool.check_images(np.zeros((4, 64, 64, 3), np.uint8), 32)


def _concept_set(concept, positives, negatives, rng):
    """A ConceptSet with a 70/30 split of its (shuffled) positives and negatives."""
    idx = rng.permutation(np.concatenate([positives, negatives]))
    y = np.isin(idx, positives)
    cut = int(0.7 * len(idx))
    return sets.ConceptSet(concept, "colour", positives, negatives, idx[:cut], y[:cut], idx[cut:], y[cut:])


@pytest.mark.slow  # every family on synthetic modules (~15 s)
def test_probe_checkpoint_reads_a_concept_where_a_module_carries_it():
    """Image-level probes, grouped by input width and scored by the core: a module whose map carries the concept
    is read at ~1, a noise module and the shuffled control near chance; one row per family, model, concept,
    module and split."""
    rng = np.random.default_rng(0)
    n = 90
    red, blue = np.arange(0, 30), np.arange(30, 60)
    concept_sets = [_concept_set("red", red, np.setdiff1d(np.arange(n), red)[:30], rng),
                    _concept_set("blue", blue, np.setdiff1d(np.arange(n), blue)[:30], rng)]
    carries = rng.normal(scale=0.3, size=(n, 2, 2, 4)).astype(np.float32)
    carries[red, ..., 0] += 1.0
    carries[blue, ..., 1] += 1.0
    acts = {"carries": carries, "noise": rng.normal(size=(n, 2, 2, 4)).astype(np.float32),
            "wide": rng.normal(size=(n, 1, 1, 6)).astype(np.float32)}  # another input width: another group
    c = toy.get_config()
    c.probe.epochs, c.probe.non_gap_epochs, c.probe.hidden, c.probe.batch_size = 40, 40, 8, 8
    rows = sweep.probe_checkpoint(acts, concept_sets, c, step=3)
    assert len(rows) == len(c.families) * 2 * 2 * 3 * 2
    assert {(r["family"], r["model"], r["task"], r["layer"], r["split"]) for r in rows} == {
        (f, m, t, l, s) for f in c.families for m in ("trained", "shuffled") for t in ("red", "blue")
        for l in acts for s in ("train", "test")}
    assert all(r["step"] == 3 and r["metric"] == "accuracy" for r in rows)
    test = {(r["family"], r["model"], r["task"], r["layer"]): r["value"] for r in rows if r["split"] == "test"}
    for family in c.families:
        for concept in ("red", "blue"):
            assert test[family, "trained", concept, "carries"] >= 0.9, (family, concept)
            assert test[family, "trained", concept, "noise"] <= 0.8, (family, concept)
            assert test[family, "shuffled", concept, "carries"] <= 0.8, (family, concept)
