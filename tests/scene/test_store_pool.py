"""config.store_pool: captured activations (trained, randomized and VAE baselines, encoded mode) are the k x k
average pool of the unpooled capture, and a store_pool that does not divide every layer's token grid is refused
before any work, naming the valid values."""
import jax.numpy as jnp
import numpy as np
import pytest

from configs.scene import toy_probe
from jaxprobe.models import load_pipeline
from jaxprobe.scene import capture, sweep

PROMPTS = ["a red ball", "two blue cubes"]
STEPS = (0, 2)


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    return load_pipeline(tiny_dir)


def _config(tiny_dir, store_pool):
    """The tiny generated-data sweep of test_sweep_checks.py (16 px, user-supplied labels) with `store_pool`."""
    c = toy_probe.get_config()
    c.pipeline_dir, c.prompts_file = str(tiny_dir), str(tiny_dir / "prompts.txt")
    c.labels_dir = str(tiny_dir / "labels")
    c.resolution, c.num_train, c.num_val, c.num_test, c.batch_size = 16, 4, 0, 4, 3
    c.num_inference_steps, c.steps = 3, (0, 2)
    c.store_pool = store_pool
    return c


def _np_pool(a, k):
    """[..., h, w, C] -> [..., h/k, w/k, C], the mean of each k x k block."""
    *lead, h, w, c = a.shape
    return np.asarray(a, np.float64).reshape(*lead, h // k, k, w // k, k, c).mean(axis=(-4, -2))


# test_pooled_capture_is_the_average_pool_of_the_unpooled_one (trained UNet and VAE baseline) lives in
# test_capture.py, against that module's unpooled sweep: a second unpooled sweep here cost one more compilation.


def test_encoded_capture_pools_before_the_cast(pipe):
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    # one early layer: XLA drops the rest of the UNet, so the two programs compile in seconds
    kw = dict(layers=("down_blocks_1/attentions_0/*attn1/to_out_0",), steps=STEPS, num_inference_steps=3, seed=[5, 6])
    full = capture.capture_encoded(pipe, images, PROMPTS, **kw)
    pooled = capture.capture_encoded(pipe, images, PROMPTS, store_pool=4, store_dtype=jnp.bfloat16, **kw)
    assert len(full) == 1
    for layer, a in full.items():
        assert pooled[layer].dtype == jnp.bfloat16 and pooled[layer].shape[2:4] == (1, 1)
        want = _np_pool(a, 4)
        np.testing.assert_allclose(np.asarray(pooled[layer], np.float32), want, rtol=2 ** -7,
                                   atol=2 ** -7 * np.abs(want).max())


def test_token_grids(pipe):
    grids = capture.token_grids(pipe, capture.hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS), 32, 32)
    assert grids and set(grids.values()) == {(8, 8)}  # the tiny UNet's attn1 layers all sit at latent / 2


@pytest.mark.parametrize("pool", [0, 3, 8, -2])
def test_store_pool_that_does_not_divide_every_grid_is_refused(tiny_dir, pipe, pool):
    c = _config(tiny_dir, pool)  # 16 px: every attn1 layer has a 4x4 grid
    with pytest.raises(ValueError, match=r"config.store_pool must be an integer >= 1 that divides every selected "
                                         r"layer's token grid at config.resolution=16 \(the smallest: 4x4 at .*\); "
                                         rf"valid values: 1, 2, 4; got {pool}"):
        sweep.check_config(c, pipe)


def test_store_pool_that_divides_every_grid_passes(tiny_dir, pipe):
    assert sweep.check_config(_config(tiny_dir, 4), pipe)[1] == (0, 2)
