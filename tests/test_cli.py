"""The launchers' flag parsing (`cli.parse_flags`), in process: a mistyped --config path or override key is one
ValueError or FileNotFoundError naming the nearest valid ones, raised before any job runs."""
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from jaxprobe import cli

CONFIG = '''import ml_collections


def get_config():
    return ml_collections.ConfigDict({"num_inference_steps": 3, "seed": 0,
                                      "probe": {"kind": "linear", "hidden": 0},
                                      "ablation": {"s01_best": {"lr": 1e-3}}})
'''


@pytest.fixture
def parse(tmp_path, monkeypatch):
    """parse(*args) -> the parsed config, as a launcher with --config=<a small config file> parses its argv."""
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "toy.py"
    path.write_text(CONFIG)
    monkeypatch.chdir(tmp_path)

    def parse(*args, config: str | None = "configs/toy.py"):
        values = flags.FlagValues()
        holder = config_flags.DEFINE_config_file("config", None, "a config", flag_values=values)
        argv = ["prog", *([f"--config={config}"] if config else []), *args]
        monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
        cli.parse_flags(argv, values)
        return holder.value

    return parse


def test_overrides_of_valid_keys_parse(parse):
    c = parse("--config.probe.kind=ridge", "--config.ablation.s01_best.lr=0.02")
    assert c.probe.kind == "ridge" and c.ablation.s01_best.lr == 0.02 and c.num_inference_steps == 3


@pytest.mark.parametrize("arg, message", [
    ("--config.num_inference_step=3", "--config.num_inference_step is not a config key; nearest valid: "
                                      "num_inference_steps"),
    ("--config.probe.kindd=ridge", "--config.probe.kindd is not a config key; nearest valid: probe.kind"),
    ("--config.zzz=1", "--config.zzz is not a config key; valid keys: ablation, num_inference_steps, probe, seed"),
    ("--config.ablation.01_best.lr=1", "--config.ablation.01_best.lr cannot be addressed (each key must be a "
                                       "Python name); nearest valid: ablation.s01_best.lr"),
])
def test_a_mistyped_override_key_names_the_nearest_valid_keys(parse, arg, message):
    with pytest.raises(ValueError) as e:
        parse(arg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_mistyped_config_path_names_the_nearest_config_files(parse, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        parse(config="configs/toyy.py")
    assert str(e.value) == (f"--config=configs/toyy.py: {tmp_path / 'configs' / 'toyy.py'} does not exist; "
                            "nearest: configs/toy.py")


def test_a_bad_value_or_an_unknown_flag_is_one_line(parse):
    with pytest.raises(ValueError, match=r"^flag --config\.seed=abc: invalid literal for int\(\) with base 10: "
                                         r"'abc'$"):
        parse("--config.seed=abc")
    with pytest.raises(ValueError, match=r"^Unknown command line flag 'workdirr'"):
        parse("--workdirr=x")


def test_the_launchers_default_config_is_applied_when_the_flags_are_parsed(parse, monkeypatch):
    monkeypatch.setattr(cli, "_default_config", ["configs/toy.py"])
    assert parse("--config.seed=5", config=None).seed == 5
    with pytest.raises(ValueError, match=r"^--config\.sed is not a config key; nearest valid: seed"):
        parse("--config.sed=5", config=None)
