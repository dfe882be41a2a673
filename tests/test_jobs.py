"""The job layer every launcher shares: workdir checks and claims, prompts, and the memory estimate."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxprobe import jobs

ROOT = Path(__file__).resolve().parents[1]


def test_a_workdir_that_is_a_file_or_inside_one_is_refused_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    assert jobs.check_workdir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    with pytest.raises(ValueError) as e:
        jobs.check_workdir(tmp_path / "file")
    assert str(e.value) == (f"--workdir={tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a directory; "
                            "choose another --workdir")
    with pytest.raises(ValueError, match=r"is a file, not a directory \(it would be inside .*file\)"):
        jobs.claim(tmp_path / "file" / "run", {"seed": 0}, kind="job")


def test_a_config_json_alone_does_not_lock_the_workdir_but_work_does(tmp_path):
    jobs.claim(tmp_path, {"seed": 0, "lr": 1.0}, kind="job")  # a run refused after claiming wrote nothing else
    jobs.claim(tmp_path, {"seed": 1, "lr": 1.0}, kind="job")  # so the corrected command takes the workdir over
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "00000.png").write_bytes(b"")  # work, deep or not
    jobs.claim(tmp_path, {"seed": 1, "lr": 1.0}, kind="job")  # a resume
    with pytest.raises(ValueError, match=r"holds a job with another config \(differs in: seed\): seed was 1, now 2"):
        jobs.claim(tmp_path, {"seed": 2, "lr": 1.0}, kind="job")


def test_an_empty_prompts_file_says_it_is_empty_with_its_key(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("  a red ball \n\n blue cube\n")
    assert jobs.read_prompts(path) == ["a red ball", "blue cube"]
    path.write_text("\n  \n")
    c = ml_collections.ConfigDict({"prompts_file": str(path)})
    with pytest.raises(ValueError) as e:
        jobs.prompts(c, 1, lambda n: ["caption"] * n)
    assert str(e.value) == f"config.prompts_file: {path} is empty (no prompts); write one prompt per line"
    c.prompts_file = ""
    assert jobs.prompts(c, 2, lambda n: ["caption"] * n) == ["caption", "caption"]


@pytest.fixture(scope="module")
def toy_pipe():
    from jaxprobe.models import load_pipeline
    return load_pipeline(ROOT / "assets" / "toy_pipeline")


def test_the_memory_estimate_refuses_a_size_no_machine_has_before_anything_compiles(toy_pipe, capsys):
    with pytest.raises(ValueError) as e:  # the VAE decodes 16 images of 8192^2 pixels: its activations > 100 GiB
        jobs.check_memory(toy_pipe, 8192, 8192, 16, jnp.float32, holds=lambda n: {"a batch's activations": n})
    message = str(e.value)
    assert message.startswith("config.height/width/batch_size: sampling 8192x8192 images, 16 per device, in "
                              "float32 needs at least ")
    assert ("GiB (params, largest array, a batch's activations) per device; a cpu device here has " in message)
    assert capsys.readouterr().out.startswith("memory estimate: ")
    ram = jobs.host_memory() / 2**30
    assert float(message.split("needs at least ")[1].split(" GiB")[0]) > ram


@pytest.mark.slow  # two traces of the UNet and VAE (~3 s each on an idle 2-core CPU)
def test_the_memory_estimate_is_the_params_and_one_calls_largest_array(toy_pipe):
    params = sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(toy_pipe.params))
    need = jobs.check_memory(toy_pipe, 64, 64, 4, jnp.float32)
    assert params < need < params + 2**30  # at the native size
    assert jobs.check_memory(toy_pipe, 64, 64, 4, jnp.bfloat16) < need  # half the bytes a value
