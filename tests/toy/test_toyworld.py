"""Toy world: determinism, exact depth, consistent masks/boxes/captions, clear errors, TFDS round trip."""
import math

import numpy as np
import pytest

from jaxprobe.toy.world import captions, render

SEEDS = list(range(12))


@pytest.fixture(scope="module")
def batch():
    return render.render_batch(SEEDS, resolution=48)


def pixel_rays_y(resolution):
    """Camera-space vertical coordinate y_c of each pixel row's centre ray (forward component 1) [R]."""
    f = (resolution / 2) / math.tan(render.FOV / 2)
    return (resolution / 2 - np.arange(resolution) - 0.5) / f


def test_same_seed_same_scene_in_any_batch(batch):
    alone = render.render_scene(5, resolution=48)
    other = render.render_batch([99, 5, 3], resolution=48)
    for key, value in alone.items():
        np.testing.assert_array_equal(np.asarray(batch[key][5]), np.asarray(value), err_msg=key)
        np.testing.assert_array_equal(np.asarray(other[key][1]), np.asarray(value), err_msg=key)
    assert not np.array_equal(batch["rgb"][5], batch["rgb"][6])
    assert len(set(batch["caption"])) > 1


def test_shapes_and_dtypes(batch):
    n, r, k = len(SEEDS), 48, render.MAX_OBJECTS
    assert batch["rgb"].shape == (n, r, r, 3) and batch["rgb"].dtype == np.uint8
    assert batch["depth"].shape == (n, r, r) and batch["depth"].dtype == np.float32
    assert batch["salient"].shape == (n, r, r) and batch["salient"].dtype == bool
    assert batch["object_masks"].shape == (n, k, r, r) and batch["object_masks"].dtype == bool
    assert batch["boxes"].shape == (n, k, 4)
    assert batch["num_objects"].shape == (n,) and len(batch["caption"]) == n


def test_depth_on_the_view_axis_is_distance_to_sphere_minus_radius():
    h, pitch, r = 2.0, math.radians(20.0), 0.5
    z = (h - r) / math.tan(pitch)  # the view axis passes through the sphere's centre (0, r, z)
    scene = render.Scene(h, pitch, math.pi, math.radians(50.0),
                         [render.SceneObject("sphere", "red", r, x=0.0, z=z)])
    out = render.render(scene, resolution=33)  # odd: the centre pixel's ray is the view axis
    assert out["object_masks"][0, 16, 16]
    np.testing.assert_allclose(out["depth"][16, 16], math.hypot(h - r, z) - r, rtol=1e-6)


@pytest.mark.parametrize("shape", ["cube", "cylinder"])
def test_depth_of_flat_tops_matches_the_plane_formula(shape):
    """Top faces are horizontal planes y = top: depth = (h - top) / (sin p - y_c cos p) where the ray meets them."""
    h, pitch, res = 2.5, math.radians(22.0), 40
    obj = render.SceneObject(shape, "green", 0.7, x=0.3, z=4.5, angle=0.4 if shape == "cube" else 0.0)
    out = render.render(render.Scene(h, pitch, math.pi, math.radians(50.0), [obj]), resolution=res)
    f = (res / 2) / math.tan(render.FOV / 2)
    xc = (np.arange(res) + 0.5 - res / 2) / f
    yc = pixel_rays_y(res)[:, None]
    depth = (h - obj.height) / (math.sin(pitch) - yc * math.cos(pitch))  # [R, 1]
    # world point where each pixel ray meets the top plane, relative to the object's axis
    px = depth * xc[None] - obj.x
    pz = depth * (yc * math.sin(pitch) + math.cos(pitch)) - obj.z
    if shape == "cube":
        c, s = math.cos(obj.angle), math.sin(obj.angle)
        on_top = (np.abs(c * px - s * pz) < obj.radius) & (np.abs(s * px + c * pz) < obj.radius)
    else:
        on_top = np.hypot(px, pz) < obj.radius
    on_top &= depth > 0
    assert on_top.sum() >= 10
    assert out["object_masks"][0][on_top].all()
    np.testing.assert_allclose(out["depth"][on_top], np.broadcast_to(depth, on_top.shape)[on_top], rtol=1e-6)


