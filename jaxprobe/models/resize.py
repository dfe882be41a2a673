"""Resizing exactly as torch's `F.interpolate` does (bilinear, bicubic; no antialias), via static interpolation
matrices: shapes are static under jit, so a resize is two small matmuls along H and W."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def linear_resize_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
    """float32 [size_out, size_in]: torch's 1-D linear interpolation weights (`F.interpolate(..., mode="bilinear",
    size=...)` per axis, no antialias), so `matrix @ x` resizes x along its first axis.

    align_corners=True maps the corner pixels onto each other (src = dst * (in - 1) / (out - 1)); False maps pixel
    centres (src = (dst + 0.5) * in / out - 0.5, clamped at 0), as torch does when given an output size.
    """
    dst = np.arange(size_out, dtype=np.float64)
    if align_corners:
        src = dst * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        src = np.maximum((dst + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix.astype(np.float32)


def cubic_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """float32 [size_out, size_in]: torch's 1-D bicubic weights (`F.interpolate(..., mode="bicubic", size=...,
    align_corners=False)`, no antialias): Keys' kernel with A = -0.75 at src = (dst + 0.5) * in / out - 0.5, taps
    beyond the border clamped to the edge pixel."""
    a = -0.75
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    first = np.floor(src).astype(np.int64)
    frac = src - first
    matrix = np.zeros((size_out, size_in))
    for offset in (-1, 0, 1, 2):
        d = np.abs(frac - offset)
        weight = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
        np.add.at(matrix, (np.arange(size_out), np.clip(first + offset, 0, size_in - 1)), weight)
    return matrix.astype(np.float32)


def _resize(x: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """x [B, H, W, C] -> [B, rows.shape[0], cols.shape[0], C] by the row and column interpolation matrices."""
    x = jnp.einsum("oh,bhwc->bowc", jnp.asarray(rows, x.dtype), x, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,bowc->bopc", jnp.asarray(cols, x.dtype), x, precision=jax.lax.Precision.HIGHEST)


def resize_bilinear(x: jax.Array, size: tuple[int, int], align_corners: bool) -> jax.Array:
    """torch bilinear interpolation of NHWC x [B, H, W, C] -> [B, size[0], size[1], C]."""
    return _resize(x, linear_resize_matrix(x.shape[1], size[0], align_corners),
                   linear_resize_matrix(x.shape[2], size[1], align_corners))


def resize_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch bicubic interpolation (align_corners=False) of NHWC x [B, H, W, C] -> [B, size[0], size[1], C]."""
    return _resize(x, cubic_resize_matrix(x.shape[1], size[0]), cubic_resize_matrix(x.shape[2], size[1]))
