"""Concept cards: determinism, uniform independent labels, the colour and pattern are the object's, neutral
background, clear errors, TFDS round trip."""
import collections

import numpy as np
import pytest

from jaxprobe.toy.cards import render


@pytest.fixture(scope="module")
def cards64():
    return render.render_cards(range(400), resolution=64)


def erode(mask):
    """Pixels whose 4 neighbours are in the mask too (away from the anti-aliased edge) [N,R,R]."""
    m = mask.copy()
    m[..., 1:, :] &= mask[..., :-1, :]
    m[..., :-1, :] &= mask[..., 1:, :]
    m[..., :, 1:] &= mask[..., :, :-1]
    m[..., :, :-1] &= mask[..., :, 1:]
    return m


def dilate(mask, steps=2):
    m = mask.copy()
    for _ in range(steps):
        d = m.copy()
        d[..., 1:, :] |= m[..., :-1, :]
        d[..., :-1, :] |= m[..., 1:, :]
        d[..., :, 1:] |= m[..., :, :-1]
        d[..., :, :-1] |= m[..., :, 1:]
        m = d
    return m


def test_constants():
    assert render.NUM_CLASSES == 16 and len(render.CLASS_NAMES) == 16
    assert render.CLASS_NAMES[0] == "circle/dotted" and render.CLASS_NAMES[-1] == "star/none"
    assert render.GROUPS == {"color": render.COLORS, "pattern": render.PATTERNS, "shape": render.SHAPES}
    assert render.COLORS[-1] == "none" and render.PATTERNS[-1] == "none" and "none" not in render.SHAPES
    assert render.TEST_SEED_OFFSET == 1_000_000


def test_same_seed_same_card_in_any_batch(cards64):
    alone = render.render_card(5)
    again = render.render_card(5, resolution=64)
    other = render.render_cards([99, 5, 3], resolution=64)
    for key, value in alone.items():
        np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(value), err_msg=key)
        np.testing.assert_array_equal(np.asarray(cards64[key][5]), np.asarray(value), err_msg=key)
        np.testing.assert_array_equal(np.asarray(other[key][1]), np.asarray(value), err_msg=key)
    assert alone["rgb"].flags.c_contiguous
    assert not np.array_equal(cards64["rgb"][5], cards64["rgb"][6])


def test_shapes_and_dtypes(cards64):
    n, r = 400, 64
    assert cards64["rgb"].shape == (n, r, r, 3) and cards64["rgb"].dtype == np.uint8
    assert cards64["mask"].shape == (n, r, r) and cards64["mask"].dtype == bool
    for key in ("shape", "color", "pattern"):
        assert cards64[key].shape == (n,) and cards64[key].dtype.kind == "U"
    assert cards64["label"].shape == (n,) and cards64["label"].dtype == np.int32
    card = render.render_card(7, resolution=32)
    assert card["rgb"].shape == (32, 32, 3) and card["mask"].shape == (32, 32)
    assert isinstance(card["label"], int) and isinstance(card["shape"], str)


def test_labels_and_geometry_do_not_depend_on_the_resolution():
    seeds = range(40)
    big, small = render.render_cards(seeds, 64), render.render_cards(seeds, 32)
    for key in ("shape", "color", "pattern", "label"):
        np.testing.assert_array_equal(big[key], small[key], err_msg=key)
    # the 32 px card is the 64 px card at half the size: its footprint matches the 64 px one averaged over 2x2 blocks
    coarse = big["mask"].reshape(40, 32, 2, 32, 2).mean((2, 4))
    sure = (coarse == 0) | (coarse == 1)
    assert np.array_equal(small["mask"][sure], coarse[sure] == 1)


