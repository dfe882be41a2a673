"""The demo's probe sweep on the shipped toy models gives the results.csv it gave before the study layout and the
one hooked sampler (slow tier: about 5 minutes on 2 cores)."""
import importlib.util
from pathlib import Path

import pytest
from golden import assert_matches_golden, read_csv

from jaxprobe.scene import sweep

_SPEC = importlib.util.spec_from_file_location("demo", Path(__file__).resolve().parents[2] / "launch" / "demo.py")
demo = importlib.util.module_from_spec(_SPEC)  # a launcher, not a package: loaded from its file
_SPEC.loader.exec_module(demo)

pytestmark = pytest.mark.slow


def test_demo_sweep_results_are_unchanged(tmp_path):
    c = demo.probe_config()
    c.num_val = 0  # the golden predates the validation split: without it, the fits and scores are the same
    sweep.run(c, tmp_path / "demo")
    # 10 SGD epochs carry a CPU's rounding further than the tiny sweeps: on an AMD EPYC (2026-12-05) the demo
    # differs from the golden (written on another CPU) by up to 0.0128, already at commit 2410e1d.
    assert_matches_golden(read_csv(tmp_path / "demo" / "results.csv"), "demo_results.csv", atol=2e-2)
