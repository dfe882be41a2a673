"""Every benchmark runs end to end at the harness's smoke size and writes a section whose figures are numbers, so
none can rot unseen. The numbers say nothing about speed at this size: only that they are finite and the ratios
positive (a time may round to 0.0 at this size). The slow tier has those that cost minutes of CPU even at this
size (measured on the loaded 2-core CPU: capture ~45 s, scaling ~50 s, train ~4 min, rehearsal ~3 min): `capture`
compiles four sampling programs, `train`, `scaling` and `rehearsal` run fresh processes (XLA fixes a process's
device count; the rehearsal runs each stage as a user would) that each build and compile their model again."""
import dataclasses
import math
import re

import pytest
from tiny_sd import build_torch_pipeline

from benchmarks import harness

NUMBER = re.compile(r"^(\d+(?:\.\d+)?(?:e[+-]?\d+)?)(x?)$")


def table_numbers(section: str) -> list[tuple[float, bool]]:
    """(value, is a ratio) for every numeric cell of the section's markdown table rows; a ratio ends in 'x'."""
    cells = [c.strip().strip("*") for line in section.splitlines() if line.startswith("| ")
             for c in line.strip("|").split("|")]
    return [(float(m[1]), m[2] == "x") for c in cells if (m := NUMBER.match(c))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny random diffusers pipeline for every benchmark: PyTorch builds it in seconds, where a process's first
    `jaxprobe.testing.tiny_pipeline` spends ~30 s of CPU compiling Flax's initialisers op by op."""
    directory = tmp_path_factory.mktemp("tiny")
    build_torch_pipeline(directory)
    return directory


SLOW = ("capture", "train", "scaling", "intervene", "concepts", "kernels", "rehearsal")
OWN_TEST = ("device",)  # test_device_benchmark_reports_every_row


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in harness.GOALS if n not in OWN_TEST])
def test_benchmark_runs_and_reports_finite_figures(name, tiny, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    # sample's SDXL row builds and compiles a pipeline of its own: test_the_sample_benchmark_has_an_sdxl_row
    (section,) = harness.run([name], dataclasses.replace(harness.smoke(out, tiny), sdxl=False))
    headline = re.search(r"\*\*([^*]+)\*\*", section)
    assert headline, section
    ratio = float(re.match(r"[\d.]+", headline[1])[0])  # a ratio ('2.17x') or a figure with its unit
    assert math.isfinite(ratio) and ratio > 0, headline[1]
    numbers = table_numbers(section)
    assert len(numbers) >= 2, section
    assert all(math.isfinite(v) and v >= 0 for v, _ in numbers), numbers
    assert all(v > 0 for v, ratio in numbers if ratio), numbers
    text = out.read_text()
    assert f"## {name}\n\n{section.strip()}" in text
    assert f"| [{name}](#{name}) | {headline[1]} |" in text  # the summary row


@pytest.mark.slow  # builds and compiles the SDXL-structured stand-in
def test_the_sample_benchmark_has_an_sdxl_row(tiny, tmp_path):
    (section,) = harness.run(["sample"], harness.smoke(tmp_path / "BENCHMARKS.md", tiny))
    rows = [line for line in section.splitlines() if "SDXL-structured |" in line]
    assert len(rows) == 2, section
    assert all(math.isfinite(v) and v > 0 for line in rows for v, _ in table_numbers(line)), rows
    assert re.search(r"speed-up \d+\.\d+x\.", section), section


def test_an_unknown_benchmark_is_refused_before_any_runs(tmp_path):
    with pytest.raises(ValueError, match="benchmark.*sample"):
        harness.run(["sample", "nonesuch"], harness.smoke(tmp_path / "b.md", tmp_path))
    assert not (tmp_path / "b.md").exists()


def test_a_failed_worker_shows_its_traceback():
    with pytest.raises(RuntimeError, match=r"(?s)benchmark worker nonesuch.run exited 1.*ImportError"):
        harness.worker("nonesuch.run", [], "")


@pytest.mark.slow  # four sampling programs compile even at this size: 32-55 s on the loaded 2-core CPU
def test_device_benchmark_reports_every_row(tmp_path):
    """The accelerator benchmark's code at its tiny size on this CPU: every row measured (the PyTorch fp16 side
    skipped for want of CUDA, and saying so), every figure a finite number, memory 'n/a' (XLA:CPU keeps no
    statistics), MFU 'unknown' (no peak for a CPU)."""
    from benchmarks import device

    out = tmp_path / "BENCHMARKS.md"
    (section,) = harness.run(["device"], harness.smoke(out, tmp_path))
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| what", "| ---"))]
    assert len(rows) == len(device.ROWS), section
    for label in ("jaxprobe UNet bf16", "diffusers PyTorch fp16 UNet", "plain sampling",
                  "+ capture of 4 attn1 layers x 1 steps", "+ the paper's edit", "probe fits", "DPT fp32"):
        assert sum(label in r for r in rows) == 1, (label, section)
    assert "skipped: torch" in section and "has no CUDA" in section
    assert "unknown (no peak listed for this device)" in section
    numbers = table_numbers(section)
    assert len(numbers) >= 10 and all(math.isfinite(v) and v > 0 for v, _ in numbers), numbers
    assert re.search(r"UNet bf16: \*\*\d+\.\d+\*\* images/s", section), section
    assert "| [device](#device) |" in out.read_text()
