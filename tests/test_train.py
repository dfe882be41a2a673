"""The training loop resumes after a kill with exactly the loss curve and weights of an uninterrupted run."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

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
    import pytest
    from jaxprobe import toymodels
    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3)).astype(np.uint8)
    crops = toymodels.random_crops(images, 32, seed=(0, 5))
    assert crops.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(crops, toymodels.random_crops(images, 32, seed=(0, 5)))
    offsets = set()
    for im, crop in zip(images, crops):
        hits = [(y, x) for y in range(0, 33, 8) for x in range(0, 33, 8)
                if np.array_equal(im[y:y + 32, x:x + 32], crop)]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 1  # every image gets its own crop
    assert toymodels.random_crops(images, 64, seed=0) is images
    with pytest.raises(ValueError, match="multiple of 8"):
        toymodels.random_crops(images, 30, seed=0)
