"""Toy training data: one `to_unit` for numpy and jitted code, batches fixed by the step, batched model calls."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.toy import data


def test_to_unit_maps_uint8_to_minus_one_one_in_numpy_and_under_jit():
    rgb = np.array([[0, 255, 128]], np.uint8)
    x = data.to_unit(rgb)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_allclose(x, [[-1.0, 1.0, 128 / 127.5 - 1]], atol=1e-6)
    y = jax.jit(data.to_unit)(jnp.asarray(rgb))
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, x, atol=1e-6)  # XLA divides by multiplying with 1 / 127.5


def test_batches_depend_only_on_the_step_and_cover_each_epoch():
    epoch = np.concatenate([data.batch_indices(s, 10, 5, seed=3) for s in range(2)])
    assert sorted(epoch) == list(range(10))
    np.testing.assert_array_equal(data.batch_indices(1, 10, 5, seed=3), data.batch_indices(1, 10, 5, seed=3))
    assert not np.array_equal(data.batch_indices(2, 10, 5, seed=3), data.batch_indices(0, 10, 5, seed=3))


def test_map_batches_equals_one_call_on_everything():
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    fn = jax.jit(lambda b: b * 2 + 1)
    np.testing.assert_array_equal(data.map_batches(fn, x, 3), np.asarray(fn(x)))


def test_scene_data_is_cached_and_read_back_the_same(tmp_path):
    first = data.scene_data(tmp_path, num_images=3, resolution=16, seed_offset=5)
    assert len(list(tmp_path.glob("scenes_*.npz"))) == 1
    again = data.scene_data(tmp_path, num_images=3, resolution=16, seed_offset=5)
    np.testing.assert_array_equal(first["rgb"], again["rgb"])
    assert first["caption"] == again["caption"] and all(isinstance(c, str) for c in again["caption"])
