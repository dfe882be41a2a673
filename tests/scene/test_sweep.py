"""The probe sweep end to end on the tiny random pipeline: outputs, resume after a kill, bad input."""
import shutil

import numpy as np
import pytest
from golden import assert_matches_golden, read_csv

from configs.scene import toy_probe
from jaxprobe import jobs
from jaxprobe.probing import fit, probes, ridge, saved, store
from jaxprobe.scene import baselines, fit_stage, sweep
from jaxprobe.scene.tasks import BY_NAME


def _config(tiny_dir, data):
    c = toy_probe.get_config()
    c.pipeline_dir = str(tiny_dir)
    c.prompts_file = str(tiny_dir / "prompts.txt")
    c.data, c.resolution = data, 16
    c.num_train, c.num_val, c.num_test, c.batch_size = 4, 0, 4, 3  # no val: the goldens predate it
    c.num_inference_steps, c.steps = 3, (0, 2)
    c.probe.epochs, c.probe.headline_seeds = 2, 1  # no seed refits but where a test asks for them
    if data == "generated":  # labels for the generated images, as a user of configs/scene/sd_v1_paper.py supplies them
        c.labels_dir = str(tiny_dir / "labels")
    else:
        c.models = ("trained", "randomized")
    return c


def _results(workdir):
    return read_csv(workdir / "results.csv")


@pytest.mark.slow  # an end-to-end run (the fast tier keeps <= ~5 min on 2 cores)
def test_generated_sweep_writes_every_model_layer_step(tiny_dir, tmp_path):
    c = _config(tiny_dir, "generated")
    summary = sweep.run(c, tmp_path / "run")
    rows = _results(tmp_path / "run")
    assert list(rows[0]) == ["model", "task", "layer", "step", "split", "metric", "value"]
    assert_matches_golden(rows, "tiny_generated_results.csv")
    cells = {(r["model"], r["task"], r["layer"], r["step"], r["split"], r["metric"]) for r in rows}
    layers = {r["layer"] for r in rows if r["model"] == "trained"}
    assert len(layers) == 6  # the tiny UNet's attn1 layers: down1 x2, mid, up0 x3
    assert {r["layer"] for r in rows if r["model"] == "vae"} == {sweep.VAE_LAYER}
    for task in c.tasks:  # the references: the prior at its one layer, the ceiling at every probed layer
        assert {r["layer"] for r in rows if r["model"] == "prior" and r["task"] == task} == {"mean_label"}
        assert {r["layer"] for r in rows if r["model"] == "ceiling" and r["task"] == task} == layers
    assert {r["step"] for r in rows} == {"0", "2"}
    assert len(cells) == len(rows)
    for model in ("trained", "randomized", "vae"):
        assert set(summary[model]) == {"saliency", "depth"}
        assert {(e["selected_on"], e["n_val"]) for e in summary[model].values()} == {("test", 0)}  # num_val = 0
    for name in ("heatmap_saliency_dice", "heatmap_depth_rmse", "curves_saliency_dice", "predictions"):
        assert (tmp_path / "run" / "figures" / f"{name}.png").stat().st_size > 1000

    # The saved probes are the ones scored: evaluated on the stored test activations they give results.csv.
    act_store = store.ActivationStore(tmp_path / "run" / "activations")
    labels = sweep.labels_for(c, tmp_path / "run")
    test = np.arange(c.num_train, c.num_train + c.num_test)
    for model in c.models:
        for task in c.tasks:
            probe_set = saved.load(saved.path_for(tmp_path / "run" / "probes", model, BY_NAME[task]))
            assert (probe_set.model, probe_set.task, probe_set.kind) == (model, BY_NAME[task], "linear")
            assert probe_set.meta["weights_sha256"] and probe_set.meta["probe"]["epochs"] == c.probe.epochs
            assert probe_set.meta["pipeline_sha256"] == jobs.weights_fingerprint(tiny_dir)  # what intervene checks
            steps = list(c.steps)
            acts = {layer: act_store.read(f"{model}/{layer}")[test] for layer in probe_set.layers()}
            fitted = {(layer, steps.index(step)): p for (layer, step), p in probe_set.probes.items()}
            scores = probes.evaluate_sweep(fitted, acts, labels[task][test], BY_NAME[task])
            expected = {(layer, str(steps[i]), m): float(np.mean(v))
                        for (layer, i), ms in scores.items() for m, v in ms.items()}
            got = {(r["layer"], r["step"], r["metric"]): float(r["value"]) for r in rows
                   if r["model"] == model and r["task"] == task and r["split"] == "test"}
            assert got.keys() == expected.keys()
            np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # kill-and-resume
