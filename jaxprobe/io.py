"""The one place jaxprobe writes files: atomically (temp + rename, nothing half-written on failure), durably
(fsynced before the rename and the rename fsynced after, so a power loss cannot leave a renamed-but-empty file) and
readable by others as any file the user makes (the umask decides, not the temp file's private mode)."""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_SYNC_FLAGS = os.O_RDWR if os.name == "nt" else os.O_RDONLY  # Windows' fsync (_commit) needs a writable handle


def _fsync(path) -> None:
    """Flush `path`'s data to disk (the rename that follows must not overtake it)."""
    fd = os.open(path, _SYNC_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path) -> None:
    """Make the entries just renamed in directory `path` durable, where the platform can."""
    if os.name == "nt":  # a directory cannot be opened for fsync there; NTFS journals renames itself
        return
    try:
        _fsync(path)
    except OSError as e:  # EINVAL: a filesystem without directory fsync
        if e.errno != errno.EINVAL:
            raise


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (root included), each directory after its files; symlinks
    are left alone (one may dangle, and its target is not ours to flush)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if not os.path.islink(os.path.join(dirpath, name)):
                _fsync(os.path.join(dirpath, name))
        _fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; rename it over `path` only if the block finishes (removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)  # before the chmod: a umask can make it read-only, and Windows syncs through a writable handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
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
        _fsync_tree(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_png(path, image: np.ndarray) -> None:
    """uint8 [H,W,3] or [H,W] -> PNG."""
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """name -> array (any layout; stored C-contiguous, 0-d kept 0-d) as one safetensors file."""
    arrays = {k: np.require(np.asarray(v), requirements="C") for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        safetensors.numpy.save_file(arrays, str(tmp), metadata=metadata)


def read_safetensors(path, *, what: str = "tensors") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> numpy array in its stored dtype, metadata) of a safetensors file (never a pickle). A missing path is
    a FileNotFoundError, a truncated or foreign file a ValueError, each naming `what` and the path."""
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{what} path {path} is not a file (expected one .safetensors file)")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"{what} {path} are unreadable (truncated or not safetensors): {e}") from e


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


def claim_workdir(workdir, config: dict, *, kind: str, may_change: tuple[str, ...] = (), write: bool = True) -> None:
    """A workdir belongs to one config once it holds work: the first run writes `workdir/config.json`; a later run
    (a resume) with a config that differs in any key outside `may_change` raises ValueError naming the keys, nested
    ones dotted (`probe.label_mode`), with both values (mixing them would silently continue someone else's run).
    Keys in `may_change` (e.g. a longer schedule; a dotted key, or a parent for all its keys) are updated. A
    config.json with no other file beside it is no claim (a run refused after claiming wrote nothing to continue),
    so the corrected command takes the workdir over. `write=False` only checks (the processes but the first of a
    multi-host run)."""
    path = Path(workdir) / "config.json"
    current = json.loads(json.dumps(config, default=jsonable))
    if path.exists() and _holds_work(Path(workdir)):
        previous, now = _flatten(json.loads(path.read_text())), _flatten(current)
        changed = sorted(k for k in set(previous) | set(now)
                         if not any(k == m or k.startswith(m + ".") for m in may_change)
                         and previous.get(k, _ABSENT) != now.get(k, _ABSENT))
        if changed:
            values = "; ".join(f"{k} was {previous.get(k, _ABSENT)!r}, now {now.get(k, _ABSENT)!r}" for k in changed)
            raise ValueError(f"{workdir} holds a {kind} with another config (differs in: {', '.join(changed)}): "
                             f"{values}; use a new --workdir or delete it")
    if write:
        write_json(path, current)


def _holds_work(workdir: Path) -> bool:
    """Whether `workdir` has a file besides its config.json (stops at the first one found)."""
    return any(p.name != "config.json" or p.parent != workdir for p in workdir.rglob("*") if not p.is_dir())


class _Absent:
    """A key one of two configs lacks: shown as such, and unequal to any value (None included)."""

    def __repr__(self):
        return "absent"


_ABSENT = _Absent()


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{'probe': {'kind': 'linear'}} -> {'probe.kind': 'linear'}: a difference is named down to the leaf."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def jsonable(x):
    """`json.dumps(default=...)` for numpy scalars and arrays."""
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def read_png(path) -> np.ndarray:
    """An image written by `write_png`, as a numpy array (uint8 [H, W, 3] for RGB)."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im)