def test_labels_are_uniform_and_independent():
    cards = render.render_cards(range(2000), resolution=16)
    n = len(cards["label"])
    for shape, pattern, label in zip(cards["shape"], cards["pattern"], cards["label"]):
        assert label == render.SHAPES.index(shape) * 4 + render.PATTERNS.index(pattern)
        assert render.CLASS_NAMES[label] == f"{shape}/{pattern}"
    classes = np.bincount(cards["label"], minlength=16)
    assert classes.min() > 0.6 * n / 16 and classes.max() < 1.4 * n / 16
    colors = collections.Counter(cards["color"])
    assert set(colors) == set(render.COLORS)
    assert min(colors.values()) > 0.8 * n / 5 and max(colors.values()) < 1.2 * n / 5
    for key, names in render.GROUPS.items():
        counts = collections.Counter(cards[key])
        assert set(counts) == set(names)
    # independence: chi-square of colour x class (64 degrees of freedom; 120 is far in the tail, p < 1e-4)
    table = np.zeros((5, 16))
    np.add.at(table, ([render.COLORS.index(c) for c in cards["color"]], cards["label"]), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    assert table.min() > 0 and ((table - expected) ** 2 / expected).sum() < 120


def test_colour_is_the_objects(cards64):
    inner = erode(cards64["mask"])
    for rgb, mask, m, color in zip(cards64["rgb"], cards64["mask"], inner, cards64["color"]):
        assert mask.sum() >= 0.03 * 64 * 64  # at least 3 % of the image
        assert render.nearest_color(rgb[mask].mean(0)) == color
        assert np.mean(render.nearest_color(rgb[m]) == color) > 0.97  # nearly every inner pixel, marks included


def test_pattern_is_visible(cards64):
    inner = erode(erode(cards64["mask"]))
    spread = {p: [] for p in render.PATTERNS}
    for rgb, m, pattern in zip(cards64["rgb"], inner, cards64["pattern"]):
        spread[pattern].append(rgb[m].astype(float).mean(-1).std())
    plain, patterned = max(spread["none"]), min(min(spread[p]) for p in render.PATTERNS[:-1])
    assert plain < 5 and patterned > 3 * plain, (plain, patterned)


def test_pattern_survives_32px():
    cards = render.render_cards(range(400), resolution=32)
    inner = erode(cards["mask"])
    std = np.array([rgb[m].astype(float).mean(-1).std() for rgb, m in zip(cards["rgb"], inner)])
    plain = cards["pattern"] == "none"
    assert std[plain].max() < std[~plain].min()


def test_background_is_light_neutral_grey(cards64):
    background = ~dilate(cards64["mask"], 3)  # a sharp star tip can tint a pixel 2 steps from the footprint
    px = cards64["rgb"][background].astype(float) / 255
    saturation = (px.max(-1) - px.min(-1)) / px.max(-1)
    assert saturation.max() < 0.1 and px.max(-1).min() > 0.55
    assert np.all(render.nearest_color(px) == "none")
    # it varies (noise, gradient, level), it is not one grey
    assert px.std() > 0.02 and px.reshape(-1, 3).min() < 0.7 and px.reshape(-1, 3).max() > 0.85


def test_object_size_and_placement(cards64):
    mask = cards64["mask"]
    assert not (mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any() or mask[:, :, -1].any())
    rows, cols = mask.any(2), mask.any(1)
    extent = np.maximum(rows.sum(1), cols.sum(1)) / 64
    assert extent.min() > 0.2 and extent.max() < 0.8
    assert np.ptp(np.nonzero(cols)[1]) > 40  # objects appear all over the image


@pytest.mark.parametrize("seed,resolution", [(0, 15), (0, 8), (0, 64.0), (0, "64"), (1.5, 64), ("3", 64),
                                             (-1, 64), (True, 64), (None, 64)])
def test_bad_input_is_a_clear_error(seed, resolution):
    with pytest.raises(ValueError, match="seed|resolution"):
        render.render_card(seed, resolution)
    with pytest.raises(ValueError, match="seed|resolution"):
        render.render_cards([0, seed], resolution)


def test_no_seeds_is_an_error():
    with pytest.raises(ValueError, match="seed"):
        render.render_cards([])


def test_numpy_integer_seeds_work():
    card = render.render_card(np.int64(3), np.int32(32))
    np.testing.assert_array_equal(card["rgb"], render.render_card(3, 32)["rgb"])


def test_tfds_round_trip_matches_render_card(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from jaxprobe.toy.cards.jaxprobe_toycards import Builder, ToyCardsConfig

    config = ToyCardsConfig(name="tiny32", resolution=32, num_train=8, num_test=4, test_seed_offset=500)
    builder = Builder(config=config, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    for split, seeds in (("train", range(8)), ("test", range(500, 504))):
        source = builder.as_data_source(split=split)
        examples = {int(ex["seed"]): ex for ex in (source[j] for j in range(len(source)))}
        assert sorted(examples) == list(seeds)
        for seed, ex in examples.items():
            want = render.render_card(seed, resolution=32)
            for key, value in want.items():
                got = ex[key]
                if isinstance(value, str):  # tfds returns strings as bytes
                    got = got.decode()
                np.testing.assert_array_equal(np.asarray(got), np.asarray(value), err_msg=f"{split} {seed} {key}")
