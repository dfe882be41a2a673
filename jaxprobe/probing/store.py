"""On-disk activation store for sweeps too large for memory: one directory of .npy files per chunk (batch) and a
JSON index. No pickle anywhere.

    directory/index.json            {"format": 1, "names": {name: file stem}, "arrays": {name: {dtype, shape}},
                                     "chunks": {"0": {"rows": B, "meta": {...}}, ...}}
    directory/chunk_000000/<stem>.npy

A chunk is written to a temp directory and renamed into place, then index.json is replaced atomically; the index
is the truth, so a run killed at any point leaves only complete chunks listed, and `has_chunk(i)` tells a restarted
run which batches to skip. Names may contain '/' (layer paths): they are percent-encoded into file stems.
dtypes numpy cannot name in .npy headers (bf16 and other ml_dtypes) are stored as same-width unsigned integers
and viewed back on read.
"""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Mapping

import ml_dtypes  # noqa: F401  (registers bf16 & co. as numpy dtype names)
import numpy as np

from jaxprobe import io

FORMAT = 1


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
        with io.atomic_dir(self._chunk_dir(i)) as tmp:
            for name, arr in arrays.items():
                np.save(tmp / f"{_stem(name)}.npy", _savable(arr), allow_pickle=False)
        index = json.loads(json.dumps(self._index))  # the on-disk index changes only once everything is in place
        for name, arr in arrays.items():
            index["names"].setdefault(name, _stem(name))
            index["arrays"].setdefault(name, {"dtype": arr.dtype.name, "shape": list(arr.shape[1:])})
        index["chunks"][str(int(i))] = {"rows": rows, "meta": dict(meta or {})}
        io.write_json(self.directory / "index.json", index)
        self._index = index

    def read(self, name: str, *, mmap: bool = True) -> np.ndarray:
        """All rows of `name` [N, ...] in chunk order (a read-only memmap when there is one chunk and `mmap`)."""
        if name not in self._index["names"]:
            raise KeyError(f"no array {name!r} in {self.directory}; stored: {', '.join(self.names()) or 'none'}")
        if not self.chunks():
            raise ValueError(f"{self.directory} holds no complete chunk yet")
        dtype = _dtype(self._index["arrays"][name]["dtype"])
        parts = [np.load(self._chunk_dir(i) / f"{self._index['names'][name]}.npy", allow_pickle=False,
                         mmap_mode="r" if mmap else None).view(dtype) for i in self.chunks()]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _chunk_dir(self, i: int) -> Path:
        return self.directory / f"chunk_{int(i):06d}"

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


def _stem(name: str) -> str:
    """Injective, filesystem-safe file stem for an array name ('/' and other specials percent-encoded)."""
    return urllib.parse.quote(name, safe="") or "%00"


def _dtype(name: str) -> np.dtype:
    return np.dtype(name)  # importing ml_dtypes registers 'bfloat16' etc. with numpy


def _savable(arr: np.ndarray) -> np.ndarray:
    """ml_dtypes arrays (kind 'V' in numpy) as unsigned integers of the same width; others unchanged."""
    return arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.kind == "V" else arr
