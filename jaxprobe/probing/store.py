"""On-disk activation store for sweeps too large for memory: one directory of .npy files per chunk (batch) and a
JSON index. No pickle anywhere.

    directory/index.json            {"format": 1, "names": {name: file stem}, "arrays": {name: {dtype, shape}},
                                     "chunks": {"0": {"rows": B, "meta": {...}}, ...}}
    directory/chunk_000000/<stem>.npy

A chunk is written to a temp directory and renamed into place, then index.json is replaced atomically; the index
is the truth, so a run killed at any point leaves only complete chunks listed, and `has_chunk(i)` tells a restarted
run which batches to skip. A rewritten chunk is unlisted before its files change. What a killed writer leaves (temp
entries, a chunk renamed into place but never listed) is removed by the next write, not on open: a reader may open
the store while a writer works. Names may contain '/' (layer paths): they are percent-encoded into file stems, and
index.json is read as data, never as paths: a stem that is not the store's own encoding of its name is refused.
dtypes numpy cannot name in .npy headers (bf16 and other ml_dtypes) are stored as same-width unsigned integers
and viewed back on read.
"""
from __future__ import annotations

import json
import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Mapping

import ml_dtypes  # noqa: F401  (registers bf16 & co. as numpy dtype names)
import numpy as np

from jaxprobe import io

FORMAT = 1
_LEFTOVER = re.compile(r"\.chunk_\d{6,}\.[a-z0-9_]+|\.index\.json\.[a-z0-9_]+(?:\.json)?")  # io's temp names, .old
_CHUNK = re.compile(r"chunk_(\d{6}|[1-9]\d{6,})")  # exactly the names _chunk_dir gives