def test_floor_depth_matches_plane_formula_and_sky_is_far(batch):
    yc = pixel_rays_y(48)[:, None]
    for i, seed in enumerate(SEEDS):
        scene = render.sample_scene(seed)
        denom = math.sin(scene.camera_pitch) - yc * math.cos(scene.camera_pitch)
        with np.errstate(divide="ignore"):
            plane = np.where(denom > 0, scene.camera_height / denom, np.inf) * np.ones((1, 48))
        background = ~batch["object_masks"][i].any(0)
        floor = background & (plane < render.FAR)
        assert floor.any() and (background & ~floor).any()  # every view shows floor and sky
        np.testing.assert_allclose(batch["depth"][i][floor], plane[floor], rtol=1e-6)
        assert np.all(batch["depth"][i][background & ~floor] == render.FAR)
        assert np.all(batch["depth"][i][~background] < plane[~background])  # objects stand in front of the floor


def surface_residual(obj, p):
    """Distance-like residual [P] of points p [3, P] from the object's surface (0 on it), from implicit equations."""
    x, y, z = p[0] - obj.x, p[1], p[2] - obj.z
    r, h = obj.radius, obj.height
    if obj.shape == "sphere":
        return np.abs(np.sqrt(x ** 2 + (y - r) ** 2 + z ** 2) - r)
    if obj.shape == "cube":
        c, s = math.cos(obj.angle), math.sin(obj.angle)
        u, w = c * x - s * z, s * x + c * z
        return np.abs(np.maximum.reduce([np.abs(u), np.abs(y - r), np.abs(w)]) - r)
    radial = np.hypot(x, z)
    if obj.shape == "cylinder":
        side = np.abs(radial - r) + np.maximum(y - h, 0) + np.maximum(-y, 0)
        cap = np.abs(y - h) + np.maximum(radial - r, 0)
        return np.minimum(side, cap)
    return np.abs(radial - r * (1 - y / h)) + np.maximum(y - h, 0) + np.maximum(-y, 0)


def test_object_pixels_lie_on_their_surfaces(batch):
    res = 48
    f = (res / 2) / math.tan(render.FOV / 2)
    xc = np.tile((np.arange(res) + 0.5 - res / 2) / f, res)
    yc = np.repeat(pixel_rays_y(res), res)
    for i, seed in enumerate(SEEDS):
        scene = render.sample_scene(seed)
        sp, cp = math.sin(scene.camera_pitch), math.cos(scene.camera_pitch)
        t = batch["depth"][i].ravel().astype(np.float64)
        p = np.stack([t * xc, scene.camera_height + t * (yc * cp - sp), t * (yc * sp + cp)])
        for obj, m in zip(scene.objects, batch["object_masks"][i].reshape(render.MAX_OBJECTS, -1)):
            assert surface_residual(obj, p[:, m]).max() < 1e-5


def test_masks_salient_and_boxes(batch):
    for i in range(len(SEEDS)):
        masks, k = batch["object_masks"][i], int(batch["num_objects"][i])
        assert masks.sum(0).max() <= 1  # each pixel shows at most one object
        assert not masks[k:].any() and np.all(batch["boxes"][i, k:] == 0)
        areas = masks[:k].sum((1, 2))
        assert areas.min() > 0
        s = int(batch["salient_index"][i])
        assert np.array_equal(batch["salient"][i], masks[s]) and areas[s] == areas.max()
        assert not (batch["salient"][i] & ~masks.any(0)).any()
        for m, (y0, x0, y1, x1) in zip(masks[:k], batch["boxes"][i, :k].astype(int)):
            ys, xs = np.nonzero(m)
            assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (y0, x0, y1, x1)


def test_captions_name_salient_object_first_and_use_the_vocabulary(batch):
    vocab = set(captions.vocabulary())
    for i, text in enumerate(batch["caption"]):
        assert set(text.split()) <= vocab
        mentioned = captions.parse(text)
        k, s = int(batch["num_objects"][i]), int(batch["salient_index"][i])
        objects = list(zip(batch["object_size"][i, :k], batch["object_color"][i, :k], batch["object_shape"][i, :k]))
        assert sorted(mentioned) == sorted(objects)
        assert mentioned[0] == objects[s]
        assert mentioned[0][1:] == (batch["salient_color"][i], batch["salient_shape"][i])
        assert len(text.split()) <= 18  # fits a 20-token text encoder with BOS/EOS


