"""Checks shared by every entry point: one clear error that names the bad value and the valid ones."""
from __future__ import annotations

from typing import Iterable


def check_choice(what: str, value, valid: Iterable) -> None:
    """Raise ValueError unless `value` is one of `valid`, listing the valid choices."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, valid))}")
