"""The concept sweep as 2 `jax.distributed` processes on localhost: process 0 writes, and every result equals a
1-process run on a mesh of the same shape."""
import sys

import pytest
from multihost import run_one, run_processes

from jaxprobe.probing import report
from jaxprobe.testing import random_mobilenet_checkpoints


def _flags(checkpoints, workdir) -> list[str]:
    return [sys.executable, "launch/concepts.py", "--config=configs/concepts/toy.py", f"--workdir={workdir}",
            f"--config.checkpoints_dir={checkpoints}", "--config.data.num_images=240", "--config.resolution=32",
            "--config.labels=truth", "--config.label_grid=False", "--config.num_positive=20",
            "--config.num_negative=40",
            "--config.layers=('features_0', 'features_18')", "--config.families=('linear_gap', 'non_linear_gap')",
            "--config.probe.epochs=10", "--config.probe.hidden=16", "--config.mesh.data=1", "--config.mesh.probe=2"]


@pytest.mark.slow  # two concept sweeps of 2 checkpoints x 2 modules, one as 2 processes: about 3 minutes
def test_two_process_concept_sweep_matches_one_process(tmp_path):
    checkpoints = random_mobilenet_checkpoints(tmp_path / "ckpts")
    outs = run_processes(_flags(checkpoints, tmp_path / "two") + ["--distributed"])
    assert "results and figures" in outs[0] and "results and figures" not in outs[1]  # process 0 reports
    run_one(_flags(checkpoints, tmp_path / "one"), devices=2)
    for family in ("linear_gap", "non_linear_gap"):
        key = lambda r: tuple(v for k, v in r.items() if k != "value")
        ref = {key(r): r["value"] for r in report.read_results_csv(tmp_path / "one" / family / "results.csv")}
        got = {key(r): r["value"] for r in report.read_results_csv(tmp_path / "two" / family / "results.csv")}
        assert got.keys() == ref.keys() and len(ref) == (2 * 7 * 2 + 7) * 2 * 2  # + the pixel baseline
        assert max(abs(got[k] - ref[k]) for k in ref) <= 1e-5
