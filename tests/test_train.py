"""The training loop resumes after a kill with exactly the loss curve and weights of an uninterrupted run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprobe import train


def _problem():
    w_true = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)

    def batch_fn(step):
        x = np.random.default_rng(step).normal(size=(16, 8)).astype(np.float32)
        return x, x @ w_true

    def loss_fn(params, batch, key):
        x, y = batch
        noise = 0.01 * jax.random.normal(key, y.shape)  # uses the per-step key: resume must reproduce it
        loss = jnp.mean((x @ params["w"] - y + noise) ** 2)
        return loss, {"w_norm": jnp.linalg.norm(params["w"])}

    return {"w": jnp.zeros((8, 2))}, loss_fn, batch_fn


def _fit(workdir, **kw):
    params, loss_fn, batch_fn = _problem()
    return train.fit(workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn,
                     optimizer=optax.adamw(0.1), num_steps=30, checkpoint_every=10, ema_decay=0.9, **kw)


@pytest.mark.slow  # kill-and-resume
def test_resume_after_kill_is_bit_identical(tmp_path):
    full, full_hist = _fit(tmp_path / "full")
    _fit(tmp_path / "killed", stop_after=17)  # checkpoints at 10 and at the kill (17)
    resumed, resumed_hist = _fit(tmp_path / "killed")
    assert [h["loss"] for h in resumed_hist] == [h["loss"] for h in full_hist]
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_training_reduces_loss_and_ema_lags(tmp_path):
    state, hist = _fit(tmp_path / "run")
    assert hist[-1]["loss"] < 0.1 * hist[0]["loss"]
    assert not np.allclose(state.params["w"], state.ema_params["w"])


def test_vae_random_crops_are_aligned_windows_fixed_by_the_seed():
    from jaxprobe.toy import data
    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3)).astype(np.uint8)
    crops = data.random_crops(images, 32, seed=(0, 5))
    assert crops.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(crops, data.random_crops(images, 32, seed=(0, 5)))
    offsets = set()
    for im, crop in zip(images, crops):
        hits = [(y, x) for y in range(0, 33, 8) for x in range(0, 33, 8)
                if np.array_equal(im[y:y + 32, x:x + 32], crop)]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 1  # every image gets its own crop
    assert data.random_crops(images, 64, seed=0) is images
    with pytest.raises(ValueError, match="multiple of 8"):
        data.random_crops(images, 30, seed=0)


_TWO_DEVICES = """
import json, pathlib, sys
sys.path.insert(0, sys.argv[1])
import jax, numpy as np, pytest
import test_train
from jaxprobe import train
assert len(jax.local_devices()) == 2, jax.local_devices()
work = pathlib.Path(sys.argv[2])
full, hist = test_train._fit(work / "full")
test_train._fit(work / "killed", stop_after=17)
resumed, resumed_hist = test_train._fit(work / "killed")
with pytest.raises(ValueError, match="multiple of 2"):
    train.fit(workdir=work / "odd", params=full.params, loss_fn=None, batch_fn=lambda s: np.zeros((15, 1)),
              optimizer=None, num_steps=1)
print(json.dumps({"loss": [h["loss"] for h in hist], "resumed_loss": [h["loss"] for h in resumed_hist],
                  "resumed_equal": all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full),
                                                                             jax.tree.leaves(resumed)))}))
