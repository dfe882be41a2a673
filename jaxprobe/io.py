"""Atomic writes (temp file + rename) for everything jaxprobe saves: PNG, JSON, CSV."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; rename it over `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_png(path, image: np.ndarray) -> None:
    """uint8 [H,W,3] or [H,W] -> PNG."""
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_csv(path, rows: list[dict], columns: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path) -> list[dict[str, str]]:
    """Rows of a CSV written by `write_csv` (values as strings); [] if the file does not exist yet."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def claim_workdir(workdir, config: dict, *, kind: str, may_change: tuple[str, ...] = ()) -> None:
    """A workdir belongs to one config: the first run writes `workdir/config.json`; a later run (a resume) with a
    config that differs in any key outside `may_change` raises ValueError naming the keys (mixing them would
    silently continue someone else's run). Keys in `may_change` (e.g. a longer schedule) are updated."""
    path = Path(workdir) / "config.json"
    current = json.loads(json.dumps(config, default=_jsonable))
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(current)
                         if k not in may_change and previous.get(k) != current.get(k))
        if changed:
            raise ValueError(f"{workdir} holds a {kind} with another config (differs in: {', '.join(changed)}); "
                             "use a new --workdir or delete it")
    write_json(path, current)


def _jsonable(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
