"""results.csv files that jaxprobe wrote before the move to one hooked sampler and the study layout (commit
70e26cb), kept in tests/scene/golden/: the refactor must not change a number. When `vae` became the paper's
baseline (decoding x_t), the generated sweeps' `vae` rows of that commit became the `vae_x0` rows, unchanged, and
the new `vae` rows were added."""
import csv
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "scene" / "golden"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_matches_golden(rows, name, atol: float = 1e-5):
    """Every key column exactly, values to `atol`: bit-identical on the CPU that wrote them; the tolerance lets XLA:CPU
    order a reduction differently on another CPU (an AMD EPYC differs by up to 1.4e-6 on the tiny sweeps,
    2026-12-05)."""
    golden = read_csv(GOLDEN / name)
    keys = [c for c in golden[0] if c != "value"]
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in golden]
    np.testing.assert_allclose([float(r["value"]) for r in rows], [float(r["value"]) for r in golden],
                               rtol=0, atol=atol)
