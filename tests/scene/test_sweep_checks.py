"""A sweep fails fast and clearly: a bad config is refused before the workdir is claimed or anything is captured,
the refusal names the config key, and a sweep without step 0 runs through its report."""
import json
import math

import pytest

from configs.scene import toy_probe
from jaxprobe import io
from jaxprobe import jobs
from jaxprobe.models import load_pipeline
from jaxprobe.scene import figures, sweep


@pytest.fixture(scope="module")
def tiny_pipe(tiny_dir):
    return load_pipeline(tiny_dir)


@pytest.fixture
def loaded(tiny_dir, tiny_pipe, monkeypatch):
    """The tiny pipeline directory, its pipeline loaded once per module: a refused config costs only its checks."""
    monkeypatch.setattr(jobs, "load_pipeline", lambda directory, **_: tiny_pipe)
    return tiny_dir


def _config(tiny_dir, **changes):
    """The tiny generated-data sweep of tests/scene/test_sweep.py (user-supplied labels), with `changes` applied
    (dotted keys reach into config.probe)."""
    c = toy_probe.get_config()
    c.pipeline_dir = str(tiny_dir)
    c.prompts_file = str(tiny_dir / "prompts.txt")
    c.labels_dir = str(tiny_dir / "labels")
    c.resolution, c.num_train, c.num_val, c.num_test, c.batch_size = 16, 4, 0, 4, 3
    c.num_inference_steps, c.steps, c.probe.headline_seeds = 3, (0, 2), 1
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


