"""Every benchmark runs end to end at the harness's smoke size and writes a section whose figures are numbers, so
none can rot unseen. The numbers say nothing about speed at this size: only that they are finite and positive."""
import math
import re

import pytest

from benchmarks import harness
from jaxprobe.testing import tiny_pipeline

NUMBER = re.compile(r"^(\d+(?:\.\d+)?(?:e[+-]?\d+)?)x?$")


def table_numbers(section: str) -> list[float]:
    """Every numeric cell of the section's markdown table rows (a trailing 'x' allowed)."""
    cells = [c.strip().strip("*") for line in section.splitlines() if line.startswith("| ")
             for c in line.strip("|").split("|")]
    return [float(m[1]) for c in cells if (m := NUMBER.match(c))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One saved tiny random pipeline for every benchmark (loading it is ~10x cheaper than building one)."""
    directory = tmp_path_factory.mktemp("tiny")
    tiny_pipeline(directory)
    return directory


@pytest.mark.parametrize("name", list(harness.GOALS))
def test_benchmark_runs_and_reports_positive_finite_figures(name, tiny, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    (section,) = harness.run([name], harness.smoke(out, tiny))
    headline = re.search(r"\*\*([^*]+)\*\*", section)
    assert headline, section
    ratio = float(headline[1].rstrip("x"))
    assert math.isfinite(ratio) and ratio > 0, headline[1]
    numbers = table_numbers(section)
    assert len(numbers) >= 2, section
    assert all(math.isfinite(v) and v > 0 for v in numbers), numbers
    text = out.read_text()
    assert f"## {name}\n\n{section.strip()}" in text
    assert f"| [{name}](#{name}) | {headline[1]} |" in text  # the summary row


def test_an_unknown_benchmark_is_refused_before_any_runs(tmp_path):
    with pytest.raises(ValueError, match="benchmark.*sample"):
        harness.run(["sample", "nonesuch"], harness.smoke(tmp_path / "b.md", tmp_path))
    assert not (tmp_path / "b.md").exists()
