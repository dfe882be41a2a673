"""Model configs: frozen dataclasses read from and written back to diffusers/transformers `config.json` files.

Each model file declares a `Config` subclass whose fields are the config.json keys it reads (same names and
defaults as diffusers/transformers). `from_dict` keeps the known keys and rejects values that the Flax model does
not implement; `to_dict` writes a config.json the PyTorch library loads back (class name and metadata included).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

from jaxprobe.validate import check_supported


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class. Subclasses set EXPORT (extra keys written to config.json, e.g. `_class_name`) and SUPPORTED
    (field -> allowed values, for options of the reference implementation that are not implemented here)."""

    EXPORT: ClassVar[dict] = {}
    SUPPORTED: ClassVar[dict] = {}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: _frozen(v) for k, v in config.items() if k in names}
        out = cls(**kept)
        for name, allowed in cls.SUPPORTED.items():
            check_supported(f"{cls.__name__}: {name}", getattr(out, name), allowed)
        return out

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        return {**self.EXPORT, **fields}


def _frozen(value):
    """JSON lists as (nested) tuples: configs are hashable, since Flax modules holding them key jit caches."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def read_json(path: str | os.PathLike, what: str) -> dict:
    """A JSON object file; a broken one is a ValueError naming `what` and the path, not a bare JSONDecodeError."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return obj