MISSING = "no/such/path"  # relative to the tiny pipeline's directory, the tests' working directory
BAD = {  # id: (changes, exception, the message must match)
    "data": ({"data": "imagined"}, ValueError,
             r"unknown config.data 'imagined'; valid choices: generated, encoded"),
    "models": ({"models": ("trained", "randomised")}, ValueError,
               r"unknown config.models 'randomised'; valid choices: trained, randomized, vae, vae_x0, shuffled"),
    "vae model": ({"models": ("trained", "vae_xt")}, ValueError,
                  r"unknown config.models 'vae_xt'; valid choices: trained, randomized, vae, vae_x0, shuffled"),
    "no models": ({"models": ()}, ValueError, r"config.models is empty"),
    "shuffled alone": ({"models": ("shuffled",)}, ValueError, r"'shuffled' fits probes on the trained UNet's "
                                                               r"activations; add 'trained'"),
    "tasks": ({"tasks": ("depth", "normals")}, ValueError, r"unknown config.tasks 'normals'"),
    "probe.kind": ({"probe.kind": "lasso"}, ValueError, r"unknown config.probe.kind 'lasso'"),
    "probe.label_mode": ({"probe.label_mode": "upsampel"}, ValueError,
                         r"unknown config.probe.label_mode 'upsampel'; valid choices: upsample, downsample"),
    "scheduler": ({"scheduler": "lsm"}, ValueError, r"config.scheduler: unknown scheduler 'lsm'"),
    "store_dtype": ({"store_dtype": "bfloat61"}, ValueError, r"unknown config.store_dtype 'bfloat61'"),
    "pipeline_dir": ({"pipeline_dir": MISSING}, FileNotFoundError, r"config.pipeline_dir"),
    "labelers_dir": ({"labels_dir": "", "labelers_dir": MISSING}, FileNotFoundError, r"config.labelers_dir"),
    "labels_dir": ({"labels_dir": MISSING}, FileNotFoundError, r"config.labels_dir"),
    "labels rows": ({"labels_dir": "few_labels"}, ValueError, r"config.labels_dir: .*index.csv lists 7 images; the sweep has 8"),
    "stage": ({"stage": "capure"}, ValueError,
              r"unknown config.stage 'capure'; valid choices: all, capture, label, fit, report"),
    "prompts_file": ({"prompts_file": MISSING}, FileNotFoundError, r"config.prompts_file"),
    "prompts count": ({"num_train": 5}, ValueError, r"config.prompts_file: .* has 8 prompts"),
    "resolution": ({"resolution": 6}, ValueError, r"config.resolution must be a positive multiple of 4"),
    "batch_size": ({"batch_size": 0}, ValueError, r"config.batch_size must be >= 1"),
    "num_test": ({"num_test": 0}, ValueError, r"config.num_test must be >= 1"),
    "seed": ({"seed": -1}, ValueError, r"config.seed must be >= 0"),
    "probe.epochs": ({"probe.epochs": -1}, ValueError, r"config.probe.epochs must be >= 0"),
    "probe.batch_size": ({"probe.batch_size": 0}, ValueError, r"config.probe.batch_size must be >= 1"),
    "probe.lr": ({"probe.lr": 0.0}, ValueError, r"config.probe.lr must be a finite number > 0"),
    "probe.hidden": ({"probe.hidden": 0}, ValueError, r"config.probe.hidden must be >= 1"),
    "ridge num_train": ({"probe.kind": "ridge", "num_train": 2}, ValueError,
                        r"config.num_train=2 less config.num_val=0 leaves ridge no images to pick lambda on"),
    "ridge num_val": ({"probe.kind": "ridge", "num_val": 2}, ValueError,
                      r"config.num_train=4 less config.num_val=2 leaves ridge no images to pick lambda on"),
    "num_val": ({"num_val": -1}, ValueError, r"^config.num_val must be >= 0, got -1$"),
    "num_val all train": ({"num_val": 4}, ValueError, r"^config.num_val must be <= 3, got 4$"),
    "probe.headline_seeds": ({"probe.headline_seeds": 0}, ValueError,
                             r"^config.probe.headline_seeds must be >= 1, got 0$"),
    "num_inference_steps": ({"num_inference_steps": 0}, ValueError, r"config.num_inference_steps must be >= 1"),
    "steps": ({"steps": (0, 7)}, ValueError, r"config.steps: step 7 is out of range"),
    "guidance_scale": ({"guidance_scale": math.nan}, ValueError, r"config.guidance_scale: .*finite"),
    "layers": ({"layers": ("*attn3/to_out_0",)}, ValueError, r"config.layers: .* matches no UNet module"),
    "fit_memory_gb": ({"fit_memory_gb": 1e9}, ValueError, r"config.fit_memory_gb=1000000000.0 is more than this "
                                                           r"host's [\d.]+ GB of RAM"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_config_is_refused_before_the_workdir_is_claimed(name, loaded, tmp_path, monkeypatch):
    changes, error, match = BAD[name]
    monkeypatch.chdir(loaded)
    with pytest.raises(error, match=match) as raised:
        sweep.run(_config(loaded, **changes), tmp_path / "run")
    if MISSING in changes.values():
        assert str(loaded / MISSING) in str(raised.value)  # a relative path is shown absolute
    assert not (tmp_path / "run").exists()


class _Captured(Exception):
    """Raised in place of the capture: the run got past its checks and its claim of the workdir."""


def test_a_corrected_rerun_is_not_refused(loaded, tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise _Captured

    monkeypatch.setattr(sweep, "capture_all", stop)
    with pytest.raises(ValueError, match="config.probe.label_mode"):
        sweep.run(_config(loaded, **{"probe.label_mode": "upsampel"}), tmp_path / "run")
    with pytest.raises(_Captured):
        sweep.run(_config(loaded), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["probe"]["label_mode"] == "upsample"


def test_encoded_data_takes_both_vae_baselines(loaded, tmp_path, monkeypatch):
    """Encoded data decodes each step's noised latent and predicted x0 (`capture.encode_and_capture`): no refusal."""
    def stop(c, pipe, request, *args):
        assert request.vae_baselines == ("vae", "vae_x0")
        raise _Captured

    monkeypatch.setattr(sweep, "capture_all", stop)
    with pytest.raises(_Captured):
        sweep.run(_config(loaded, data="encoded", models=("trained", "vae", "vae_x0")), tmp_path / "run")


def test_claim_workdir_names_the_nested_keys_that_differ(tmp_path):
    config = {"seed": 0, "probe": {"kind": "linear", "label_mode": "downsample", "epochs": 30}}
    io.claim_workdir(tmp_path, config, kind="sweep", may_change=("probe.epochs",))
    (tmp_path / "results.csv").write_text("")  # work: a config.json alone is no claim
    io.claim_workdir(tmp_path, {**config, "probe": {**config["probe"], "epochs": 40}}, kind="sweep",
                     may_change=("probe.epochs",))  # a nested key that may change
    with pytest.raises(ValueError, match=r"differs in: probe\.label_mode\): probe\.label_mode was 'downsample', "
                                         r"now 'upsample'; use a new --workdir"):
        io.claim_workdir(tmp_path, {**config, "probe": {**config["probe"], "label_mode": "upsample"}}, kind="sweep",
                         may_change=("probe.epochs",))


def test_headline_says_the_gap_is_paired_at_the_trained_models_best_cell():
    best = {"mean": 0.302, "ci95": [0.259, 0.343], "short": "up2.a2", "step": 10}
    spread = {"seeds": [0, 1, 2], "test": [0.302, 0.298, 0.309], "std": 0.0056}
    summary = {"trained": {"saliency": {"metric": "dice", "selected_on": "val", "best": {**best, "seed_spread": spread},
                                        "gap": {"vae": {"mean": -0.04, "ci95": [-0.09, 0.01]}}}},
               "vae": {"saliency": {"metric": "dice", "selected_on": "test",
                                    "best": {**best, "mean": 0.419, "short": "dec.mid"}}}}
    trained, vae = sweep.headline(summary)
    assert trained == ("saliency trained    best dice 0.302 [0.259, 0.343] ± 0.006 over 3 probe seeds at up2.a2 "
                       "step 10 (chosen on val); vs vae at this cell (paired, + = trained better): -0.040 "
                       "[-0.090, +0.010]")
    assert vae == "saliency vae        best dice 0.419 [0.259, 0.343] at dec.mid step 10 (chosen on test)"


@pytest.mark.slow  # a whole tiny sweep (~27 s)
def test_a_sweep_without_step_0_draws_its_layer_profile_at_its_first_step(loaded, tmp_path, monkeypatch, capsys):
    """The one end-to-end sweep of this file: encoded data, trained model, steps 2 and 1 of 3 (out of order)."""
    drawn, real = [], figures.layer_profile_figure

    def spy(*args, step, **kwargs):
        drawn.append(step)
        real(*args, step=step, **kwargs)

    monkeypatch.setattr(figures, "layer_profile_figure", spy)
    c = _config(loaded, data="encoded", models=("trained",), steps=(2, 1), **{"probe.epochs": 1})
    sweep.run(c, tmp_path / "run")
    assert drawn == [1, 1]  # saliency, depth: at the earliest selected step, whatever the order given
    for task, metric in (("saliency", "dice"), ("depth", "rmse")):
        assert (tmp_path / "run" / "figures" / f"layers_{task}_{metric}.png").stat().st_size > 1000
    out, err = capsys.readouterr()
    assert "compiling" in err
    assert all(stage in out for stage in ("loading pipeline", "labels", "writing"))