def test_rendered_object_pixels_keep_their_colour_name(batch):
    """Shading and cast shadows must not push any object pixel to another colour name (nor the salient mean)."""
    for i in range(len(SEEDS)):
        for m, color in zip(batch["object_masks"][i], batch["object_color"][i]):
            if color:
                assert np.all(captions.nearest_color(batch["rgb"][i][m]) == color)
        assert captions.nearest_color(batch["rgb"][i][batch["salient"][i]].mean(0)) == batch["salient_color"][i]


@pytest.mark.parametrize("name", list(captions.COLORS))
def test_nearest_color_ignores_shading_and_grey(name):
    rgb = np.asarray(captions.COLORS[name])
    assert captions.nearest_color(rgb) == name
    assert captions.nearest_color(0.25 * rgb) == name
    assert captions.nearest_color(0.5 * rgb + 0.3) == name  # mixed with grey
    assert captions.nearest_color(np.round(rgb * 255).astype(np.uint8)) == name


def test_sampled_scenes_are_valid():
    seen_shapes, seen_counts = set(), set()
    for seed in range(150):
        scene = render.sample_scene(seed)
        objs = scene.objects
        seen_shapes |= {o.shape for o in objs}
        seen_counts.add(len(objs))
        for a in range(len(objs)):
            for b in range(a):
                gap = math.hypot(objs[a].x - objs[b].x, objs[a].z - objs[b].z)
                assert gap > objs[a].footprint + objs[b].footprint  # no two objects touch
        areas = np.sort(scene.reference_areas)
        assert areas[0] > 0 and (len(areas) == 1 or areas[-1] >= render.SALIENT_MARGIN * areas[-2])
    assert seen_shapes == set(captions.SHAPES) and seen_counts == {1, 2, 3}


def test_bad_shape_colour_and_words_list_the_choices():
    with pytest.raises(ValueError) as e:
        render.SceneObject("torus", "red", 0.5, x=0.0, z=4.0)
    assert "torus" in str(e.value) and all(s in str(e.value) for s in captions.SHAPES)
    with pytest.raises(ValueError) as e:
        render.SceneObject("cube", "teal", 0.5, x=0.0, z=4.0)
    assert all(c in str(e.value) for c in captions.COLORS)
    with pytest.raises(ValueError) as e:
        captions.check_words("a red torus on a checkered floor")
    assert "torus" in str(e.value) and all(w in str(e.value) for w in captions.vocabulary())
    with pytest.raises(ValueError):
        captions.parse("a red sphere on a checkered floor")  # size word missing
    with pytest.raises(ValueError, match="resolution"):
        render.render_scene(0, resolution=4)


def test_tfds_round_trip_matches_render_scene(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from jaxprobe.toy.world.jaxprobe_toyworld import Builder, ToyWorldConfig

    config = ToyWorldConfig(name="tiny32", resolution=32, num_train=8, num_test=4, test_seed_offset=500)
    builder = Builder(config=config, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    for split, seeds in (("train", range(8)), ("test", range(500, 504))):
        source = builder.as_data_source(split=split)
        examples = {int(ex["seed"]): ex for ex in (source[j] for j in range(len(source)))}
        assert sorted(examples) == list(seeds)
        for seed, ex in examples.items():
            want = render.render_scene(seed, resolution=32)
            for key, value in want.items():
                got = ex[key]
                if np.asarray(value).dtype.kind == "U":  # tfds returns strings as bytes
                    got = np.vectorize(bytes.decode)(np.asarray(got, object)) if np.ndim(got) else got.decode()
                np.testing.assert_array_equal(np.asarray(got), np.asarray(value), err_msg=f"{split} {seed} {key}")


def test_word_tokenizer_keeps_every_word_whole(tmp_path):
    from jaxprobe.models import pipeline, tokenizer
    tokenizer.build_word_tokenizer(captions.vocabulary(), tmp_path, max_length=20)
    tok = pipeline.load_tokenizer(tmp_path)
    for word in captions.vocabulary():
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    text = "a large red sphere and a small blue cube on a checkered floor"
    ids = pipeline.tokenize(tok, [text])[0]
    assert list(ids[:15]) == [0] + [tok.convert_tokens_to_ids(w + "</w>") for w in text.split()] + [1]
    assert (ids[15:] == 1).all()  # padded with EOS
