"""The launchers as a user runs them: a subprocess from the repository root, on the shipped toy pipeline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a large red sphere on a checkered floor", "a small blue cube on a checkered floor"]


def _sample(workdir, *overrides):
    return subprocess.run([sys.executable, "launch/sample.py", f"--workdir={workdir}", *overrides], cwd=ROOT,
                          env=os.environ, capture_output=True, text=True)


def test_sample_writes_pngs_and_an_index_of_prompts_and_seeds(tmp_path):
    run = _sample(tmp_path, f"--config.prompts={'|'.join(PROMPTS)}", "--config.batch_size=2", "--config.seed=7")
    assert run.returncode == 0, run.stderr
    index = json.loads((tmp_path / "samples.json").read_text())
    assert [(im["prompt"], im["seed"]) for im in index["images"]] == [(PROMPTS[0], 7), (PROMPTS[1], 8)]
    assert index["config"]["batch_size"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["00000_seed7.png", "00001_seed8.png"]
    images = [np.asarray(Image.open(tmp_path / im["file"])) for im in index["images"]]
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images)
    assert not np.array_equal(*images)


def test_a_too_long_prompt_in_the_last_batch_fails_before_any_image(tmp_path):
    long_prompt = " ".join(["a large red sphere and"] * 8) + " a cube"
    run = _sample(tmp_path / "out", f"--config.prompts={PROMPTS[0]}|{long_prompt}", "--config.batch_size=1")
    assert run.returncode != 0
    assert "longer than the tokenizer's max length" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field", ["num_images_per_prompt", "batch_size"])
def test_a_zero_count_fails_with_one_clear_line(tmp_path, field):
    run = _sample(tmp_path / "out", f"--config.{field}=0")
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == f"error: config.{field} must be >= 1, got 0"
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
