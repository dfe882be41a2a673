"""Positive and negative image sets per concept, as the paper makes them, and their quality against the truth.

Per concept: the images whose group softmax puts the concept on top are its candidates; the N with the highest
score are the positives (ties broken by a seeded permutation, so one-hot ground-truth scores work too), M others
drawn at random are the negatives, and a seeded split keeps 30 % of each for testing. "none" is never probed.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Mapping, Sequence

import numpy as np

from jaxprobe.concepts.scores import NONE
from jaxprobe.validate import check_choice


@dataclasses.dataclass(frozen=True)
class ConceptSet:
    """One concept's probe data: pool indices and binary labels of its train and test images."""

    concept: str
    group: str
    positives: np.ndarray  # [N] pool indices, best score first
    negatives: np.ndarray  # [M]
    train: np.ndarray  # [n_train] pool indices
    train_y: np.ndarray  # [n_train] bool
    test: np.ndarray
    test_y: np.ndarray


NEGATIVES = ("others", "non_candidates")


def make_sets(scores: Mapping[str, np.ndarray], groups: Mapping[str, Sequence[str]], *, num_positive: int = 100,
              num_negative: int = 200, test_fraction: float = 0.3, seed: int = 0,
              negatives: str = "others") -> list[ConceptSet]:
    """One ConceptSet per concept of every group except "none"; scores {group: [P, len(words)]} over a pool of P.

    negatives: "others" (the paper): drawn from every image that is not a positive, so a common concept's
    negatives carry it at about its base rate, which caps a probe's accuracy; "non_candidates": drawn from the
    images whose group softmax does not put the concept on top.

    Raises ValueError before anything is drawn if a concept has no candidates (an empty positive set) or fewer
    than `num_positive`, or if the pool cannot hold N positives and M negatives.
    """
    check_choice("negatives", negatives, NEGATIVES)
    if num_positive < 1 or num_negative < 1 or not 0 < test_fraction < 1:
        raise ValueError(f"need num_positive >= 1, num_negative >= 1 and 0 < test_fraction < 1, got "
                         f"{num_positive}, {num_negative}, {test_fraction}")
    sets = []
    for g, words in groups.items():
        s = np.asarray(scores[g], np.float64)
        if s.ndim != 2 or s.shape[1] != len(words):
            raise ValueError(f"scores of group {g!r} must be [pool, {len(words)}], got {s.shape}")
        if len(s) < num_positive + num_negative:
            raise ValueError(f"a pool of {len(s)} images cannot hold {num_positive} positives and {num_negative} "
                             "negatives per concept; use more images or smaller sets")
        top = s.argmax(axis=1)
        for k, concept in enumerate(words):
            if concept == NONE:
                continue
            rng = np.random.default_rng([seed, zlib.crc32(concept.encode())])
            candidates = np.flatnonzero(top == k)
            if len(candidates) < num_positive:
                what = "an empty positive set" if not len(candidates) else f"only {len(candidates)} candidates"
                raise ValueError(f"concept {concept!r} ({g}): {what} - {len(candidates)} of {len(s)} images score "
                                 f"it highest in its group, fewer than num_positive={num_positive}")
            order = rng.permutation(candidates)  # seeded tie-break, then a stable sort by score
            positives = order[np.argsort(-s[order, k], kind="stable")][:num_positive]
            others = np.setdiff1d(np.arange(len(s)), positives if negatives == "others" else candidates)
            if len(others) < num_negative:
                raise ValueError(f"concept {concept!r} ({g}): only {len(others)} images can be negatives, fewer "
                                 f"than num_negative={num_negative}")
            drawn = rng.choice(others, size=num_negative, replace=False)
            sets.append(_split(concept, g, positives, drawn, test_fraction, rng))
    return sets


def _split(concept, group, positives, negatives, test_fraction, rng) -> ConceptSet:
    idx = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives), bool), np.zeros(len(negatives), bool)])
    order = rng.permutation(len(idx))
    n_test = int(round(test_fraction * len(idx)))
    test, train = order[:n_test], order[n_test:]
    return ConceptSet(concept, group, positives, negatives, idx[train], y[train], idx[test], y[test])


def label_quality(sets: Sequence[ConceptSet], truth: Mapping[str, np.ndarray]) -> list[dict]:
    """Per concept: precision of its positives (precision@N against the exact labels) and the share of its negatives
    that carry the concept (random negatives of a common concept do)."""
    rows = []
    for cs in sets:
        names = np.asarray(truth[cs.group]).astype(str)
        rows.append({"concept": cs.concept, "group": cs.group, "num_positive": len(cs.positives),
                     "precision": float(np.mean(names[cs.positives] == cs.concept)),
                     "negatives_with_concept": float(np.mean(names[cs.negatives] == cs.concept))})
    return rows


def reindex(sets: Sequence[ConceptSet], position: np.ndarray) -> list[ConceptSet]:
    """The sets with their pool indices mapped through `position` (pool index -> row of the captured images)."""
    return [ConceptSet(cs.concept, cs.group, position[cs.positives], position[cs.negatives], position[cs.train],
                       cs.train_y, position[cs.test], cs.test_y) for cs in sets]


def pool_indices(sets: Sequence[ConceptSet]) -> np.ndarray:
    """The sorted pool indices any set uses (only these images are run through the probed model)."""
    return np.unique(np.concatenate([np.concatenate([cs.train, cs.test]) for cs in sets]))