class ActivationStore:
    """Chunked arrays {name: [N, ...]} on disk, appended one chunk (batch of rows) at a time, resumable."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "index.json"
        self._index = json.loads(path.read_text()) if path.exists() else {
            "format": FORMAT, "names": {}, "arrays": {}, "chunks": {}}
        if self._index.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown store format {self._index.get('format')!r} (this jaxprobe reads "
                             f"format {FORMAT})")
        _validate(self._index, path)
        self._swept = False

    def has_chunk(self, i: int) -> bool:
        """Whether chunk i was completely written (a restarted run skips it)."""
        return str(int(i)) in self._index["chunks"]

    def chunks(self) -> list[int]:
        """Indices of the complete chunks, ascending."""
        return sorted(int(i) for i in self._index["chunks"])

    def names(self) -> list[str]:
        return list(self._index["names"])

    def meta(self) -> dict[int, dict]:
        """{chunk index: the meta dict written with it}, ascending."""
        return {i: self._index["chunks"][str(i)]["meta"] for i in self.chunks()}

    def write_chunk(self, i: int, arrays: Mapping[str, np.ndarray], meta: Mapping | None = None) -> None:
        """Write chunk i: {name: array [B, ...]} (same B for all; the same names, trailing shapes and dtypes as the
        chunks already stored) and a JSON-serialisable meta dict. Atomic; rewriting a chunk replaces it."""
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        rows = self._check(i, arrays)
        if not self._swept:
            self._remove_leftovers()
        if self.has_chunk(i):  # a kill mid-rewrite must leave it unlisted, not listed over other rows or no files
            index = json.loads(json.dumps(self._index))
            del index["chunks"][str(int(i))]
            self._commit(index)
        with io.atomic_dir(self._chunk_dir(i)) as tmp:
            for name, arr in arrays.items():
                np.save(tmp / f"{_stem(name)}.npy", _savable(arr), allow_pickle=False)
        index = json.loads(json.dumps(self._index))  # the on-disk index changes only once everything is in place
        for name, arr in arrays.items():
            index["names"].setdefault(name, _stem(name))
            index["arrays"].setdefault(name, {"dtype": arr.dtype.name, "shape": list(arr.shape[1:])})
        index["chunks"][str(int(i))] = {"rows": rows, "meta": dict(meta or {})}
        self._commit(index)

    def read(self, name: str, *, rows=None, mmap: bool = True) -> np.ndarray:
        """All rows of `name` [N, ...] in chunk order (a read-only memmap when there is one chunk and `mmap`), or
        only `rows` (indices into those N), read chunk by chunk so that memory holds just them."""
        if name not in self._index["names"]:
            raise KeyError(f"no array {name!r} in {self.directory}; stored: {', '.join(self.names()) or 'none'}")
        if not self.chunks():
            raise ValueError(f"{self.directory} holds no complete chunk yet")
        if rows is not None:
            return take_rows((self.read_chunk(i, name) for i in self.chunks()), rows, f"{self.directory}: {name}")
        dtype = _dtype(self._index["arrays"][name]["dtype"])
        parts = [np.load(self._file(i, name), allow_pickle=False, mmap_mode="r" if mmap else None).view(dtype)
                 for i in self.chunks()]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def row_bytes(self, name: str) -> int:
        """Bytes one row of `name` takes as stored."""
        spec = self._index["arrays"][name]
        return int(np.prod(spec["shape"], dtype=np.int64)) * _dtype(spec["dtype"]).itemsize

    def read_chunk(self, i: int, name: str) -> np.ndarray:
        """The rows of `name` in chunk i (a read-only memmap)."""
        return np.load(self._file(i, name), allow_pickle=False, mmap_mode="r").view(
            _dtype(self._index["arrays"][name]["dtype"]))

    def _chunk_dir(self, i: int) -> Path:
        return self.directory / f"chunk_{int(i):06d}"

    def _file(self, i: int, name: str) -> Path:
        """The .npy of `name` in chunk i; refused if it resolves outside the chunk (a symlink planted there)."""
        chunk = self._chunk_dir(i)
        path = chunk / f"{self._index['names'][name]}.npy"
        if path.resolve().parent != chunk.resolve():
            raise ValueError(f"{self.directory / 'index.json'}: array {name!r} of chunk {i} resolves to "
                             f"{path.resolve()}, outside {chunk}; refusing to read it")
        return path

    def _commit(self, index: dict) -> None:
        io.write_json(self.directory / "index.json", index)
        self._index = index

    def _remove_leftovers(self) -> None:
        """Delete what a killed writer left: io's temp entries (and atomic_dir's `.old` swap) and complete chunk
        directories the index never listed (they are written again). Listed chunks and other names stay."""
        for path in list(self.directory.iterdir()):
            chunk = _CHUNK.fullmatch(path.name)
            if (chunk and not self.has_chunk(int(chunk[1]))) or _LEFTOVER.fullmatch(path.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self._swept = True

    def _check(self, i, arrays: dict[str, np.ndarray]) -> int:
        if int(i) != i or i < 0:
            raise ValueError(f"chunk index must be a non-negative integer, got {i!r}")
        if not arrays:
            raise ValueError("write_chunk needs at least one array")
        rows = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(rows) != 1 or None in rows:
            raise ValueError(f"chunk {i}: every array needs the same leading (row) dimension, got "
                             f"{ {k: a.shape for k, a in arrays.items()} }")
        known = self._index["arrays"]
        if known and set(arrays) != set(known):
            raise ValueError(f"chunk {i} has arrays {sorted(arrays)}, the store has {sorted(known)}")
        for name, arr in arrays.items():
            spec = known.get(name)
            if spec and (spec["dtype"] != arr.dtype.name or tuple(spec["shape"]) != arr.shape[1:]):
                raise ValueError(f"chunk {i}: {name} is {arr.dtype.name} [B, {', '.join(map(str, arr.shape[1:]))}]"
                                 f", the store holds {spec['dtype']} [B, {', '.join(map(str, spec['shape']))}]")
        return rows.pop()


class ProcessStores:
    """A job's store, split by process so that hosts never write the same file. With one process it is the
    `ActivationStore` at `directory`; with P processes, process p writes `directory/process_<p>` holding only the
    rows of each chunk that its devices computed (meta 'row_from'), and reads merge every chunk's parts in row
    order. A chunk is complete when every process wrote its part; other processes' parts are read fresh each time
    (they are written concurrently)."""

    def __init__(self, directory, process_index: int = 0, process_count: int = 1):
        self.directory, self.count = Path(directory), process_count
        self.mine = ActivationStore(self._part(process_index))

    def _part(self, p: int) -> Path:
        return self.directory if self.count == 1 else self.directory / f"process_{p:03d}"

    def _parts(self) -> list[ActivationStore]:
        return [self.mine] if self.count == 1 else [ActivationStore(self._part(p)) for p in range(self.count)]

    def has_chunk(self, i: int) -> bool:
        return all(part.has_chunk(i) for part in self._parts())

    def write_chunk(self, i: int, arrays: Mapping[str, np.ndarray], meta: Mapping, row_from: int = 0) -> None:
        """This process's rows of chunk i, starting at row `row_from` of the chunk."""
        self.mine.write_chunk(i, arrays, meta if self.count == 1 else {**meta, "row_from": int(row_from)})

    def row_bytes(self, name: str) -> int:
        return self.mine.row_bytes(name)

    def read(self, name: str, *, rows=None) -> np.ndarray:
        """All rows of `name` [N, ...], or only `rows` (indices into them), chunk by chunk; each chunk's rows placed
        by their 'row_from' (parts that overlap hold the same rows)."""
        if self.count == 1:
            return self.mine.read(name, rows=rows)
        chunks = self._merged_chunks(name)
        return np.concatenate(list(chunks)) if rows is None else take_rows(chunks, rows, f"{self.directory}: {name}")

    def _merged_chunks(self, name: str):
        parts = self._parts()
        for i in parts[0].chunks():
            pieces = [(part.meta()[i]["row_from"], part.read_chunk(i, name)) for part in parts]
            rows = max(start + len(a) for start, a in pieces)
            chunk = np.empty((rows,) + pieces[0][1].shape[1:], pieces[0][1].dtype)
            covered = np.zeros(rows, bool)
            for start, a in pieces:
                chunk[start:start + len(a)], covered[start:start + len(a)] = a, True
            if not covered.all():
                raise ValueError(f"{self.directory}: chunk {i} of {name!r} misses rows {np.flatnonzero(~covered)}")
            yield chunk


