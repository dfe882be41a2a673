"""The intervention's edit inside the jitted sampler: exact when it does nothing, it lowers the probe loss, it
touches only the conditional CFG half, and its gradient is the activation's, checked by finite differences."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe import hooks
from jaxprobe.diffusion import sampling
from jaxprobe.models import load_pipeline
from jaxprobe.probing import probes, saved
from jaxprobe.scene import capture, intervene
from jaxprobe.scene.tasks import DEPTH, SALIENCY
from jaxprobe.testing import random_linear_probes

PROMPTS = ["a red ball", "a blue cube"]
STEPS = 3


@pytest.fixture(scope="module")
def setup(tiny_dir):
    pipe = load_pipeline(tiny_dir)
    layers = hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS)[-2:]  # two up-block layers, in forward order
    probe_set = saved.SavedProbes("trained", SALIENCY, "linear",
                                  random_linear_probes(pipe, layers, [0], np.random.default_rng(0)))
    target = np.zeros((2, 16, 16), bool)
    target[:, 4:12, 8:16] = True  # the object moved to the right half
    stacked, active = intervene.edit_inputs(probe_set, layers, [0], STEPS)
    return pipe, layers, {"probes": stacked, "active": active, "target": jnp.asarray(target)}


@dataclasses.dataclass(frozen=True)
class KeepPrediction(intervene.EditHook):
    def step(self, *args):
        pred, _ = super().step(*args)
        return pred, pred


def _sample(pipe, hook, extra, **kw):
    return sampling.sample(pipe, PROMPTS, num_inference_steps=STEPS, seed=3, hook=hook, extra=extra, **kw)


def test_zero_iterations_reproduce_the_plain_sample_bit_for_bit(setup):
    pipe, layers, extra = setup
    plain = _sample(pipe, sampling.PLAIN, None)
    # KeepPrediction runs EditHook.step unchanged (it only keeps the prediction) and this exact call is the
    # zero-iteration reference of the next test: one compilation serves both (EditHook itself at 0 iterations is
    # checked bit for bit against the plain sample in the slow tier's random-direction test).
    edited = _sample(pipe, KeepPrediction(layers, SALIENCY, iterations=0), extra, keep_steps=(0,))
    np.testing.assert_array_equal(edited.images, plain.images)
    np.testing.assert_array_equal(np.asarray(edited.latents), np.asarray(plain.latents))


def test_the_edit_changes_only_the_conditional_half_and_no_weight(setup):
    pipe, layers, extra = setup
    before = jax.tree.map(np.array, pipe.params)
    zero = _sample(pipe, KeepPrediction(layers, SALIENCY, iterations=0), extra, keep_steps=(0,)).kept["aux"]
    edit = _sample(pipe, KeepPrediction(layers, SALIENCY, iterations=16, lr=0.05), extra, keep_steps=(0,))
    got = np.asarray(edit.kept["aux"][:, 0])
    ref = np.asarray(zero[:, 0])
    b = len(PROMPTS)
    np.testing.assert_array_equal(got[:b], ref[:b])  # unconditional half: untouched
    assert np.abs(got[b:] - ref[b:]).max() > 1e-3  # conditional half: edited
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, pipe.params), before)


@pytest.mark.parametrize("task", [SALIENCY, DEPTH])
def test_the_probe_loss_falls_over_the_iterations(task):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.float32)
    params = {"kernel": jnp.asarray(rng.normal(size=(8, 2 if task == SALIENCY else 1)), jnp.float32)}
    labels = rng.random((2, 8, 8)) < 0.5 if task == SALIENCY else rng.normal(size=(2, 8, 8)).astype(np.float32)
    target = probes.prepare_targets(labels, (4, 4), task)
    losses = [float(probes.probe_loss(params, intervene.optimise_activation(params, x, target, task, lr=0.05,
                                                                         iterations=n), target, task).sum())
              for n in (0, 10, 40)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.5 * losses[0]


def test_the_edit_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 2, 2, 3))
    params = {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    target = probes.prepare_targets(rng.random((1, 4, 4)) < 0.5, (2, 2), SALIENCY)

    def loss(a):
        return float(probes.probe_loss(params, jnp.asarray(a, jnp.float32), target, SALIENCY).sum())

    grad = np.asarray(jax.grad(lambda a: probes.probe_loss(params, a, target, SALIENCY).sum())(
        jnp.asarray(x, jnp.float32)))
    eps = 1e-2
    for index in [(0, 0, 0, 0), (0, 1, 0, 2), (0, 1, 1, 1)]:
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        assert grad[index] == pytest.approx((loss(up) - loss(down)) / (2 * eps), rel=1e-2, abs=1e-4)


def test_an_edit_without_a_probe_names_the_probes_there_are(setup):
    pipe, layers, _ = setup
    probe_set = saved.SavedProbes("trained", SALIENCY, "linear", {(layers[0], 0): {"kernel": np.zeros((4, 2))}})
    with pytest.raises(ValueError, match=r"no saved saliency probe for \(layer, step\).* at steps \[0\]"):
        intervene.edit_inputs(probe_set, layers[:1], [0, 1], STEPS)


def test_shifts_follow_the_papers_range_at_any_size():
    shifts = intervene.draw_shifts(2000, 64, seed=0)
    size = np.abs(shifts)
    assert size.min() >= round(90 / 512 * 64) and size.max() < round(120 / 512 * 64)
    assert {1, -1} <= set(np.sign(shifts[:, 0])) and {1, -1} <= set(np.sign(shifts[:, 1]))
    np.testing.assert_array_equal(shifts, intervene.draw_shifts(2000, 64, seed=0))
    with pytest.raises(ValueError, match="gives no shifts"):
        intervene.draw_shifts(1, 4, seed=0)


def test_a_translated_mask_moves_and_fills_background():
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 2:4, 1:3] = True
    moved = intervene.translate_mask(mask, 3, -2)
    expected = np.zeros_like(mask)
    expected[0, 0:2, 4:6] = True
    np.testing.assert_array_equal(moved, expected)
    assert not intervene.translate_mask(mask, 7, 0).any()  # moved out of the frame


def test_shifted_depth_copies_the_edge_and_spans_the_range():
    depth = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = intervene.shift_depth(depth, 1, 0, value_range=(0.0, 1.0))
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(out[0, :, 0], out[0, :, 1])  # the vacated column copies the last valid one
    np.testing.assert_allclose(out[0, :, 1:], (depth[0, :, :3] - 0) / 14)  # moved right by one, then min-max


def test_a_user_target_is_read_from_npy_or_png_and_checked(tmp_path):
    from PIL import Image
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    np.save(tmp_path / "t.npy", mask)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "t.png")
    np.testing.assert_array_equal(intervene.load_target(tmp_path / "t.npy", (8, 8)), mask)
    np.testing.assert_array_equal(intervene.load_target(tmp_path / "t.png", (8, 8)), mask)
    with pytest.raises(ValueError, match=r"has shape \(8, 8\); the labels are \(16, 16\)"):
        intervene.load_target(tmp_path / "t.npy", (16, 16))
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        intervene.load_target(tmp_path / "nan.npy", (8, 8))


def test_the_random_direction_control_has_the_edits_norm_per_image():
    like = jax.random.normal(jax.random.key(1), (3, 4, 4, 8)) * jnp.array([1.0, 0.0, 3.0])[:, None, None, None]
    moved = intervene._equal_norm(jax.random.normal(jax.random.key(2), like.shape), like)
    norm = lambda v: np.linalg.norm(np.asarray(v).reshape(3, -1), axis=1)
    np.testing.assert_allclose(norm(moved), norm(like), rtol=1e-5)
    assert abs(float(jnp.vdot(moved[0], like[0]))) < 0.5 * float(norm(like)[0] ** 2)  # not the edit's direction


@pytest.mark.slow  # three compilations of the edit program
def test_the_random_direction_control_samples_differ_from_the_edit_and_stay_plain_at_norm_zero(setup):
    pipe, layers, extra = setup
    extra = {**extra, "key": jax.random.key(0)}
    plain = np.asarray(_sample(pipe, sampling.PLAIN, None).latents)
    still = _sample(pipe, intervene.EditHook(layers, SALIENCY, iterations=0, random_direction=True), extra).latents
    np.testing.assert_array_equal(np.asarray(still), plain)  # an edit of norm 0 stays exactly a plain sample
    hook = functools.partial(intervene.EditHook, layers, SALIENCY, iterations=16, lr=0.05)
    edit, rand = (_sample(pipe, hook(random_direction=r), extra).latents for r in (False, True))
    assert not np.allclose(np.asarray(rand), np.asarray(edit)) and not np.allclose(np.asarray(rand), plain)
