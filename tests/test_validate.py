"""The shared config checks: each names the config key, the bad value and what is valid, in one line."""
import os

import ml_collections
import pytest

from jaxprobe import validate


def _config(**kw):
    return ml_collections.ConfigDict({"batch_size": 4, "probe": {"epochs": 30, "lr": 1e-3}, "tasks": ("depth",),
                                      "path": "", **kw})


def test_at_least_and_at_most_name_the_dotted_key_the_bound_and_the_value():
    c = _config()
    validate.at_least(c, {"batch_size": 1, "probe.epochs": 1})  # valid values pass
    validate.at_most(c, {"probe.lr": 1})
    c.probe.epochs = 0
    with pytest.raises(ValueError, match=r"^config\.probe\.epochs must be >= 1, got 0$"):
        validate.at_least(c, {"batch_size": 1, "probe.epochs": 1})
    with pytest.raises(ValueError, match=r"^config\.batch_size must be <= 2, got 4$"):
        validate.at_most(c, {"batch_size": 2})


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_positive_finite_refuses_zero_negative_nan_and_inf(lr):
    c = _config()
    validate.positive_finite(c, "probe.lr")
    c.probe.lr = lr
    with pytest.raises(ValueError, match=r"^config\.probe\.lr must be a finite number > 0, got "):
        validate.positive_finite(c, "probe.lr")


def test_check_choices_names_the_key_and_the_valid_choices():
    validate.check_choices(_config(), "tasks", ("saliency", "depth"))
    with pytest.raises(ValueError, match=r"^unknown config\.tasks 'normals'; valid choices: saliency, depth$"):
        validate.check_choices(_config(tasks=("depth", "normals")), "tasks", ("saliency", "depth"))
    with pytest.raises(ValueError, match=r"^config\.tasks is empty; choose from saliency, depth$"):
        validate.check_choices(_config(tasks=()), "tasks", ("saliency", "depth"))


def test_existing_path_shows_the_absolute_path_with_its_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipe").mkdir()
    assert validate.existing_path(_config(path="pipe"), "path", "a directory") == tmp_path / "pipe"
    with pytest.raises(FileNotFoundError, match=r"^config\.path is empty; set it to a directory$"):
        validate.existing_path(_config(), "path", "a directory")
    with pytest.raises(FileNotFoundError) as e:
        validate.existing_path(_config(path="nope"), "path", "a directory")
    assert str(e.value) == f"config.path='nope': {os.path.join(tmp_path, 'nope')} does not exist; set it to a directory"
    with pytest.raises(FileNotFoundError, match=r"pipe lacks unet, vae; set it to a directory$"):
        validate.existing_path(_config(path="pipe"), "path", "a directory", ("unet", "vae"))


def test_config_key_prefixes_a_library_error_with_the_key():
    with pytest.raises(ValueError, match=r"^config\.steps: step 7 is out of range$"):
        with validate.config_key("steps"):
            raise ValueError("step 7 is out of range")
