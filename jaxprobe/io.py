"""The one place jaxprobe writes files: atomically (temp + rename, nothing half-written on failure) and readable
by others as any file the user makes (the umask decides, not the temp file's private mode)."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; rename it over `path` only if the block finishes (removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temp directory beside `path`; on success it replaces `path` (an existing directory is swapped out
    and removed), on failure it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_png(path, image: np.ndarray) -> None:
    """uint8 [H,W,3] or [H,W] -> PNG."""
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")


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
    current = json.loads(json.dumps(config, default=jsonable))
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(current)
                         if k not in may_change and previous.get(k) != current.get(k))
        if changed:
            raise ValueError(f"{workdir} holds a {kind} with another config (differs in: {', '.join(changed)}); "
                             "use a new --workdir or delete it")
    write_json(path, current)


def jsonable(x):
    """`json.dumps(default=...)` for numpy scalars and arrays."""
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
