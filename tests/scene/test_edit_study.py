"""The intervention study's job: its config is checked against the pipeline and the saved probes before any
sampling, with errors that name the valid choices; a killed run resumes to the same files."""
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from configs.scene import toy_intervene
from jaxprobe import io
from jaxprobe.models import load_pipeline
from jaxprobe.probing import saved
from jaxprobe.scene import edit_study
from jaxprobe.scene.tasks import SALIENCY
from jaxprobe.testing import random_linear_probes

STEPS = 3  # the sampling steps of the probes_dir fixture's probes (conftest.py)


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    return load_pipeline(tiny_dir)


def _config(tiny_dir, probes_dir, **over):
    directory, layers = probes_dir
    c = toy_intervene.get_config()
    c.pipeline_dir, c.labelers_dir, c.labels_dir = str(tiny_dir), "", str(tiny_dir / "labels")
    c.prompts_file, c.probes, c.layers, c.steps = str(tiny_dir / "prompts.txt"), str(directory), layers, (0, 1)
    c.resolution, c.num_inference_steps, c.num_images, c.shifts_per_image, c.batch_size = 16, STEPS, 3, 2, 4
    c.shift_fraction, c.iterations, c.lr = (0.1, 0.3), 4, 0.05
    c.update(over)
    return c


def test_a_good_config_resolves_its_layers_steps_and_targets(tiny_dir, probes_dir, pipe):
    plan = edit_study.check(_config(tiny_dir, probes_dir), pipe)
    assert plan.layers == tuple(probes_dir[1]) and plan.steps == (0, 1)
    assert plan.active.tolist() == [True, True, False] and plan.plain_labels[0].shape == (3, 16, 16)


def test_the_shuffled_control_edits_with_the_sweeps_shuffled_label_probes(tiny_dir, probes_dir, pipe, tmp_path):
    directory = shutil.copytree(probes_dir[0], tmp_path / "sweep")
    trained = saved.load(saved.path_for(directory / "probes", "trained", SALIENCY))
    shuffled = random_linear_probes(pipe, probes_dir[1], (0, 1), np.random.default_rng(1))
    saved.save(saved.path_for(directory / "probes", "shuffled", SALIENCY),
               saved.SavedProbes(**{**vars(trained), "model": "shuffled", "probes": shuffled}))
    plan = edit_study.check(_config(tiny_dir, probes_dir, probes=str(directory), controls=("shuffled",)), pipe)
    layer = probes_dir[1][0]
    np.testing.assert_array_equal(plan.control_probes[layer]["kernel"][0], shuffled[layer, 0]["kernel"])
    assert not np.allclose(plan.control_probes[layer]["kernel"][0], plan.probes[layer]["kernel"][0])


@pytest.mark.parametrize("over, error", [
    (dict(task="edges"), "unknown config.task 'edges'; valid choices: saliency, depth"),
    (dict(controls=("null", "shufled")), "valid choices: null, random, opposite, roll, shuffled"),
    (dict(controls=("shuffled",)), "which edits with the sweep's shuffled-label probes; .* has none"),
    (dict(lr=0.0), "config.lr must be a finite number > 0"),
    (dict(random_scale=0.0), "config.random_scale must be a finite number > 0"),
    (dict(mode="gradient"), "unknown config.mode 'gradient'; valid choices: adam, min_norm"),
    (dict(mode="min_norm", relative=True), "config.relative and config.stop_loss apply to mode 'adam'"),
    (dict(stop_loss=-1.0), "config.stop_loss must be a finite loss >= 0"),
    (dict(local=True, labels_dir=""), "config.local needs the region of the plain object and its target"),
    (dict(hold_background=True, labels_dir=""), "config.hold_background needs the region"),
    (dict(region_radius=-1), "config.region_radius must be >= 0"),
    (dict(num_inference_steps=4), "the probes were fitted at num_inference_steps=3"),
    (dict(steps=(0, 2)), r"no saved saliency probe for \(layer, step\) .* at steps \[0, 1\]"),
    (dict(layers=("down_blocks*attn1/to_out_0",)), r"no saved saliency probe for .*down_blocks.*; probes exist for up_blocks"),
    (dict(task="depth"), r"no trained_depth.safetensors in .*; it has \['trained_saliency'\]"),
    (dict(labels_dir="", hold_background=False), "set config.labelers_dir, or config.labels_dir"),
    (dict(shift_fraction=(0.3, 0.1)), "config.shift_fraction: shift fraction"),
    (dict(num_images=9), "prompts.txt has 8 prompts; config.num_images = 9"),
])
def test_bad_configs_fail_before_any_sampling(tiny_dir, probes_dir, pipe, over, error):
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        edit_study.check(_config(tiny_dir, probes_dir, **over), pipe)


