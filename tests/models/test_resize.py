"""Resizing as torch's F.interpolate does (the DPT model and its post-processing rely on it)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprobe.models import resize

SIZES = [((6, 9), (13, 20)), ((32, 32), (45, 30)), ((40, 17), (8, 17))]


def _torch(x: np.ndarray, size, **kwargs) -> np.ndarray:
    out = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=size, **kwargs)
    return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("size_in,size_out", SIZES)
def test_resize_bicubic_is_torchs(size_in, size_out):
    x = np.random.default_rng(0).normal(size=(2, *size_in, 3)).astype(np.float32)
    ref = _torch(x, size_out, mode="bicubic", align_corners=False)
    np.testing.assert_allclose(resize.resize_bicubic(jnp.asarray(x), size_out), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size_in,size_out", SIZES)
def test_resize_bilinear_is_torchs(size_in, size_out, align_corners):
    x = np.random.default_rng(1).normal(size=(2, *size_in, 3)).astype(np.float32)
    ref = _torch(x, size_out, mode="bilinear", align_corners=align_corners)
    # torch computes the source coordinate in float32: ~1e-5 off at some upsampled pixels
    np.testing.assert_allclose(resize.resize_bilinear(jnp.asarray(x), size_out, align_corners), ref, atol=3e-5,
                               rtol=0)
