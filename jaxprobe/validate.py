"""Checks shared by every entry point: one clear error that names the bad value and the valid ones."""
from __future__ import annotations

import contextlib
import functools
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence


def check_choice(what: str, value, valid: Iterable) -> None:
    """Raise ValueError unless `value` is one of `valid`, listing the valid choices."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, valid))}")


def check_supported(what: str, value, supported: Iterable) -> None:
    """Raise ValueError unless `value` (a reference model's or scheduler's option, valid there) is one jaxprobe
    supports, listing those."""
    supported = list(supported)
    if value not in supported:
        raise ValueError(f"{what}={value!r} is not supported; supported: {', '.join(map(repr, supported))}")


def check_choices(c, key: str, valid: Sequence) -> None:
    """config.<key> is a non-empty sequence of values from `valid`."""
    if not len(c[key]):
        raise ValueError(f"config.{key} is empty; choose from {', '.join(map(str, valid))}")
    for value in c[key]:
        check_choice(f"config.{key}", value, valid)


def get(c, key: str):
    """A dotted config key's value: get(c, 'probe.epochs') is c.probe.epochs."""
    return functools.reduce(lambda node, k: node[k], key.split("."), c)


def at_least(c, lows: Mapping[str, float]) -> None:
    """Every config key in `lows` (dotted for nested ones) holds a number >= its least valid value."""
    for key, low in lows.items():
        if not get(c, key) >= low:
            raise ValueError(f"config.{key} must be >= {low}, got {get(c, key)!r}")


def at_most(c, highs: Mapping[str, float]) -> None:
    """Every config key in `highs` (dotted for nested ones) holds a number <= its greatest valid value."""
    for key, high in highs.items():
        if not get(c, key) <= high:
            raise ValueError(f"config.{key} must be <= {high}, got {get(c, key)!r}")


def positive_finite(c, key: str) -> None:
    """config.<key> is a finite number > 0 (a learning rate, say)."""
    if not 0 < get(c, key) < math.inf:
        raise ValueError(f"config.{key} must be a finite number > 0, got {get(c, key)!r}")


@contextlib.contextmanager
def config_key(key: str):
    """Prefix a library check's ValueError with the config key it checked: the user knows the key."""
    try:
        yield
    except ValueError as e:
        raise ValueError(f"config.{key}: {e}") from e


def existing_path(c, key: str, what: str, needs: Sequence[str] = ()) -> Path:
    """config.<key> as an absolute path that exists, with `needs` in it; the message shows the path it resolved
    to, since a relative one depends on where the job was started."""
    if not c[key]:
        raise FileNotFoundError(f"config.{key} is empty; set it to {what}")
    path = Path(os.path.abspath(c[key]))
    missing = [n for n in needs if not (path / n).exists()]
    if not path.exists() or missing:
        problem = f"lacks {', '.join(missing)}" if path.exists() else "does not exist"
        raise FileNotFoundError(f"config.{key}={c[key]!r}: {path} {problem}; set it to {what}")
    return path
