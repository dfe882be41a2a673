"""Concept scores: for every image and concept group, a probability over the group's concepts.

The paper's recipe (`clip_scores`): softmax, within each group (its "none" concept included), of CLIP's scaled cosine
similarity between the image and "This image has a concept: <concept>". The ground truth (`truth_scores`, one-hot)
goes through the same interface, so the CLIP-labelled run and its control differ only in where the scores came from.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np

from jaxprobe.models import clip

TEMPLATE = "This image has a concept: {}"
NONE = "none"  # a group's "nothing of these" concept: part of the softmax, never probed
Groups = Mapping[str, Sequence[str]]


def check_groups(groups: Groups, known: Groups | None = None) -> dict[str, tuple[str, ...]]:
    """The concept groups as {group: words}, or one clear error: an empty group, a group of one concept (a softmax
    over one prompt is always 1), a probed concept in two groups, or (given `known`) a group or word the data
    cannot label."""
    groups = {g: tuple(words) for g, words in dict(groups).items()}
    if not groups:
        raise ValueError("no concept groups given")
    seen: dict[str, str] = {}
    for g, words in groups.items():
        if len(words) < 2:
            raise ValueError(f"concept group {g!r} has {len(words)} concept(s); a softmax within a group needs at "
                             "least two (add 'none')")
        for w in words:
            if w in seen and w != NONE:
                raise ValueError(f"concept {w!r} is in groups {seen[w]!r} and {g!r}; a concept names one task")
            seen[w] = g
        if known is not None:
            if g not in known:
                raise ValueError(f"unknown concept group {g!r}; this data set labels the groups: {', '.join(known)}")
            unknown = [w for w in words if w not in known[g]]
            if unknown:
                raise ValueError(f"concept(s) {unknown} are not in group {g!r} of this data set: "
                                 f"{', '.join(known[g])}")
    return groups


def prompts(groups: Groups, template: str = TEMPLATE) -> dict[str, list[str]]:
    if "{}" not in template:
        raise ValueError(f"the concept prompt template {template!r} has no '{{}}' for the concept")
    return {g: [template.format(w) for w in words] for g, words in groups.items()}


def clip_scores(module: clip.CLIPModel, params, tokenize, images: np.ndarray, groups: Groups, *,
                template: str = TEMPLATE, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{group: [N, len(words)]} softmax probabilities from CLIP; images uint8 [N, H, W, 3] (resized to CLIP's input).

    `tokenize(list of str) -> int ids [P, T]` (e.g. `pipeline.tokenize` with a CLIPTokenizer).
    """
    logits = clip.zero_shot_logits(module, params, tokenize, images, prompts(check_groups(groups), template),
                                   batch_size=batch_size)
    return {g: np.asarray(jax.nn.softmax(x, axis=-1)) for g, x in logits.items()}


def truth_scores(truth: Mapping[str, np.ndarray], groups: Groups) -> dict[str, np.ndarray]:
    """{group: one-hot [N, len(words)]} from the exact labels {group: concept name per image [N]}."""
    groups = check_groups(groups)
    out = {}
    for g, words in groups.items():
        if g not in truth:
            raise ValueError(f"unknown concept group {g!r}; the ground truth labels: {', '.join(truth)}")
        names = np.asarray(truth[g]).astype(str)
        stray = sorted(set(names) - set(words))
        if stray:
            raise ValueError(f"ground-truth {g!r} values {stray} are not concepts of the group ({', '.join(words)})")
        out[g] = (names[:, None] == np.asarray(words)[None]).astype(np.float32)
    return out

