"""Bad arguments to `sampling.sample` fail with one line that names the argument and its valid values, before any
compilation (a miss of the jit cache would mean the program was built first, or the error came from inside it)."""
import types

import jax
import jax.numpy as jnp
import pytest

from jaxprobe.diffusion import sampling
from jaxprobe.models import load_pipeline

PROMPTS = ["a large red sphere on a checkered floor", "a small blue cube on a checkered floor"]
CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="float16 runs on accelerators")


@pytest.fixture(scope="module")
def toy():
    return load_pipeline("assets/toy_pipeline")  # VAE factor 4, 4 UNet levels: sizes must be multiples of 32


@pytest.mark.parametrize("kwargs, message", [
    pytest.param({"num_inference_steps": 0}, "num_inference_steps must be >= 1, got 0", id="steps=0"),
    pytest.param({"seed": -1}, "seed -1 is out of range 0..2**32-1", id="seed=-1"),
    pytest.param({"seed": 2 ** 32 - 1}, "seed 4294967296 is out of range 0..2**32-1 (seeds are uint32; image k gets "
                                        "seed + k)", id="seed+k>uint32"),
    pytest.param({"seed": [3, 2 ** 32]}, "seed 4294967296 is out of range 0..2**32-1 (seeds are uint32)",
                 id="seeds>uint32"),
    pytest.param({"dtype": "float8"}, "unknown dtype 'float8'; valid choices: float32, bfloat16, float16",
                 id="dtype=float8"),
    pytest.param({"dtype": jnp.float8_e4m3fn}, "unknown dtype 'float8_e4m3fn'; valid choices: float32, bfloat16, "
                                               "float16", id="dtype=float8_e4m3fn"),
    pytest.param({"dtype": jnp.float16}, "dtype float16 does not run on a CPU", id="dtype=float16", marks=CPU_ONLY),
    pytest.param({"height": 48}, "image size 48x64 is not a multiple of the VAE factor 4 x 8 = 32 (the UNet's 4 "
                                 "levels need a latent divisible by 2**3 = 8)", id="height=48"),
    pytest.param({"height": -64}, "image size -64x64 must be positive", id="height=-64"),
    pytest.param({"guidance_scale": float("nan")}, "guidance_scale must be finite, got nan", id="guidance=nan"),
    pytest.param({"guidance_scale": float("inf")}, "guidance_scale must be finite, got inf", id="guidance=inf"),
])
def test_a_bad_argument_fails_with_one_clear_line_before_any_compile(toy, kwargs, message):
    misses = sampling._compiled.cache_info().misses
    with pytest.raises(ValueError) as e:
        sampling.sample(toy, PROMPTS, **kwargs)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
    assert sampling._compiled.cache_info().misses == misses


def test_the_sampler_refuses_a_wrong_layout_when_it_traces_not_inside_the_unet():
    plan = types.SimpleNamespace(timesteps=jnp.zeros(3))
    latents = jnp.zeros((2, 4, 4, 4))
    with pytest.raises(AssertionError, match="axis"):  # CFG doubles the batch: the context needs 2 x 2 rows
        sampling.denoise(None, plan, None, None, latents, jnp.zeros((2, 5, 8)), guidance_scale=7.5)
    with pytest.raises(AssertionError, match="rank"):  # NCHW-style 3-d latents
        sampling.denoise(None, plan, None, None, latents[0], jnp.zeros((4, 5, 8)), guidance_scale=7.5)
