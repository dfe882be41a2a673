"""The edit's modes: each leaves the activation bit for bit where it has nothing to do, a local edit stays in its
region, the closed form is read as the target and is the smallest such change, early stopping stops, and a
relative step scales with the activation. Unit-level on random arrays and a one-layer stand-in for the UNet; one
slow test samples the tiny pipeline."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprobe.probing import probes
from jaxprobe.scene import edit_modes, intervene
from jaxprobe.scene.tasks import DEPTH, SALIENCY

B, H, W, C = 3, 4, 4, 8  # token grid and width; labels are 2x the grid


def _arrays(seed, task=SALIENCY, bias=False):
    """x [B, H, W, C], a random linear (or affine) probe, labels [B, 2H, 2W] and a region [B, 2H, 2W]."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32)
    params = {"kernel": jnp.asarray(rng.normal(size=(C, task.outputs)), jnp.float32)}
    if bias:
        params["bias"] = jnp.asarray(rng.normal(size=(task.outputs,)), jnp.float32)
    labels = (rng.random((B, 2 * H, 2 * W)) < 0.5 if task == SALIENCY
              else rng.normal(size=(B, 2 * H, 2 * W)).astype(np.float32))
    region = np.zeros((B, 2 * H, 2 * W), bool)
    region[:, 2:5, 1:6] = True
    return x, params, labels, region


@functools.partial(jax.jit, static_argnames=("task", "iterations", "relative", "stop_loss", "lr"))
def _adam(params, x, labels, region, *, task=SALIENCY, iterations=20, relative=False, stop_loss=None, lr=0.05):
    target = probes.prepare_targets(labels, x.shape[1:3], task)
    tokens = None if region is None else edit_modes.token_region(region, x.shape[1:3])
    return intervene.optimise_activation(params, x, target, task, lr=lr, iterations=iterations, relative=relative,
                                         stop_loss=stop_loss, region=tokens)


def _loss(params, x, labels, task=SALIENCY):
    return np.asarray(probes.probe_loss(params, x, probes.prepare_targets(labels, x.shape[1:3], task), task))


@pytest.mark.parametrize("options", [{}, {"relative": True}, {"stop_loss": 0.1}, {"local": True},
                                     {"relative": True, "stop_loss": 0.1, "local": True}])
def test_adam_modes_at_zero_iterations_leave_the_activation_bit_for_bit(options):
    x, params, labels, region = _arrays(0)
    options = dict(options)
    local = options.pop("local", False)
    out = _adam(params, x, labels, region if local else None, iterations=0, **options)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


