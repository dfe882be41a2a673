"""The demo's probe sweep on the shipped toy models gives the results.csv it gave before the study layout and the
one hooked sampler (slow tier: about 5 minutes on 2 cores)."""
import pytest
from golden import assert_matches_golden, read_csv

from configs.scene import toy_probe
from jaxprobe.scene import sweep

pytestmark = pytest.mark.slow


def test_demo_sweep_results_are_unchanged(tmp_path):
    c = toy_probe.get_config()
    c.num_train, c.num_test, c.probe.epochs = 64, 64, 10  # launch/demo.py's size
    sweep.run(c, tmp_path / "demo")
    assert_matches_golden(read_csv(tmp_path / "demo" / "results.csv"), "demo_results.csv")
