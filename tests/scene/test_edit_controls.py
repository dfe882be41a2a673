"""The probe-free roll control: each image's token grid rolls by its own shift, rounded to the layer's tokens."""
import jax.numpy as jnp
import numpy as np

from jaxprobe.scene import edit_controls


def test_each_image_rolls_by_its_own_shift_rounded_to_the_grid():
    grid = np.random.default_rng(0).normal(size=(3, 8, 4, 2)).astype(np.float32)  # h=8, w=4
    shift = np.array([[0.5, 0.25], [-0.25, 0.0], [0.0, 0.0]], np.float32)  # (dx, dy): 2 right 2 down, 1 left, none
    got = np.asarray(edit_controls.roll_tokens(jnp.asarray(grid), jnp.asarray(shift)))
    np.testing.assert_array_equal(got[0], np.roll(grid[0], (2, 2), axis=(0, 1)))
    np.testing.assert_array_equal(got[1], np.roll(grid[1], (0, -1), axis=(0, 1)))
    np.testing.assert_array_equal(got[2], grid[2])
    assert got[0, 2, 2, 0] == grid[0, 0, 0, 0]  # what was at the top-left token is now 2 tokens down and right