def test_killed_sweep_resumes_to_identical_results(tiny_dir, tmp_path, monkeypatch):
    c = _config(tiny_dir, "encoded")
    sweep.run(c, tmp_path / "full")
    assert_matches_golden(_results(tmp_path / "full"), "tiny_encoded_results.csv")

    real_write, real_epoch = store.ActivationStore.write_chunk, fit.run_epoch
    calls = {"chunks": 0, "epochs": 0}

    def write_then_die(self, *a, **kw):
        calls["chunks"] += 1
        if calls["chunks"] == 2:
            raise KeyboardInterrupt("killed while capturing")
        return real_write(self, *a, **kw)

    monkeypatch.setattr(store.ActivationStore, "write_chunk", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(c, tmp_path / "killed")
    monkeypatch.setattr(store.ActivationStore, "write_chunk", real_write)

    def epoch_then_die(*a, **kw):
        calls["epochs"] += 1
        if calls["epochs"] == 5:
            raise KeyboardInterrupt("killed while fitting")
        return real_epoch(*a, **kw)

    monkeypatch.setattr(fit, "run_epoch", epoch_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(c, tmp_path / "killed")
    monkeypatch.setattr(fit, "run_epoch", real_epoch)
    sweep.run(c, tmp_path / "killed")
    assert _results(tmp_path / "killed") == _results(tmp_path / "full")


@pytest.mark.slow  # two fits of one capture, one of them killed
def test_fitting_a_layer_at_a_time_gives_the_whole_fits_results(tiny_dir, tmp_path, monkeypatch):
    """config.fit_memory_gb below one layer: every layer is read and fit alone (killed in its third layer and
    resumed), on the store of a sweep fitted all at once; the workdir takes the changed budget."""
    c = _config(tiny_dir, "encoded")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    sweep.run(c, whole)
    shutil.copytree(whole, parts, ignore=shutil.ignore_patterns("probes", "scores", "probe_checkpoints", "figures",
                                                                 "results.csv", "summary.json"))
    c.fit_memory_gb = 1e-9
    real_fit, calls = fit.fit_sweep, []

    def fit_then_die(acts, *a, **kw):
        calls.append(sorted(acts))
        if len(calls) == 3:
            kw = {**kw, "epochs": 1}  # the checkpoint of a part half done, then the kill
            real_fit(acts, *a, **kw)
            raise KeyboardInterrupt("killed while fitting")
        return real_fit(acts, *a, **kw)

    monkeypatch.setattr(fit, "fit_sweep", fit_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(c, parts)
    monkeypatch.setattr(fit, "fit_sweep", real_fit)
    sweep.run(c, parts)
    assert all(len(layers) == 1 for layers in calls)
    np.testing.assert_allclose(*[[float(r["value"]) for r in _results(w)] for w in (parts, whole)], rtol=1e-6,
                               atol=1e-7)
    assert [{k: v for k, v in r.items() if k != "value"} for r in _results(parts)] == \
        [{k: v for k, v in r.items() if k != "value"} for r in _results(whole)]


@pytest.mark.slow  # an end-to-end run (the fast tier keeps <= ~5 min on 2 cores)
def test_ridge_sweep_reports_the_closed_form_probes_of_the_train_split(tiny_dir, tmp_path):
    """The ridge probes of the train split, and the shuffled-label control's: fit on the trained activations with
    the fit images' labels permuted, scored against the true test labels."""
    c = _with(_config(tiny_dir, "encoded"), models=("trained", "shuffled"))
    c.probe.kind = "ridge"
    sweep.run(c, tmp_path / "run")
    act_store = store.ActivationStore(tmp_path / "run" / "activations")
    labels = sweep.labels_for(c, tmp_path / "run")
    layers = sorted({r["layer"] for r in _results(tmp_path / "run") if r["model"] == "trained"})
    acts = {layer: act_store.read(f"trained/{layer}") for layer in layers}
    assert not (tmp_path / "run" / "activations" / "shuffled").exists()  # nothing more is captured for it
    for model, task in [(m, t) for m in c.models for t in c.tasks]:
        fit_labels = labels[task][:4] if model == "trained" else baselines.shuffled_labels(labels[task][:4],
                                                                                           c.probe.seed)
        fitted, _ = ridge.fit_ridge_sweep({k: v[:4] for k, v in acts.items()}, fit_labels, BY_NAME[task], seed=0)
        scores = probes.evaluate_sweep(fitted, {k: v[4:] for k, v in acts.items()}, labels[task][4:], BY_NAME[task])
        expected = {(layer, str(c.steps[i]), m): float(np.mean(v))
                    for (layer, i), ms in scores.items() for m, v in ms.items()}
        got = {(r["layer"], r["step"], r["metric"]): float(r["value"]) for r in _results(tmp_path / "run")
               if r["model"] == model and r["task"] == task and r["split"] == "test"}
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-5, atol=1e-6)


def test_bad_sweep_configs_fail_before_any_work(tiny_dir, tmp_path):
    c = _config(tiny_dir, "encoded")
    with pytest.raises(ValueError, match="valid choices: generated, encoded"):
        sweep.run(_with(c, data="imagined"), tmp_path / "a")
    lasso = _with(c)
    lasso.probe.kind = "lasso"
    with pytest.raises(ValueError, match="valid choices: linear, affine, mlp, ridge"):
        sweep.run(lasso, tmp_path / "a")
    with pytest.raises(ValueError, match="config.num_test must be >= 1"):
        sweep.run(_with(c, num_test=0), tmp_path / "b")
    with pytest.raises(ValueError, match="out of range"):
        sweep.run(_with(c, steps=(0, 7)), tmp_path / "c")
    with pytest.raises(ValueError, match="matches no UNet module"):
        sweep.run(_with(c, layers=("*attn3/to_out_0",)), tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in "abcd")  # nothing written for a rejected config


def test_a_workdir_refuses_another_config_and_retrained_weights(tiny_dir, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file
    pipe_dir = shutil.copytree(tiny_dir, tmp_path / "pipe")
    c = _with(_config(tiny_dir, "encoded"), pipeline_dir=str(pipe_dir), num_test=1, models=("trained",),
              tasks=("saliency",), stage="capture")  # the first stage claims the workdir for every later one
    sweep.run(c, tmp_path / "run")
    with pytest.raises(ValueError, match="another config"):
        sweep.run(_with(c, num_test=2), tmp_path / "run")
    weights = next(pipe_dir.glob("unet/*.safetensors"))
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0  # "retrained"
    save_file(tensors, weights)
    with pytest.raises(ValueError, match="weights_sha256"):
        sweep.run(c, tmp_path / "run")


def _with(c, **changes):
    c = c.copy_and_resolve_references()
    for k, v in changes.items():
        setattr(c, k, v)
    return c


def test_val_is_carved_from_the_end_of_the_train_images():
    c = toy_probe.get_config()
    c.num_train, c.num_val, c.num_test = 10, 3, 5
    rows = fit_stage.split_rows(c)
    assert list(rows) == ["train", "val", "test"]
    assert [list(r) for r in rows.values()] == [list(range(7)), [7, 8, 9], list(range(10, 15))]
    c.num_val = 0  # no val split at all, and the cells are chosen on test
    assert list(fit_stage.split_rows(c)) == ["train", "test"] and fit_stage.selection_split(c) == "test"
    assert list(fit_stage.split_rows(c)["train"]) == list(range(10))


@pytest.mark.slow  # an end-to-end sweep with its seed refits (the selection itself: tests/probing/test_report.py)
def test_a_sweep_with_val_chooses_on_it_and_refits_the_chosen_cell_with_more_probe_seeds(tiny_dir, tmp_path):
    """Probes fit on the first 3 of 4 train images, cells chosen on the 4th; the chosen cell refit with seed 1. The
    sweep's own probe, refit alone on the fit rows (`refit_cell` with the sweep's seed), scores the headline value:
    this fails if the refit read other rows or another recipe than the sweep's fit."""
    c = _with(_config(tiny_dir, "encoded"), num_val=1, num_test=2, models=("trained",), tasks=("saliency",),
              layers=("up_blocks_0/*attn1/to_out_0",))  # three layers of one shape: one fit group
    c.probe.headline_seeds = 2
    summary = sweep.run(c, tmp_path / "run")
    entry = summary["trained"]["saliency"]
    best = entry["best"]
    assert (entry["selected_on"], entry["n_val"], entry["n_images"]) == ("val", 1, 2)
    assert {r["split"] for r in _results(tmp_path / "run")} == {"train", "val", "test"}
    spread = best["seed_spread"]
    assert spread["seeds"] == [0, 1] and len(spread["test"]) == 2 and spread["test"][0] == best["mean"]
    assert spread["std"] == pytest.approx(np.std(spread["test"], ddof=1))
    predicted = np.load(tmp_path / "run" / "scores" / "best_saliency.npz")
    assert (str(predicted["layer"]), int(predicted["step"])) == (best["layer"], best["step"])

    act_store = store.ActivationStore(tmp_path / "run" / "activations")
    y = sweep.labels_for(c, tmp_path / "run")["saliency"]
    index = list(c.steps).index(best["step"])
    acts = act_store.read(f"trained/{best['layer']}")[:, index:index + 1]
    params = fit_stage.refit_cell(c.probe, acts[:3], y[:3], BY_NAME["saliency"], best["layer"], index, c.probe.seed)
    scores = probes.evaluate_sweep({(best["layer"], 0): params}, {best["layer"]: acts[4:]}, y[4:], BY_NAME["saliency"])
    assert float(np.mean(scores[best["layer"], 0]["dice"])) == pytest.approx(best["mean"], rel=1e-5, abs=1e-6)


def test_layer_parts_hold_at_most_the_budget_and_a_larger_layer_alone():
    sizes = {"a": 4, "b": 5, "c": 20, "d": 1, "e": 9}
    assert sweep.layer_parts(sizes, 10e-9) == [["a", "b"], ["c"], ["d", "e"]]
    assert sweep.layer_parts(sizes, 0) == [list(sizes)]