@pytest.mark.parametrize("meta, error", [
    ({"pipeline_sha256": "0" * 64}, "fitted on another pipeline"),
    ({"store_pool": 2}, "fitted on activations average-pooled 2x2 .* fit probes with store_pool=1"),
])
def test_probes_of_another_pipeline_or_pooled_ones_are_refused(tiny_dir, probes_dir, pipe, tmp_path, meta, error):
    other = tmp_path / "other"
    probe_set = saved.load(saved.path_for(probes_dir[0] / "probes", "trained", SALIENCY))
    saved.save(saved.path_for(other / "probes", "trained", SALIENCY),
               saved.SavedProbes(**{**vars(probe_set), "meta": {**probe_set.meta, **meta}}))
    with pytest.raises(ValueError, match=error):
        edit_study.check(_config(tiny_dir, probes_dir, probes=str(other)), pipe)


def test_a_target_file_of_the_wrong_shape_is_refused(tiny_dir, probes_dir, pipe, tmp_path):
    np.save(tmp_path / "target.npy", np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"has shape \(8, 8\); the labels are \(16, 16\)"):
        edit_study.check(_config(tiny_dir, probes_dir, target_file=str(tmp_path / "target.npy"),
                                 controls=("random",)), pipe)
    np.save(tmp_path / "target.npy", np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="'opposite', which needs a translation"):
        edit_study.check(_config(tiny_dir, probes_dir, target_file=str(tmp_path / "target.npy")),
                         pipe)


@pytest.mark.slow  # kill-and-resume
def test_a_killed_run_resumes_to_the_same_files(tiny_dir, probes_dir, tmp_path, monkeypatch):
    c = _config(tiny_dir, probes_dir, controls=("null", "random", "opposite", "roll"))
    edit_study.run(c, tmp_path / "full")
    real = edit_study.run_batch
    monkeypatch.setattr(edit_study, "run_batch", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())
                        if a[4] == 1 else real(*a))
    with pytest.raises(KeyboardInterrupt):
        edit_study.run(c, tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed" / "batches").iterdir()) == ["00000.npz"]
    monkeypatch.setattr(edit_study, "run_batch", real)
    edit_study.run(c, tmp_path / "killed")
    files = sorted(p.relative_to(tmp_path / "full") for p in (tmp_path / "full").rglob("*.png"))
    assert len(files) == 6 * 6 and (tmp_path / "full" / "edits.csv").read_text() == \
        (tmp_path / "killed" / "edits.csv").read_text()
    for f in files:
        np.testing.assert_array_equal(io.read_png(tmp_path / "full" / f), io.read_png(tmp_path / "killed" / f))
    for run in ("edited", "roll"):
        assert not (io.read_png(tmp_path / "full" / "no_edit" / "0.png") ==
                    io.read_png(tmp_path / "full" / run / "0.png")).all()


def test_best_layers_are_the_best_reading_probes_at_the_edited_steps(tiny_dir, probes_dir, pipe, tmp_path):
    c = _config(tiny_dir, probes_dir, layers=("best:1",))
    with pytest.raises(FileNotFoundError, match="ranks layers by the sweep's .*results.csv, which does not exist"):
        edit_study.check(c, pipe)
    first, second = probes_dir[1]
    rows = [{"model": "trained", "task": "saliency", "layer": layer, "step": step, "split": "test",
             "metric": "dice", "value": value}
            for layer, step, value in ((first, 0, 0.1), (first, 1, 0.2), (second, 0, 0.3), (second, 1, 0.05),
                                       (first, 2, 0.9))]  # step 2 is not edited: it must not count
    (tmp_path / "probes").symlink_to(probes_dir[0] / "probes")
    io.write_csv(tmp_path / "results.csv", rows, list(rows[0]))
    c.probes = str(tmp_path)
    assert edit_study.check(c, pipe).layers == (second,)  # mean Dice 0.175 vs 0.15 over steps 0-1
    c.layers = ("best:2",)
    assert set(edit_study.check(c, pipe).layers) == {first, second}


def test_an_ablation_checks_every_setting_before_the_first_runs(tiny_dir, probes_dir, tmp_path):
    c = _config(tiny_dir, probes_dir)
    c.ablation = ml_collections.ConfigDict({"a": {}, "b": {"steps": (0, 2)}})
    with pytest.raises(ValueError, match="need config.labelers_dir"):
        edit_study.ablate(c, tmp_path)
    c.labelers_dir = str(Path(__file__).resolve().parents[2] / "assets" / "toy_labelers")
    c.ablation = ml_collections.ConfigDict({"b": {"steps": (0, 2)}})
    with pytest.raises(ValueError, match="config.ablation.b: config.layers/steps: no saved saliency probe"):
        edit_study.ablate(c, tmp_path)
    c.ablation = ml_collections.ConfigDict({"a": {"lrr": 0.1}})
    with pytest.raises(ValueError, match="config.ablation.a: unknown config key 'lrr'; valid keys: "):
        edit_study.ablate(c, tmp_path)
    assert not any(tmp_path.iterdir())
