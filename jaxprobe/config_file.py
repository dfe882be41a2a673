"""A config file's `get_config()`, read by path as `--config=` reads it. configs/ is a folder beside the launchers,
not an installed package, so a config that builds on another one (and the demo) loads it this way."""
from __future__ import annotations

import importlib.util
from pathlib import Path


def load(path, *args):
    """`get_config(*args)` of the Python file at `path` (`--config=file.py:arg` passes 'arg')."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)