def take_rows(chunks, rows, what: str) -> np.ndarray:
    """Rows `rows` (any order) of the concatenation of `chunks` (arrays [B_i, ...], an iterable read once), copying
    only those rows out of each chunk."""
    rows = np.asarray(rows, np.int64).reshape(-1)
    out, start = None, 0
    for chunk in chunks:
        if out is None:
            out = np.empty((len(rows),) + chunk.shape[1:], chunk.dtype)
        mine = (rows >= start) & (rows < start + len(chunk))
        if mine.any():
            out[mine] = chunk[rows[mine] - start]
        start += len(chunk)
    if out is None or (len(rows) and (rows.min() < 0 or rows.max() >= start)):
        raise IndexError(f"{what}: rows {rows.min() if len(rows) else ''}..{rows.max() if len(rows) else ''} "
                         f"asked, the store holds {start}")
    return out


def _validate(index: dict, path: Path) -> None:
    """index.json is data, not paths: every file stem must be the store's own encoding of its name (so no '/' and
    no absolute path gets in) and every chunk key the canonical non-negative integer `has_chunk` looks up."""
    for name, stem in index["names"].items():
        if stem != _stem(name):
            raise ValueError(f"{path}: array {name!r} has file stem {stem!r}, not the store's {_stem(name)!r}; "
                             "refusing to read it")
    for key in index["chunks"]:
        if not re.fullmatch(r"0|[1-9][0-9]*", key):
            raise ValueError(f"{path}: chunk key {key!r} is not a non-negative integer")


def _stem(name: str) -> str:
    """Injective, filesystem-safe file stem for an array name ('/' and other specials percent-encoded)."""
    return urllib.parse.quote(name, safe="") or "%00"


def _dtype(name: str) -> np.dtype:
    return np.dtype(name)  # importing ml_dtypes registers 'bfloat16' etc. with numpy


def _savable(arr: np.ndarray) -> np.ndarray:
    """ml_dtypes arrays (kind 'V' in numpy) as unsigned integers of the same width; others unchanged."""
    return arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.kind == "V" else arr
