"""The launchers as a user runs them: a subprocess from the repository root, on the shipped toy pipeline."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a large red sphere on a checkered floor", "a small blue cube on a checkered floor"]


def _sample(workdir, *overrides):
    return subprocess.run([sys.executable, "launch/sample.py", f"--workdir={workdir}", *overrides], cwd=ROOT,
                          env=os.environ, capture_output=True, text=True)


@pytest.mark.slow  # an end-to-end run (the fast tier keeps <= ~5 min on 2 cores)
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


@pytest.mark.parametrize("override, message", [
    ("num_images_per_prompt=0", "config.num_images_per_prompt must be >= 1, got 0"),
    ("batch_size=0", "config.batch_size must be >= 1, got 0"),
    ("seed=-1", "seed -1 is out of range 0..2**32-1 (seeds are uint32; image k gets seed + k)"),  # sampling's check
])
def test_a_bad_input_is_one_error_line_with_status_2(tmp_path, override, message):
    run = _sample(tmp_path / "out", f"--config.{override}")
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [f"error: {message}"]  # no traceback, no log lines
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_compiling_stops_at_once_and_cleanly(tmp_path):
    # Once SIGINT waited for the XLA compile to finish (~35 s) and then ended in a segmentation fault.
    proc = subprocess.Popen([sys.executable, "launch/sample.py", f"--workdir={tmp_path / 'out'}"], cwd=ROOT,
                            env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    started = time.monotonic()
    # The handler is installed before the job starts: wait for the job's progress bar however slow the imports
    # are (a loaded machine takes far longer than the ~3 s an idle one does).
    while "sampling" not in "".join(stderr) and time.monotonic() - started < 120 and proc.poll() is None:
        time.sleep(0.1)
    assert "sampling" in "".join(stderr), "".join(stderr)
    time.sleep(2.5)  # past the jit's tracing (~1 s), into its XLA compile (~8 s)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    err = "".join(stderr)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err
    for crash in ("Segmentation fault", "Fatal Python error", "Traceback"):
        assert crash not in err
    assert not list((tmp_path / "out").glob(".*"))  # no half-written file to stop a rerun


@pytest.mark.parametrize("override, message", [
    ("negatives=hard", "unknown config.negatives 'hard'; valid choices: others, non_candidates"),
])
def test_a_bad_concept_config_is_one_error_line_before_any_work(tmp_path, override, message):
    run = subprocess.run([sys.executable, "launch/concepts.py", f"--workdir={tmp_path / 'out'}",
                          "--config.data.num_images=400", f"--config.{override}"], cwd=ROOT, env=os.environ,
                         capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()