"""


@pytest.mark.slow  # multi-device
def test_data_parallel_on_two_devices_matches_one_and_resumes_exactly(tmp_path):
    """`fit` splits each batch over the local devices: on 2 CPU devices the loss curve equals the 1-device one
    (up to the all-reduce's summation order), and a killed run still resumes bit-identically."""
    env = {**os.environ, "XLA_FLAGS": train.host_device_flags("--xla_cpu_enable_fast_math=false", cores=2),
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(Path(__file__).parent), str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True)
    two = json.loads(out.stdout.strip().splitlines()[-1])
    _, one_hist = _fit(tmp_path / "one")
    np.testing.assert_allclose(two["loss"], [h["loss"] for h in one_hist], rtol=1e-5)
    assert two["resumed_loss"] == two["loss"] and two["resumed_equal"]


def test_a_workdir_refuses_to_resume_with_another_config(tmp_path):
    from jaxprobe import io
    config = {"lr": 2e-3, "num_steps": 100, "block_out_channels": (32, 64)}
    io.claim_workdir(tmp_path, config, kind="training run", may_change=("num_steps",))
    (tmp_path / "metrics.csv").write_text("step,loss\n")  # work: from now on the workdir is this config's
    io.claim_workdir(tmp_path, config, kind="training run", may_change=("num_steps",))  # a plain resume
    io.claim_workdir(tmp_path, {**config, "num_steps": 300}, kind="training run", may_change=("num_steps",))
    with pytest.raises(ValueError, match=r"differs in: block_out_channels, lr\)"):
        io.claim_workdir(tmp_path, {**config, "lr": 1e-3, "block_out_channels": (32, 32)}, kind="training run",
                         may_change=("num_steps",))
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 300  # the longer schedule is now the record


@pytest.mark.slow  # kill-and-resume
def test_toy_ldm_run_killed_mid_way_resumes_with_the_same_loss_curve(tmp_path, monkeypatch):
    """The whole LDM path (render, encode, tokenizer, UNet + text encoder, Min-SNR loss, logit-normal timesteps,
    two optimizers), tiny: a run killed after 2 of 4 steps resumes to the uninterrupted run's losses and weights."""
    import functools
    import shutil

    from configs.toy import ldm as toy_ldm
    from configs.toy import vae as toy_vae
    from jaxprobe import io
    from jaxprobe.models import tokenizer, vae
    from jaxprobe.toy import recipes
    from jaxprobe.toy.world import captions

    c = toy_ldm.get_config()
    c.update(resolution=32, num_images=16, block_out_channels=(8, 8, 8, 8), norm_num_groups=4, text_width=16,
             text_layers=1, batch_size=8, num_steps=4, checkpoint_every=2, eval_every=0, quality_images=0)
    vc = toy_vae.get_config()
    vc.update(resolution=32, block_out_channels=(8, 8, 8), norm_num_groups=4)
    vae_model = vae.AutoencoderKL(recipes.vae_config(vc))
    vae_params = vae_model.init(jax.random.key(0), *vae_model.dummy_inputs())["params"]

    # One tokenizer for both runs (the BPE trainer may number tokens differently per build; a workdir keeps its own).
    tokenizer.build_word_tokenizer(captions.vocabulary(), tmp_path / "full" / "tokenizer", max_length=c.max_length)
    shutil.copytree(tmp_path / "full" / "tokenizer", tmp_path / "killed" / "tokenizer")
    full = recipes.train_ldm(c, tmp_path / "full", vae_model, vae_params)
    fit = train.fit
    monkeypatch.setattr(train, "fit", functools.partial(fit, stop_after=2))
    recipes.train_ldm(c, tmp_path / "killed", vae_model, vae_params)
    monkeypatch.setattr(train, "fit", fit)
    resumed = recipes.train_ldm(c, tmp_path / "killed", vae_model, vae_params)

    losses = [[r["loss"] for r in io.read_csv(tmp_path / d / "metrics.csv")] for d in ("full", "killed")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    for part in ("unet", "text_encoder"):
        for a, b in zip(jax.tree.leaves(full.params[part]), jax.tree.leaves(resumed.params[part])):
            assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # a training run of the VAE recipe's two phases (~25 s)
def test_toy_vae_decoder_phase_trains_the_decoder_and_leaves_the_encoder_bit_identical(tmp_path):
    """`decoder_steps` fine-tunes the decoder on posterior means after the VAE run; the encoder (so every latent an
    LDM was trained on) must not move by one bit, and the decoder's reconstruction of the means must improve."""
    from configs.toy import vae as toy_vae
    from jaxprobe.toy import data, recipes

    c = toy_vae.get_config()
    c.update(resolution=32, num_images=16, num_eval=4, block_out_channels=(8, 8, 8), norm_num_groups=4, crop_size=16,
             batch_size=8, num_steps=4, checkpoint_every=4, eval_every=0, decoder_steps=0)
    model, before = recipes.train_vae(c, tmp_path)
    c.update(decoder_steps=6, decoder_lr=1e-2)
    _, after = recipes.train_vae(c, tmp_path)  # the VAE run resumes finished; then the decoder phase

    for side in ("encoder", "quant_conv"):
        for a, b in zip(jax.tree.leaves(before[side]), jax.tree.leaves(after[side])):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(before["decoder"]), jax.tree.leaves(after["decoder"])))
    x = data.to_unit(data.scene_data(tmp_path, num_images=16, resolution=32)["rgb"])
    loss = recipes.decoder_loss_fn(model)
    assert float(loss(after, x, None)[0]) < float(loss(before, x, None)[0])
