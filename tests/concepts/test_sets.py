"""Concept scores and sets: the paper's top-N / random-M recipe, seeded splits, label quality, clear errors."""
import numpy as np
import pytest

from jaxprobe.concepts import scores, sets

GROUPS = {"color": ("red", "blue", "none"), "pattern": ("dotted", "none")}


def _truth(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return {g: np.asarray(words)[rng.integers(len(words), size=n)] for g, words in GROUPS.items()}


def test_truth_scores_are_one_hot_and_sets_follow_the_recipe():
    truth = _truth()
    s = scores.truth_scores(truth, GROUPS)
    assert s["color"].shape == (600, 3) and np.all(s["color"].sum(1) == 1)
    made = sets.make_sets(s, GROUPS, num_positive=100, num_negative=200, seed=3)
    assert [cs.concept for cs in made] == ["red", "blue", "dotted"]  # "none" is never probed
    for cs in made:
        assert len(cs.positives) == 100 and len(cs.negatives) == 200
        assert not set(cs.positives) & set(cs.negatives)
        assert len(cs.test) == 90 and len(cs.train) == 210  # 70/30 of 300
        assert set(cs.train) | set(cs.test) == set(cs.positives) | set(cs.negatives)
        assert np.all(np.isin(cs.train[cs.train_y], cs.positives)) and not np.any(np.isin(cs.train[~cs.train_y],
                                                                                          cs.positives))
    quality = {q["concept"]: q for q in sets.label_quality(made, truth)}
    assert all(q["precision"] == 1.0 for q in quality.values())  # truth positives are all true
    # random negatives carry a concept at its rate among the images that are not positives
    for concept, group in (("red", "color"), ("dotted", "pattern")):
        rate = (np.sum(truth[group] == concept) - 100) / (600 - 100)
        assert abs(quality[concept]["negatives_with_concept"] - rate) < 0.08, (concept, rate)


def test_sets_are_seeded():
    s = scores.truth_scores(_truth(), GROUPS)
    a, b, c = (sets.make_sets(s, GROUPS, seed=k) for k in (0, 0, 1))
    assert all(np.array_equal(x.train, y.train) for x, y in zip(a, b))
    assert not all(np.array_equal(x.positives, y.positives) for x, y in zip(a, c))  # ties broken by the seed


def test_positives_are_the_top_scores():
    rng = np.random.default_rng(0)
    s = {"color": rng.dirichlet(np.ones(3), size=900), "pattern": rng.dirichlet(np.ones(2), size=900)}
    made = {cs.concept: cs for cs in sets.make_sets(s, GROUPS)}
    red = s["color"][:, 0]
    assert np.all(np.diff(red[made["red"].positives]) <= 0)  # best first
    assert red[made["red"].positives].min() >= np.sort(red[s["color"].argmax(1) == 0])[-100]


def test_bad_inputs_give_clear_errors():
    truth = _truth()
    with pytest.raises(ValueError, match="unknown concept group 'shape'"):
        scores.check_groups({"shape": ("circle", "none")}, GROUPS)
    with pytest.raises(ValueError, match="not in group 'color'"):
        scores.check_groups({"color": ("red", "purple")}, GROUPS)
    with pytest.raises(ValueError, match="at least two"):
        scores.check_groups({"color": ("red",)})
    with pytest.raises(ValueError, match="no '{}'"):
        scores.prompts(GROUPS, "a concept")
    missing_blue = {**truth, "color": np.where(truth["color"] == "blue", "red", truth["color"])}
    with pytest.raises(ValueError, match="'blue' \\(color\\): an empty positive set"):
        sets.make_sets(scores.truth_scores(missing_blue, GROUPS), GROUPS)
    with pytest.raises(ValueError, match="cannot hold 100 positives and 200 negatives"):
        sets.make_sets(scores.truth_scores({g: t[:250] for g, t in truth.items()}, GROUPS), GROUPS)
    with pytest.raises(ValueError, match=r"only \d+ candidates .* fewer than num_positive=250"):
        sets.make_sets(scores.truth_scores(truth, GROUPS), GROUPS, num_positive=250, num_negative=300)


def test_non_candidate_negatives_do_not_carry_the_concept():
    truth = _truth()
    made = sets.make_sets(scores.truth_scores(truth, GROUPS), GROUPS, negatives="non_candidates")
    assert all(q["negatives_with_concept"] == 0.0 for q in sets.label_quality(made, truth))
    with pytest.raises(ValueError, match="unknown negatives 'hard'"):
        sets.make_sets(scores.truth_scores(truth, GROUPS), GROUPS, negatives="hard")
