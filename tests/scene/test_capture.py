"""Capture from one sampling pass, its baselines and the on-disk store, against diffusers PyTorch hooks and direct
Flax applies. One capture_sweep (all steps, randomized + both VAE baselines) serves most tests: compilation
dominates."""
import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from tiny_sd import build_torch_pipeline

from jaxprobe import hooks
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.models import convert, load_pipeline
from jaxprobe.probing import store
from jaxprobe.scene import baselines, capture

PROMPTS = ["a red sphere", "two blue cubes on a floor"]
STEPS = 4
RANDOM_SEED = 7
B = len(PROMPTS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_sd")
    torch_pipe = build_torch_pipeline(directory)  # LMS, as capture's default
    torch_pipe.set_progress_bar_config(disable=True)
    return torch_pipe, load_pipeline(directory)


@pytest.fixture(scope="module")
def noise():
    return sampling.initial_noise([3, 4], (8, 8, 4))


@dataclasses.dataclass(frozen=True)
class InputsHook(sampling.Hook):
    """The plain UNet call, also keeping its inputs (lat_in, t, context), x_t and x0 at every step."""

    keep_latents = ("xt", "x0")

    def step(self, unet, params, extra, lat_in, t, context, i, b):
        return unet.apply({"params": params}, lat_in, t, context), (lat_in, t, context)


@pytest.fixture(scope="module")
def reference(tiny, noise):
    """The plain sampler with a hook that records what the UNet was given: {'aux': inputs [B', S, ...], 'xt': [S, B,
    ...], 'x0': [S, B, ...]}."""
    out = sampling.sample(tiny[1], PROMPTS, num_inference_steps=STEPS, latents=noise, hook=InputsHook(),
                          keep_steps=None)
    aux = tuple(np.swapaxes(np.asarray(a), 0, 1) for a in out.kept["aux"])  # [S, B', ...]
    return dataclasses.replace(out, kept={"aux": aux, **{k: np.swapaxes(np.asarray(out.kept[k]), 0, 1)
                                                         for k in ("xt", "x0")}})


SWEEP = dict(num_inference_steps=STEPS, randomized_seed=RANDOM_SEED, vae_baselines=("vae", "vae_x0"))


@pytest.fixture(scope="module")
def sweep(tiny, noise):
    return capture.capture_sweep(tiny[1], PROMPTS, latents=noise, **SWEEP)


@functools.partial(jax.jit, static_argnums=0, static_argnames="method")
def _apply(module, params, *args, method=None):
    """One plain jitted apply -> (output, {path: every recorded submodule output}), independent of capture.py."""
    out, state = module.apply({"params": params}, *args, method=method, capture_intermediates=True,
                              mutable=["intermediates"])
    flat = traverse_util.flatten_dict(state["intermediates"])
    return out, {"/".join(k[:-1]): v[0] for k, v in flat.items() if k[-1] == "__call__"}


def test_capture_leaves_the_sample_unchanged(reference, sweep):
    np.testing.assert_allclose(np.asarray(sweep.latents), np.asarray(reference.latents), atol=1e-5, rtol=0)
    assert np.abs(sweep.images.astype(int) - reference.images.astype(int)).max() <= 1


def _np_pool(a, k):
    """[..., h, w, C] -> [..., h/k, w/k, C], the mean of each k x k block."""
    *lead, h, w, c = a.shape
    return np.asarray(a, np.float64).reshape(*lead, h // k, k, w // k, k, c).mean(axis=(-4, -2))


def test_pooled_capture_is_the_average_pool_of_the_unpooled_one(tiny, noise, sweep):
    """config.store_pool (the rest of its tests are in test_store_pool.py): here, to compare against this module's
    unpooled `sweep` instead of compiling a second unpooled sweep of its own (compilation dominates)."""
    pooled = capture.capture_sweep(tiny[1], PROMPTS, num_inference_steps=STEPS, latents=noise,
                                   vae_baselines=("vae", "vae_x0"), store_pool=2)
    for kind in ("acts", "vae", "vae_x0"):
        a, b = getattr(sweep, kind), getattr(pooled, kind)
        assert a.keys() == b.keys() and a
        for layer in a:
            assert b[layer].shape[:2] == (B, STEPS)
            np.testing.assert_allclose(np.asarray(b[layer]), _np_pool(a[layer], 2), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{kind} {layer}")
    np.testing.assert_array_equal(pooled.images, sweep.images)  # pooling only touches what is stored


def test_kept_bytes_are_what_a_capture_returns_and_the_latents_it_decodes(tiny, sweep):
    """The memory estimate's 'a batch's activations' (`jobs.check_memory`), from shapes only."""
    request = capture.CaptureRequest(sampling.Settings(num_inference_steps=STEPS), **{
        k: v for k, v in SWEEP.items() if k != "num_inference_steps"})
    returned = sum(a.nbytes for kind in (sweep.acts, sweep.randomized, sweep.vae, sweep.vae_x0) for a in kind.values())
    latents = 2 * STEPS * np.asarray(sweep.latents).nbytes  # x_t and x0 at every step, for the two VAE baselines
    assert capture.kept_bytes(tiny[1], request, B) == returned + latents
    smaller = capture.kept_bytes(tiny[1], request.override(store_pool=2, store_dtype=jnp.bfloat16), B)
    assert smaller == returned // 8 + latents  # pooled 2x2 and half the bytes; the latents are kept as sampled


def test_attn1_outputs_match_diffusers_forward_hooks(tiny, noise, sweep):
    torch_pipe, pipe = tiny
    recorded, handles = {}, []
    for name, module in torch_pipe.unet.named_modules():
        if name.endswith("attn1.to_out.0"):
            path = "/".join(convert.torch_key_to_path(name))
            recorded[path] = []
            handles.append(module.register_forward_hook(
                lambda m, args, out, key=path: recorded[key].append(out[out.shape[0] // 2:].numpy())))
    try:
        with torch.no_grad():
            torch_pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, output_type="latent",
                       latents=torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy()))
    finally:
        for h in handles:
            h.remove()
    assert set(recorded) == set(sweep.acts) == set(hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS))
    assert len(recorded) == 6
    for path, per_step in recorded.items():
        ours = np.asarray(sweep.acts[path])
        assert ours.shape[:2] == (B, STEPS) and len(per_step) == STEPS
        theirs = np.stack(per_step, axis=1).reshape(ours.shape)  # [B, S, h*w, C], row-major tokens
        assert np.abs(theirs).max() > 0.1  # the tolerance below is meaningful
        np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0, err_msg=path)


@pytest.mark.slow  # fast tier <= 5 min on 2 cores: closeness and train-mode checks run in the slow tier
def test_selected_steps_are_those_of_the_full_capture_in_bf16(tiny, noise, sweep):
    images, acts = capture.capture_activations(tiny[1], PROMPTS, num_inference_steps=STEPS, latents=noise,
                                               steps=[0, 2, -1], store_dtype=jnp.bfloat16)
    np.testing.assert_array_equal(images, sweep.images)
    for path, full in sweep.acts.items():
        assert acts[path].dtype == jnp.bfloat16
        want = np.asarray(full)[:, [0, 2, STEPS - 1]]
        assert acts[path].shape == want.shape
        # bf16 keeps 8 significant bits: relative rounding error <= 2**-9.
        np.testing.assert_allclose(np.asarray(acts[path], np.float32), want, rtol=2 ** -8, atol=1e-30)


def _vae_layer(pipe, latents):
    """The VAE baseline layer when decoding UNet-space latents, by a plain apply."""
    vae = pipe.vae
    return np.asarray(_apply(vae, pipe.params["vae"], latents / vae.config.scaling_factor,
                             method="decode")[1][baselines.VAE_LAYER])


def test_encoded_mode_equals_a_direct_unet_apply_and_vae_decodes(tiny, sweep):
    """The UNet's layers, and both VAE baselines: 'vae' decodes the noised latent x_t = add_noise(clean, eps, k) the
    UNet reads (before scale_model_input), 'vae_x0' the x0 that LMS predicts from the UNet's output there."""
    pipe = tiny[1]
    images, steps = sweep.images, [3, 1]
    out = capture.encode_and_capture(pipe, images, PROMPTS, steps=steps, seed=[5, 6], num_inference_steps=STEPS,
                                     vae_baselines=("vae", "vae_x0"))
    (mean, _), _ = _apply(pipe.vae, pipe.params["vae"], images / 255.0 * 2 - 1, method="encode")
    clean = mean * pipe.vae.config.scaling_factor
    eps = sampling.initial_noise([5, 6], clean.shape[1:])
    context, _ = _apply(pipe.text_encoder, pipe.params["text_encoder"], pipe.tokenize(PROMPTS))
    sched = schedulers.get_scheduler("lms", pipe.scheduler_config)
    plan = sched.set_timesteps(STEPS)
    assert set(out.vae) == set(out.vae_x0) == {baselines.VAE_LAYER}
    for s, k in enumerate(steps):
        xt = sched.add_noise(plan, clean, eps, k)
        pred, direct = _apply(pipe.unet, pipe.params["unet"], sched.scale_model_input(plan, xt, k),
                              jnp.full((B,), plan.timesteps[k]), context)
        for path, got in out.acts.items():
            assert got.shape[:2] == (B, len(steps))
            np.testing.assert_allclose(np.asarray(got[:, s]), np.asarray(direct[path]).reshape(got[:, s].shape),
                                       atol=1e-5, rtol=1e-5, err_msg=f"{path} step {k}")
        x0 = xt - plan.sigmas[k] * pred  # LMS, epsilon prediction
        for name, latent in (("vae", xt), ("vae_x0", x0)):
            got = np.asarray(getattr(out, name)[baselines.VAE_LAYER][:, s])
            np.testing.assert_allclose(got, _vae_layer(pipe, latent), atol=1e-5, rtol=1e-5, err_msg=f"{name} {k}")
    assert not np.allclose(np.asarray(out.vae[baselines.VAE_LAYER]), np.asarray(out.vae_x0[baselines.VAE_LAYER]),
                           atol=1e-2)


def test_encoded_randomized_baseline_is_the_permuted_unet_on_the_same_inputs(tiny, sweep):
    """A request with a randomized_seed captures, from the same encoded inputs, the trained UNet's layers and those
    of a pipeline whose UNet weights are permuted (`baselines.randomize_params`)."""
    pipe = tiny[1]
    kw = dict(steps=[3, 1], seed=[5, 6], num_inference_steps=STEPS)
    out = capture.encode_and_capture(pipe, sweep.images, PROMPTS, randomized_seed=RANDOM_SEED, **kw)
    permuted = dataclasses.replace(pipe, params={**pipe.params, "unet": baselines.randomize_params(
        pipe.params["unet"], RANDOM_SEED)})
    trained = capture.capture_encoded(pipe, sweep.images, PROMPTS, **kw)
    randomized = capture.capture_encoded(permuted, sweep.images, PROMPTS, **kw)
    assert out.acts.keys() == trained.keys() == randomized.keys() == out.randomized.keys() and trained
    for path in trained:
        np.testing.assert_array_equal(np.asarray(out.acts[path]), np.asarray(trained[path]), err_msg=path)
        np.testing.assert_array_equal(np.asarray(out.randomized[path]), np.asarray(randomized[path]), err_msg=path)
        assert not np.allclose(np.asarray(out.acts[path]), np.asarray(out.randomized[path]), atol=1e-2)


def test_randomized_params_are_per_tensor_permutations(tiny):
    params = tiny[1].params["unet"]
    flat = traverse_util.flatten_dict(params)
    rand = traverse_util.flatten_dict(baselines.randomize_params(params, RANDOM_SEED))
    again = traverse_util.flatten_dict(baselines.randomize_params(params, RANDOM_SEED))
    moved = 0
    for k, v in flat.items():
        v, r = np.asarray(v), np.asarray(rand[k])
        assert r.shape == v.shape and r.dtype == v.dtype
        np.testing.assert_array_equal(r, np.asarray(again[k]))  # reproducible from the seed
        if k[-1] == "bias":
            np.testing.assert_array_equal(r, v)
            continue
        np.testing.assert_array_equal(np.sort(r, axis=None), np.sort(v, axis=None))  # same multiset
        if np.unique(v).size > 1:  # all-equal tensors (fresh norm scales) look the same whatever the order
            assert not np.array_equal(r, v), k
            moved += 1
    assert moved > 100


def test_randomized_baseline_runs_on_the_trained_inputs(tiny, reference, sweep):
    pipe = tiny[1]
    rand = baselines.randomize_params(pipe.params["unet"], RANDOM_SEED)
    lat_in, t, context = (np.asarray(a)[:, B:] for a in reference.kept["aux"])  # conditional half, [S, B, ...]
    for s in range(STEPS):
        for name, params, got in (("trained", pipe.params["unet"], sweep.acts),
                                  ("randomized", rand, sweep.randomized)):
            _, direct = _apply(pipe.unet, params, lat_in[s], t[s], context[s])
            for path, a in got.items():
                np.testing.assert_allclose(np.asarray(a[:, s]), np.asarray(direct[path]).reshape(a[:, s].shape),
                                           atol=1e-4, rtol=1e-4, err_msg=f"{name} {path} step {s}")
    for path in sweep.acts:
        assert not np.allclose(np.asarray(sweep.acts[path]), np.asarray(sweep.randomized[path]), atol=1e-2)


def test_vae_x0_baseline_decodes_each_steps_predicted_x0(tiny, reference, sweep):
    vae = tiny[1].vae
    got = sweep.vae_x0[baselines.VAE_LAYER]
    assert set(sweep.vae_x0) == {baselines.VAE_LAYER}
    assert got.shape == (B, STEPS, 8, 8, vae.config.block_out_channels[-1])  # decoder mid block: latent grid
    for s in range(STEPS):
        np.testing.assert_allclose(np.asarray(got[:, s]), _vae_layer(tiny[1], reference.kept["x0"][s]), atol=1e-4,
                                   rtol=1e-4)


def test_vae_baseline_decodes_the_latent_entering_each_step(tiny, noise, reference, sweep):
    """The paper's VAE baseline at step k decodes x_t, the scheduler's latent the UNet reads at step k: the
    conditional UNet input of step k times sqrt(sigma_k^2 + 1) (LMS's scale_model_input undone); at step 0, the
    initial noise."""
    pipe = tiny[1]
    plan = schedulers.get_scheduler("lms", pipe.scheduler_config).set_timesteps(STEPS)
    lat_in = reference.kept["aux"][0][:, B:]  # [S, B, h, w, c]
    got = sweep.vae[baselines.VAE_LAYER]
    assert set(sweep.vae) == {baselines.VAE_LAYER} and got.shape == sweep.vae_x0[baselines.VAE_LAYER].shape
    np.testing.assert_allclose(reference.kept["xt"][0], np.asarray(noise) * plan.init_noise_sigma, rtol=1e-6)
    for s in range(STEPS):
        xt = reference.kept["xt"][s]
        np.testing.assert_allclose(lat_in[s] * np.sqrt(plan.sigmas[s] ** 2 + 1), xt, atol=1e-5 * np.abs(xt).max())
        # Two programs (the sampler's scan, a direct decode) round apart; activations reach |a| ~ 100, where float32's
        # spacing is 7.6e-6: within 1e-5 plus 1e-5 relative.
        np.testing.assert_allclose(np.asarray(got[:, s]), _vae_layer(pipe, xt), atol=1e-5, rtol=1e-5, err_msg=s)


def test_vae_baseline_at_step_0_does_not_see_the_prompt(tiny, noise, sweep):
    """Step 0's x_t is the initial noise, so the paper's VAE baseline is the same whatever the prompt (a probe on it
    is at chance), while the predicted x0 already carries the UNet's reading of the prompt."""
    other = capture.capture_sweep(tiny[1], ["a green cone", "an empty floor"], latents=noise, **SWEEP)
    a, b = ({name: np.asarray(getattr(r, name)[baselines.VAE_LAYER]) for name in ("vae", "vae_x0")}
            for r in (sweep, other))
    np.testing.assert_array_equal(a["vae"][:, 0], b["vae"][:, 0])
    assert not np.allclose(a["vae_x0"][:, 0], b["vae_x0"][:, 0], atol=1e-2)
    assert not np.allclose(a["vae"][:, 1], b["vae"][:, 1], atol=1e-2)  # from step 1 on, x_t follows the prompt


@pytest.mark.slow  # kill-and-resume
def test_store_resumes_after_a_kill_and_reads_back_exactly(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    layer = "down_blocks_0/attentions_0/transformer_blocks_0/attn1/to_out_0"
    chunks = [{layer: rng.normal(size=(n, 2, 4, 4, 8)).astype(np.float32),
               "vae/x": jnp.asarray(rng.normal(size=(n, 3)), jnp.bfloat16),
               "images": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)} for n in (3, 2, 4)]
    st = store.ActivationStore(tmp_path / "acts")
    for i in (0, 1):
        st.write_chunk(i, chunks[i], meta={"prompts": PROMPTS[: i + 1]})

    saved = np.save

    def killed_midway(path, arr, **kw):  # the run dies after writing one file of chunk 2
        if "chunk_000002" in str(path) and any(p.suffix == ".npy" for p in path.parent.iterdir()):
            raise KeyboardInterrupt
        saved(path, arr, **kw)

    monkeypatch.setattr(np, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        st.write_chunk(2, chunks[2])
    monkeypatch.setattr(np, "save", saved)

    st = store.ActivationStore(tmp_path / "acts")  # a restarted run
    assert [st.has_chunk(i) for i in range(3)] == [True, True, False] and st.chunks() == [0, 1]
    assert st.meta() == {0: {"prompts": PROMPTS[:1]}, 1: {"prompts": PROMPTS[:2]}}
    st.write_chunk(2, chunks[2], meta={})
    assert st.chunks() == [0, 1, 2]
    for name in chunks[0]:
        got = st.read(name)
        assert got.dtype == np.asarray(chunks[0][name]).dtype
        np.testing.assert_array_equal(got, np.concatenate([np.asarray(c[name]) for c in chunks]))
    assert json.loads((tmp_path / "acts" / "index.json").read_text())["chunks"]["2"]["rows"] == 4
    with pytest.raises(KeyError, match="images"):
        st.read("nope")
    with pytest.raises(ValueError, match="the store holds float32"):
        st.write_chunk(3, {**chunks[0], layer: chunks[0][layer][..., :4]})


def test_bad_layers_and_steps_raise_clear_errors(tiny):
    pipe = tiny[1]
    with pytest.raises(ValueError, match="nearest valid paths: .*down_blocks_1/attentions_0/transformer_blocks_0/"
                                         "attn1/to_out_0"):
        capture.capture_activations(pipe, PROMPTS, layers="down_blocks_1/attentions_0/transformer_blocks_0/attn1/"
                                                          "to_outt_0")
    with pytest.raises(ValueError, match=r"step 4 is out of range for 4 sampling steps \(0..3\)"):
        capture.capture_activations(pipe, PROMPTS, num_inference_steps=STEPS, steps=[0, STEPS])
    with pytest.raises(ValueError, match="selected twice"):
        capture.capture_sweep(pipe, PROMPTS, num_inference_steps=STEPS, steps=[1, -3])
    with pytest.raises(ValueError, match="uint8"):
        capture.capture_encoded(pipe, np.zeros((2, 16, 16, 3), np.float32), PROMPTS)


def test_non_finite_activations_name_the_layer(tiny, sweep):
    acts = {"a": jnp.ones((2, 3)), "b": jnp.array([1.0, jnp.nan]), "c": jnp.array([jnp.inf])}
    with pytest.raises(ValueError, match=r"at layer\(s\): b, c;"):
        hooks.check_finite(acts)
    hooks.check_finite({"a": jnp.ones(3)})
    # End to end: a NaN weight in the second down attention poisons it and everything after, not the first.
    pipe = tiny[1]
    bad = "down_blocks_1/attentions_1/transformer_blocks_0/attn1/to_out_0"
    flat = traverse_util.flatten_dict(pipe.params["unet"], sep="/")
    flat[f"{bad}/kernel"] = np.array(flat[f"{bad}/kernel"])
    flat[f"{bad}/kernel"][0, 0] = np.nan
    broken = dataclasses.replace(pipe, params={**pipe.params, "unet": traverse_util.unflatten_dict(flat, sep="/")})
    with pytest.raises(ValueError, match=f"non-finite .*at layer\\(s\\): {bad}") as err:
        capture.capture_encoded(broken, sweep.images, PROMPTS, steps=[3, 1], seed=5, num_inference_steps=STEPS)
    assert "down_blocks_1/attentions_0/" not in str(err.value)