@pytest.mark.parametrize("bias", [False, True])
def test_min_norm_leaves_tokens_that_already_read_the_target_bit_for_bit(bias):
    x, params, _, _ = _arrays(1, bias=bias)
    read = probes.predict(params, x, (2 * H, 2 * W))
    out = edit_modes.min_norm_edit(params, x, read, SALIENCY, margin=0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    # a margin every token already has: nothing moves either
    z = probes.apply_probe(params, x)
    margin = float(jnp.min(jnp.abs(z[..., 1] - z[..., 0])))
    np.testing.assert_array_equal(np.asarray(edit_modes.min_norm_edit(params, x, read, SALIENCY, margin=margin)),
                                  np.asarray(x))


@pytest.mark.parametrize("bias", [False, True])
def test_min_norm_is_read_as_the_target_with_the_margin(bias):
    x, params, labels, _ = _arrays(2, bias=bias)
    out = edit_modes.min_norm_edit(params, x, labels, SALIENCY, margin=1.0)
    want = probes.prepare_targets(labels, (H, W), SALIENCY, "downsample")[..., 1] > 0.5
    np.testing.assert_array_equal(np.asarray(probes.predict(params, out)), np.asarray(want))
    z = probes.apply_probe(params, out)
    sign = np.where(want, 1.0, -1.0)
    assert (sign * np.asarray(z[..., 1] - z[..., 0]) >= 1.0 - 1e-4).all()


@pytest.mark.parametrize("bias", [False, True])
def test_min_norm_dense_reads_the_block_mean(bias):
    x, params, labels, _ = _arrays(3, task=DEPTH, bias=bias)
    out = edit_modes.min_norm_edit(params, x, labels, DEPTH)
    want = probes.prepare_targets(labels, (H, W), DEPTH, "downsample")[..., 0]
    np.testing.assert_allclose(np.asarray(probes.apply_probe(params, out)[..., 0]), np.asarray(want), atol=1e-4)


def test_min_norm_is_the_smallest_change_that_meets_the_margin():
    """Against an Adam solve of min |d|^2 + rho * relu(margin - s z(x + d))^2 per token, which knows nothing of
    the closed form: it may not find a smaller feasible change."""
    x, params, labels, _ = _arrays(4, bias=True)
    margin, rho = 1.0, 1e4
    closed = np.asarray(edit_modes.min_norm_edit(params, x, labels, SALIENCY, margin=margin) - x)
    sign = 2.0 * probes.prepare_targets(labels, (H, W), SALIENCY, "downsample")[..., 1] - 1.0

    def objective(d):
        z = probes.apply_probe(params, x + d)
        violation = jax.nn.relu(margin - sign * (z[..., 1] - z[..., 0]))
        return jnp.sum(jnp.square(d)) + rho * jnp.sum(jnp.square(violation))

    opt = optax.adam(1e-2)

    @jax.jit
    def solve(d):
        def body(carry, _):
            d, state = carry
            updates, state = opt.update(jax.grad(objective)(d), state, d)
            return (optax.apply_updates(d, updates), state), None
        return jax.lax.scan(body, (d, opt.init(d)), None, length=3000)[0][0]

    d = solve(0.1 * jax.random.normal(jax.random.key(0), x.shape))
    z = probes.apply_probe(params, x + d)
    assert (np.asarray(sign * (z[..., 1] - z[..., 0])) >= margin - 1e-2).all()  # the solve is (nearly) feasible
    solved, exact = np.linalg.norm(np.asarray(d), axis=-1), np.linalg.norm(closed, axis=-1)
    assert (exact <= solved + 1e-3).all()
    assert (exact > 0).any() and (exact == 0).any()  # some tokens had to move, some already read the target


def test_min_norm_refuses_an_mlp_probe_and_adam_only_options():
    mlp = probes.init_probe(jax.random.key(0), "mlp", SALIENCY, C, hidden=4)
    x, _, labels, _ = _arrays(5)
    with pytest.raises(ValueError, match="mlp probe has no single direction"):
        edit_modes.min_norm_edit(mlp, x, labels, SALIENCY)
    with pytest.raises(ValueError, match="relative and stop_loss apply to mode 'adam'"):
        intervene.EditHook(("proj",), SALIENCY, mode="min_norm", stop_loss=0.1)
    with pytest.raises(ValueError, match="unknown edit mode 'newton'; valid choices: adam, min_norm"):
        intervene.EditHook(("proj",), SALIENCY, mode="newton")


def test_a_local_edit_changes_no_token_outside_its_region():
    x, params, labels, region = _arrays(6)
    tokens = np.asarray(edit_modes.token_region(region, (H, W)))
    for out in (_adam(params, x, labels, region), edit_modes.min_norm_edit(params, x, labels, SALIENCY,
                                                                              region=jnp.asarray(tokens))):
        out = np.asarray(out)
        np.testing.assert_array_equal(out[~tokens], np.asarray(x)[~tokens])
        assert np.abs(out[tokens] - np.asarray(x)[tokens]).max() > 1e-2


def test_a_token_is_in_the_region_if_any_of_its_label_pixels_is():
    region = np.zeros((1, 8, 8), bool)
    region[0, 3, 4] = True  # one pixel of token (1, 2)
    tokens = np.zeros((1, 4, 4), bool)
    tokens[0, 1, 2] = True
    np.testing.assert_array_equal(np.asarray(edit_modes.token_region(region, (4, 4))), tokens)


def test_the_edit_region_is_the_dilated_union_of_source_and_target_per_image():
    source, target = np.zeros((2, 8, 8), bool), np.zeros((2, 8, 8), bool)
    source[0, 1, 1], target[0, 6, 6] = True, True
    region = edit_modes.edit_region(source, target, 1)
    want = np.zeros_like(region)
    want[0, 0:3, 0:3], want[0, 5:8, 5:8] = True, True
    np.testing.assert_array_equal(region, want)  # image 1 has no object: nothing leaks in from image 0
    np.testing.assert_array_equal(edit_modes.edit_region(source, target, 0), source | target)


def test_early_stop_leaves_a_finished_image_alone_and_stops_the_others():
    x, params, labels, _ = _arrays(7)
    read = np.asarray(probes.predict(params, x, (2 * H, 2 * W)))
    labels = np.repeat(np.repeat(labels[:, ::2, ::2], 2, 1), 2, 2)  # one class per token: the CE can reach ~0
    labels[0] = read[0]  # image 0 already reads its target; scaled up, its loss is near 0
    x = x.at[0].multiply(20.0)
    before = _loss(params, x, labels)
    stop = 0.5 * float(before[1:].min())
    assert before[0] <= stop
    stopped = _adam(params, x, labels, None, iterations=60, stop_loss=stop)
    np.testing.assert_array_equal(np.asarray(stopped[0]), np.asarray(x[0]))
    after, further = _loss(params, stopped, labels), _loss(params, _adam(params, x, labels, None, iterations=60), labels)
    assert (after[1:] <= stop).all() and (after[1:] < before[1:]).all()
    assert (further[1:] < after[1:]).all()  # without the threshold they would have gone on


def test_a_relative_step_scales_with_the_activation():
    """x with kernel k and 2x with kernel k/2 give the probe the same logits and Adam the same (scale-free)
    steps (up to Adam's eps, which matters once gradients are tiny: few iterations): a relative edit of 2x changes
    it twice as much, while a plain edit's first step is as large on both."""
    x, params, labels, _ = _arrays(8)
    params = {"kernel": params["kernel"] / 5}  # logits ~0.5: no gradient small enough for eps to matter
    half = {"kernel": params["kernel"] / 2}
    for relative, factor, n in ((True, 2.0, 5), (False, 1.0, 1)):
        small = np.asarray(_adam(params, x, labels, None, iterations=n, relative=relative) - x)
        large = np.asarray(_adam(half, 2 * x, labels, None, iterations=n, relative=relative) - 2 * x)
        np.testing.assert_allclose(large, factor * small, rtol=1e-3, atol=1e-5)


def test_change_sums_split_by_the_region_and_give_the_ratios():
    rng = np.random.default_rng(9)
    before, after = rng.normal(size=(2, B, H, W, C)).astype(np.float32)
    tokens = rng.random((B, H, W)) < 0.5
    sums = edit_modes.change_sums(jnp.asarray(before), jnp.asarray(after), jnp.asarray(tokens))
    d, a = np.sum((after - before) ** 2, -1), np.sum(before ** 2, -1)
    np.testing.assert_allclose(sums["delta_sq_in"], (d * tokens).sum((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(sums["act_sq_out"], (a * ~tokens).sum((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(sums["delta_sq"], sums["delta_sq_in"] + sums["delta_sq_out"], rtol=1e-5)
    ratios = edit_modes.change_ratios({k: jnp.stack([v, v], 1) for k, v in sums.items()})  # two kept steps
    np.testing.assert_allclose(ratios["in"], np.sqrt((d * tokens).sum((1, 2)) / (a * tokens).sum((1, 2))),
                               rtol=1e-5)
    plain = edit_modes.change_sums(jnp.asarray(before), jnp.asarray(after), None)
    assert set(plain) == set(edit_modes.SUM_KEYS) and np.isnan(plain["delta_sq_in"]).all()
    assert np.isnan(edit_modes.change_ratios(plain)["out"]).all()


class OneLayer(nn.Module):
    """A stand-in for the UNet: one token layer 'proj' whose output is the prediction, so the prediction's
    conditional half is the (edited) activation."""

    @nn.compact
    def __call__(self, lat, t, context):
        tokens = lat.reshape(lat.shape[0], -1, lat.shape[-1])
        return nn.Dense(lat.shape[-1], name="proj")(tokens).reshape(lat.shape)


@functools.partial(jax.jit, static_argnames=("hook", "i"))
def _hook_step(hook, params, extra, lat, i):
    return hook.step(OneLayer(), params, extra, lat, jnp.zeros(len(lat)), None, i, B)


@pytest.fixture(scope="module")
def one_layer():
    rng = np.random.default_rng(10)
    lat = jnp.asarray(rng.normal(size=(2 * B, H, W, C)), jnp.float32)
    params = OneLayer().init(jax.random.key(0), lat, None, None)["params"]
    _, probe, labels, region = _arrays(11)
    extra = {"probes": {"proj": jax.tree.map(lambda p: jnp.stack([p, 0 * p]), probe)},
             "active": jnp.array([True, False]), "target": jnp.asarray(labels), "region": jnp.asarray(region),
             "key": jax.random.key(1, impl="rbg")}  # threefry compiles ~5 s slower on CPU
    plain = OneLayer().apply({"params": params}, lat, None, None)
    return params, extra, lat, plain, np.asarray(edit_modes.token_region(region, (H, W)))


@pytest.mark.parametrize("hook", [
    intervene.EditHook(("proj",), SALIENCY, iterations=8, lr=0.05, relative=True, local=True, stop_loss=0.2),
    intervene.EditHook(("proj",), SALIENCY, mode="min_norm", local=True, random_direction=True)],
    ids=["adam", "min_norm_random"])
def test_the_hook_edits_the_conditional_half_in_the_region_and_reports_the_change(one_layer, hook):
    params, extra, lat, plain, tokens = one_layer
    pred, aux = _hook_step(hook, params, extra, lat, 0)
    pred, plain = np.asarray(pred), np.asarray(plain)
    np.testing.assert_array_equal(pred[:B], plain[:B])  # unconditional half
    np.testing.assert_array_equal(pred[B:][~tokens], plain[B:][~tokens])  # outside the region
    expected = edit_modes.change_sums(plain[B:], pred[B:], tokens)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5), dict(aux), dict(expected))
    assert float(aux["delta_sq_out"].sum()) == 0 and float(aux["delta_sq_in"].min()) > 0
    # a step not marked active: the plain prediction and zero sums
    still, none = _hook_step(hook, params, extra, lat, 1)
    np.testing.assert_array_equal(np.asarray(still), plain)
    assert all(float(np.abs(v).sum()) == 0 for v in none.values())


def test_a_scaled_random_control_moves_the_activation_that_many_times_the_edits_norm(one_layer):
    params, extra, lat, _, _ = one_layer
    sums = {scale: _hook_step(intervene.EditHook(("proj",), SALIENCY, mode="min_norm", random_direction=True,
                                                 random_scale=scale), params, extra, lat, 0)[1]["delta_sq"]
            for scale in (1.0, 2.5)}
    assert float(sums[1.0].min()) > 0
    np.testing.assert_allclose(np.asarray(sums[2.5]), 2.5 ** 2 * np.asarray(sums[1.0]), rtol=1e-4)


def test_uncond_too_adds_the_conditional_halfs_change_to_the_unconditional_half(one_layer):
    params, extra, lat, plain, _ = one_layer
    hook = intervene.EditHook(("proj",), SALIENCY, mode="min_norm", uncond_too=True)
    pred = np.asarray(_hook_step(hook, params, extra, lat, 0)[0])
    delta = pred[B:] - np.asarray(plain)[B:]
    assert np.abs(delta).max() > 0
    np.testing.assert_allclose(pred[:B] - np.asarray(plain)[:B], delta, atol=1e-5)


def test_a_held_background_is_the_reference_outside_the_region_and_the_edit_inside(one_layer):
    _, extra, _, _, tokens = one_layer
    rng = np.random.default_rng(12)
    lat = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32)
    reference = jnp.asarray(rng.normal(size=(B, 2, H, W, C)), jnp.float32)
    hold = intervene.EditHook(("proj",), SALIENCY, hold_background=True)
    for i in (0, 1):
        held = np.asarray(hold.after_step({**extra, "reference": reference}, lat, i))
        np.testing.assert_array_equal(held[tokens], np.asarray(lat)[tokens])
        np.testing.assert_array_equal(held[~tokens], np.asarray(reference[:, i])[~tokens])
    assert intervene.EditHook(("proj",), SALIENCY).after_step(extra, lat, 0) is lat
    with pytest.raises(ValueError, match="holding the background needs extra\\['reference'\\]"):
        hold.step(OneLayer(), None, extra, lat, None, None, 0, B)


@pytest.mark.slow  # two compilations of the tiny pipeline's sampler (plain and edit): ~35 s here
def test_an_edit_every_image_has_already_met_stops_at_once_and_samples_the_plain_image(tiny_dir):
    from jaxprobe import hooks
    from jaxprobe.diffusion import sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.probing import saved
    from jaxprobe.scene import capture
    from jaxprobe.testing import random_linear_probes

    pipe = load_pipeline(tiny_dir)
    layers = hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS)[-2:]
    probe_set = saved.SavedProbes("trained", SALIENCY, "linear",
                                  random_linear_probes(pipe, layers, [0], np.random.default_rng(0)))
    stacked, active = intervene.edit_inputs(probe_set, layers, [0], 3)
    region = np.zeros((2, 16, 16), bool)
    region[:, 4:12, 2:14] = True
    extra = {"probes": stacked, "active": active, "target": jnp.asarray(region), "region": jnp.asarray(region)}
    sample = functools.partial(sampling.sample, pipe, ["a red ball", "a blue cube"], num_inference_steps=3, seed=3)
    hook = intervene.EditHook(layers, SALIENCY, iterations=8, lr=0.05, relative=True, local=True, stop_loss=1e9)
    edited = sample(hook=hook, extra=extra, keep_steps=None)
    np.testing.assert_array_equal(edited.images, sample().images)
    aux = {k: np.asarray(v) for k, v in edited.kept["aux"].items()}  # [B, steps]
    assert (aux["delta_sq"] == 0).all() and (aux["act_sq"][:, 0] > 0).all() and (aux["act_sq"][:, 1:] == 0).all()
    np.testing.assert_allclose(aux["act_sq_in"] + aux["act_sq_out"], aux["act_sq"], rtol=1e-5)


@pytest.mark.slow  # three compilations of the tiny pipeline's sampler: ~45 s here
def test_a_held_background_samples_the_plain_latents_outside_the_region(tiny_dir):
    from jaxprobe import hooks
    from jaxprobe.diffusion import sampling
    from jaxprobe.models import load_pipeline
    from jaxprobe.probing import saved
    from jaxprobe.scene import capture
    from jaxprobe.testing import random_linear_probes

    pipe = load_pipeline(tiny_dir)
    layers = hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS)
    probe_set = saved.SavedProbes("trained", SALIENCY, "linear",
                                  random_linear_probes(pipe, layers, [0, 1], np.random.default_rng(0)))
    stacked, active = intervene.edit_inputs(probe_set, layers, [0, 1], 3)
    region = np.zeros((2, 16, 16), bool)
    region[:, 0:8, 4:12] = True
    sample = functools.partial(sampling.sample, pipe, ["a red ball", "a blue cube"], num_inference_steps=3, seed=3)
    plain, kept = sample(), sample(hook=intervene.KEEP_LATENTS, keep_steps=None)
    np.testing.assert_array_equal(kept.images, plain.images)  # keeping the latents changes nothing
    reference = intervene.held_reference(kept)
    np.testing.assert_array_equal(reference[:, -1], np.asarray(plain.latents))
    extra = {"probes": stacked, "active": active, "target": jnp.asarray(~region), "region": jnp.asarray(region),
             "reference": reference}
    edited = sample(hook=intervene.EditHook(layers, SALIENCY, iterations=16, lr=0.5, hold_background=True),
                    extra=extra)
    tokens = np.asarray(edit_modes.token_region(region, edited.latents.shape[1:3]))
    lat, base = np.asarray(edited.latents), np.asarray(plain.latents)
    np.testing.assert_array_equal(lat[~tokens], base[~tokens])
    assert np.abs(lat[tokens] - base[tokens]).max() > 0.1
