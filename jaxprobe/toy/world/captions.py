"""The toy world's caption language: a small fixed vocabulary and one sentence pattern.

A caption names every object as "a <size> <colour> <shape>", the salient object first, joined by "and", then
"on a checkered floor":  "a large red sphere and a small blue cube on a checkered floor".  At most 3 objects give
at most 18 words, so a caption fits a 20-token text encoder with its BOS/EOS tokens.

Colours are matched by hue (`nearest_color`): hue does not change when a colour is scaled (Lambert shading, cast
shadows) or mixed with grey (the achromatic floor), so a rendered or generated object keeps its colour name.
"""
from __future__ import annotations

import numpy as np
from matplotlib.colors import rgb_to_hsv

SHAPES = ("sphere", "cube", "cylinder", "cone")
# name -> linear RGB in [0, 1]: the six hues of the colour wheel, 60 degrees apart, at one saturation and value (their
# mean is grey). A sampler's overshoot under strong guidance has 30 degrees of hue before a colour changes its name;
# the previous palette (red / orange / yellow / green / blue / purple, 24-50 degrees between neighbours) had purple
# drawn blue by 15-step LMS at CFG 7.5 (README).
COLORS = {
    "red": (0.85, 0.12, 0.12),
    "yellow": (0.85, 0.85, 0.12),
    "green": (0.12, 0.85, 0.12),
    "cyan": (0.12, 0.85, 0.85),
    "blue": (0.12, 0.12, 0.85),
    "magenta": (0.85, 0.12, 0.85),
}
SIZES = ("small", "large")
SCENE_WORDS = ("a", "and", "on", "checkered", "floor")
_TAIL = "on a checkered floor"
_HUES = rgb_to_hsv(np.asarray(list(COLORS.values())))[:, 0]


def vocabulary() -> list[str]:
    """Every word that can appear in a caption, sorted."""
    return sorted(set(SHAPES) | set(COLORS) | set(SIZES) | set(SCENE_WORDS))


def check_words(text: str) -> list[str]:
    """The words of `text` (lower-cased, split on whitespace); ValueError naming the vocabulary if one is unknown."""
    words = text.lower().split()
    unknown = sorted({w for w in words if w not in vocabulary()})
    if unknown:
        raise ValueError(f"unknown caption word(s) {unknown}; the toy-world vocabulary is: {', '.join(vocabulary())}")
    return words


def caption(objects: list[tuple[str, str, str]]) -> str:
    """[(size, colour, shape), ...] in mention order (salient first) -> the caption sentence."""
    phrases = [f"a {size} {color} {shape}" for size, color, shape in objects]
    text = " and ".join(phrases) + " " + _TAIL
    check_words(text)
    return text


def parse(text: str) -> list[tuple[str, str, str]]:
    """Inverse of `caption`: the (size, colour, shape) triples in mention order; ValueError if it does not parse."""
    words = check_words(text)
    tail = _TAIL.split()
    body = words[:-len(tail)]
    groups = " ".join(body).split(" and ")
    triples = [tuple(g.split()) for g in groups]
    ok = words[-len(tail):] == tail and all(
        len(t) == 4 and t[0] == "a" and t[1] in SIZES and t[2] in COLORS and t[3] in SHAPES for t in triples)
    if not ok:
        raise ValueError(f"not a toy-world caption {text!r}; expected 'a <size> <colour> <shape> [and ...] {_TAIL}' "
                         f"with size in {SIZES}, colour in {tuple(COLORS)}, shape in {SHAPES}")
    return [t[1:] for t in triples]


def nearest_color(rgb) -> str | np.ndarray:
    """Colour name with the nearest hue to `rgb` ([3] -> str; [..., 3] -> array of names).

    Any scale works (uint8 or [0, 1] floats); hue is invariant to shading and to mixing with grey. A pure grey
    has no hue and maps to "red" (hue 0)."""
    rgb = np.asarray(rgb, np.float64)
    hue = rgb_to_hsv(rgb / max(float(rgb.max(initial=0.0)), 1e-12))[..., 0]
    diff = np.abs(hue[..., None] - _HUES)
    names = np.asarray(list(COLORS))[np.argmin(np.minimum(diff, 1.0 - diff), axis=-1)]
    return str(names) if rgb.ndim == 1 else names
