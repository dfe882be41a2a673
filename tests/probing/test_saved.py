"""Fitted probes as artifacts: the saved file loads back to the very probes (linear, MLP, ridge), in order."""
import jax
import numpy as np
import pytest

import safetensors.numpy

from jaxprobe.probing import fit, probes, ridge, saved
from jaxprobe.probing.tasks import Task

N, C = 12, 8
SALIENCY = Task("saliency", "mask", ("dice", "iou"), headline="dice")
DEPTH = Task("depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    acts = {"b/layer": rng.normal(size=(N, 2, 4, 4, C)).astype(np.float32),  # call order b, a: not alphabetical
            "a/layer": rng.normal(size=(N, 1, 2, 2, C)).astype(np.float32)}
    return acts, {SALIENCY: rng.random((N, 8, 8)) < 0.4, DEPTH: rng.normal(size=(N, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["linear", pytest.param("mlp", marks=pytest.mark.slow),
                                  pytest.param("ridge", marks=pytest.mark.slow)])
def test_saved_probes_round_trip_to_identical_predictions(data, tmp_path, kind):
    acts, labels = data
    for task in (SALIENCY, DEPTH):
        if kind == "ridge":
            fitted, _ = ridge.fit_ridge_sweep(acts, labels[task], task, seed=0)
        else:
            fitted = fit.fit_sweep(acts, labels[task], task, kind=kind, epochs=2, hidden=16)
        steps = (3, 9)  # capture index -> denoising step
        original = saved.SavedProbes(model="trained", task=task, kind=kind,
                                     probes={(layer, steps[i]): p for (layer, i), p in fitted.items()},
                                     meta={"probe": {"kind": kind, "lr": 1e-3}, "steps": steps})
        path = saved.path_for(tmp_path, "trained", task)
        saved.save(path, original)
        back = saved.load(path)
        assert (back.model, back.task, back.kind) == ("trained", task, kind)  # the whole task: kind, metrics
        assert path.name == f"trained_{task.name}.safetensors"
        assert back.meta == {"probe": {"kind": kind, "lr": 1e-3}, "steps": [3, 9]}
        assert list(back.probes) == [("b/layer", 3), ("b/layer", 9), ("a/layer", 3)]  # saved order, not sorted
        assert back.layers() == ["b/layer", "a/layer"] and back.steps("b/layer") == [3, 9]
        for (layer, i), params in fitted.items():
            loaded = back.probes[(layer, steps[i])]
            assert jax.tree.structure(loaded) == jax.tree.structure(params)
            jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
            x = jax.numpy.asarray(acts[layer][:, i])
            np.testing.assert_array_equal(np.asarray(probes.predict(loaded, x, (8, 8))),
                                          np.asarray(probes.predict(params, x, (8, 8))))


def test_bad_probe_files_are_refused_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved probes"):
        saved.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="junk.safetensors"):
        saved.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="no probes to save"):
        saved.save(tmp_path / "empty.safetensors", saved.SavedProbes("trained", DEPTH, "linear", {}))
    with pytest.raises(TypeError, match="expected a probing.tasks.Task, got str 'depth'"):
        saved.save(tmp_path / "name.safetensors", saved.SavedProbes("trained", "depth", "linear", {}))
    metadata = {"format": saved.FORMAT, "model": "trained", "task": "depth", "kind": "linear", "layers": '["a"]',
                "meta": "{}"}  # a file from before probes carried their task
    safetensors.numpy.save_file({"a|0|kernel": np.zeros((2, 1), np.float32)}, tmp_path / "old.safetensors",
                                metadata=metadata)
    with pytest.raises(ValueError, match="old.safetensors does not define its task 'depth'.*refit"):
        saved.load(tmp_path / "old.safetensors")
    with pytest.raises(ValueError, match="does not define its task 'depth'"):  # another task's definition
        saved.load(tmp_path / "old.safetensors", task=Task("saliency", "mask", ("dice",), "dice"))
    old = saved.load(tmp_path / "old.safetensors", task=DEPTH)  # the caller knows the task it asked for
    assert old.task == DEPTH and list(old.probes) == [("a", 0)]
