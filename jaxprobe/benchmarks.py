"""Timing helpers for launch/bench.py: best-of-N wall time and a BENCHMARKS.md that keeps one section per job."""
from __future__ import annotations

import platform
import re
import time
from pathlib import Path
from typing import Callable

from jaxprobe import io


def best_time(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of `fn()` over `repeats` runs after `warmup` runs (which absorb jit compilation)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    import os

    import jax
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on " \
           f"{jax.devices()[0].platform}"


def write_section(path, name: str, body: str) -> None:
    """Replace (or append) the `## name` section of the markdown file at `path`."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# jaxprobe benchmarks\n\nWritten by `launch/bench.py`.\n"
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    with io.atomic_path(path) as tmp:
        tmp.write_text(text)
