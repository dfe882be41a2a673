"""Building blocks shared by the UNet and the VAE, equal to diffusers' (names, defaults and arithmetic).

All tensors are NHWC (images) or [B, T, C] (token sequences). Modules compute in `dtype` and keep float32 params,
so `module.clone(dtype=jnp.bfloat16)` is bf16 inference with the same checkpoint. Dropout is omitted: jaxprobe
trains its own models without it and the reference models are used in eval mode.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe import kernels

Dtype = Any


def conv(features: int, kernel: int, *, stride: int = 1, padding: int | None = None, dtype: Dtype = jnp.float32,
         name: str | None = None) -> nn.Conv:
    """A PyTorch-style Conv2d on NHWC: symmetric `padding` (default kernel // 2), float32 params."""
    p = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)), dtype=dtype,
                   name=name)


def group_norm(groups: int, eps: float, dtype: Dtype, name: str | None = None) -> nn.GroupNorm:
    # Two-pass variance: the fast E[x^2]-E[x]^2 form drifts from PyTorch by more than 1e-4 on large activations.
    return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def layer_norm(eps: float, dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def timestep_embedding(timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0) -> jax.Array:
    """diffusers' `get_timestep_embedding`: timesteps [B] -> float32 [B, dim] sinusoids."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = jnp.asarray(timesteps, jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)],
                          axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2 on the sinusoidal embedding."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, emb: jax.Array) -> jax.Array:
        emb = nn.Dense(self.features, dtype=self.dtype, name="linear_1")(emb)
        return nn.Dense(self.features, dtype=self.dtype, name="linear_2")(nn.silu(emb))


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the (projected) time embedding; a 1x1 shortcut when channels change.

    x [B, H, W, Cin], temb [B, Ct] or None -> [B, H, W, out_channels].
    """

    out_channels: int
    groups: int = 32
    eps: float = 1e-5
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm1")(x))
        h = conv(self.out_channels, 3, dtype=self.dtype, name="conv1")(h)
        if temb is not None:
            t = nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm2")(h))
        h = conv(self.out_channels, 3, dtype=self.dtype, name="conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, dtype=self.dtype, name="conv_shortcut")(x)
        return (x + h) / self.output_scale_factor


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv. padding=0 is the VAE's variant, which pads only bottom/right by one first."""

    out_channels: int
    padding: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(self.out_channels, 3, stride=2, padding=self.padding, dtype=self.dtype, name="conv")(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    out_channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(self.out_channels, 3, dtype=self.dtype, name="conv")(x)


# The fp32 scores one chunk of `attention`'s queries may make on a backend that chunks them (kernels.py).
ATTENTION_CHUNK_BYTES = 1 << 28


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """`jax.nn.dot_product_attention` of q [B, T, H, D] with k, v [B, S, H, D] -> [B, T, H, D]. Where the kernel
    choice is 'cpu_query_chunks' and the scores [B, H, T, S] would exceed `ATTENTION_CHUNK_BYTES`, the queries run
    in the fewest equal chunks under it (`lax.map`), so a call holds one chunk's scores instead of all: SD v1's
    64x64-token layers make 1 GiB per image with CFG at 512x512."""
    b, t, h, _ = q.shape
    scores = b * h * t * k.shape[1] * 4  # bytes, as fp32 (the softmax's dtype)
    chunks = 1
    if kernels.choose("attention") == "cpu_query_chunks":
        fewest = min(scores // (ATTENTION_CHUNK_BYTES + 1) + 1, t)  # the least n with scores // n <= the limit
        chunks = next(n for n in range(fewest, t + 1) if t % n == 0)  # n = t, one query per chunk, at the most
    if chunks == 1:
        return jax.nn.dot_product_attention(q, k, v)
    parts = jnp.moveaxis(q.reshape(b, chunks, t // chunks, *q.shape[2:]), 1, 0)
    out = jax.lax.map(lambda part: jax.nn.dot_product_attention(part, k, v), parts)
    return jnp.moveaxis(out, 0, 1).reshape(b, t, h, v.shape[-1])


class Attention(nn.Module):
    """diffusers' `Attention`: multi-head (cross-)attention through `attention` (`jax.nn.dot_product_attention`).

    x [B, T, C] (or [B, H, W, C], flattened to tokens and back), context [B, S, D] or None (self-attention)
    -> same shape as x. `to_out_0` is the projection before any residual add (the paper's probe site).
    With `norm_groups`, a GroupNorm comes first and the input is added back (the VAE's mid-block attention).
    """

    heads: int
    dim_head: int
    qkv_bias: bool = False
    norm_groups: int | None = None
    eps: float = 1e-5
    residual_connection: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        residual, shape = x, x.shape
        if self.norm_groups is not None:
            x = group_norm(self.norm_groups, self.eps, self.dtype, "group_norm")(x)
        x = x.reshape(shape[0], -1, shape[-1])
        context = x if context is None else context
        inner = self.heads * self.dim_head

        def project(name, y):
            y = nn.Dense(inner, use_bias=self.qkv_bias, dtype=self.dtype, name=name)(y)
            return y.reshape(y.shape[:2] + (self.heads, self.dim_head))

        q, k, v = project("to_q", x), project("to_k", context), project("to_v", context)
        out = attention(q, k, v).reshape(x.shape[:2] + (inner,))
        out = nn.Dense(shape[-1], dtype=self.dtype, name="to_out_0")(out).reshape(shape)
        return out + residual if self.residual_connection else out
