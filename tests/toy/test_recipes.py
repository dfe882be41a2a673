"""`recipes.train`, what launch/train.py runs: it dispatches on config.model and exports what it trained."""
import json

import pytest

from configs.toy import labelers as toy_labelers
from jaxprobe.toy import labelers, recipes


def test_an_unknown_model_fails_before_the_workdir_is_claimed(tmp_path):
    c = toy_labelers.get_config()
    c.model = "gan"
    with pytest.raises(ValueError, match="unknown config.model 'gan'; valid choices: vae, ldm, labelers"):
        recipes.train(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # an end-to-end run (the fast tier keeps <= ~5 min on 2 cores)
def test_labelers_train_tiny_and_are_written_to_the_workdir_and_the_export(tmp_path, monkeypatch):
    # One CPU device whenever jax starts: the batch of 8 must split over the devices (`train.fit` checks it).
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=1")
    c = toy_labelers.get_config()
    c.update(resolution=32, num_images=16, num_eval=8, channels=(8, 8, 8, 8), batch_size=8, num_steps=2,
             checkpoint_every=2, export_dir=str(tmp_path / "export"))
    lines = recipes.train(c, tmp_path / "run")
    assert lines[:2] == [f"toy labelers written to {tmp_path / 'run' / 'labelers'}",
                         f"toy labelers written to {tmp_path / 'export'}"]
    assert lines[2].startswith("held-out (8 scenes): saliency IoU ")
    for out in (tmp_path / "run" / "labelers", tmp_path / "export"):
        assert labelers.load_labelers(out).config.channels == (8, 8, 8, 8)
        assert json.loads((out / "metrics.json").read_text())["train_steps"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_images"] == 16


@pytest.mark.parametrize("config, overrides, message", [
    ("vae", {"batch_size": 0}, "config.batch_size must be >= 1, got 0"),
    ("labelers", {"num_steps": -5}, "config.num_steps must be >= 1, got -5"),
    ("ldm", {"lr": float("nan")}, "config.lr must be a finite number > 0, got nan"),
    ("ldm", {"ema_decay": 1.5}, "config.ema_decay must be <= 1, got 1.5"),
    ("vae", {"crop_size": 12}, "config.crop_size must be 0 (whole images) or a multiple of 8 up to "
                               "config.resolution=64, got 12"),
    ("mobilenet_v2", {"num_train": 16}, "config.num_train=16 is below config.batch_size=64: an epoch needs one batch"),
    ("ldm", {"vae_dir": "no/vae"}, "config.vae_dir='no/vae': "),
])
def test_every_number_and_input_directory_is_checked_before_the_workdir_is_claimed(tmp_path, config, overrides,
                                                                                     message):
    import importlib
    c = importlib.import_module(f"configs.toy.{config}").get_config()
    c.update(overrides)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        recipes.train(c, tmp_path / "run")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_bad_mesh_leaves_no_claim_on_the_workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # train() sets it for its process
    c = toy_labelers.get_config()
    c.mesh.data = 3
    with pytest.raises(ValueError, match=r"^config\.mesh: data=3 x probe=1 does not fit the \d+ devices here"):
        recipes.train(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()
