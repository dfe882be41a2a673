"""AutoencoderKL (Stable Diffusion's VAE) in Flax linen, NHWC, with diffusers' parameter names.

`encode(x [B, H, W, 3] in [-1, 1]) -> (mean, logvar) [B, H/f, W/f, latent_channels]` and
`decode(z) -> [B, H, W, 3]`, with f = 2 ** (len(block_out_channels) - 1). Latents are *unscaled*: multiply by
`config.scaling_factor` before the UNet, as diffusers does. The paper's VAE baseline probes
`decoder/mid_block/attentions_0` (diffusers' `decoder.mid_block.attentions.0`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models import layers
from jaxprobe.models.config import Config

EPS = 1e-6  # every norm of diffusers' VAE


@dataclasses.dataclass(frozen=True)
class VAEConfig(Config):
    """The config.json fields of diffusers' AutoencoderKL (same names and defaults)."""

    EXPORT = {"_class_name": "AutoencoderKL"}
    SUPPORTED = {"act_fn": ("silu",), "use_quant_conv": (True,), "use_post_quant_conv": (True,),
                 "mid_block_add_attention": (True,)}

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 32
    scaling_factor: float = 0.18215
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    force_upcast: bool = True  # SDXL's pipeline decodes in fp32 where this is set; SD v1/v2's ignore it

    def __post_init__(self):
        n = len(self.block_out_channels)
        for name, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            if tuple(getattr(self, name)) != (kind,) * n:
                raise ValueError(f"VAEConfig.{name}={list(getattr(self, name))}: only {n} x {kind} is supported")

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class MidBlock(nn.Module):
    """UNetMidBlock2D without time embedding: resnet, single-head attention with residual, resnet."""

    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        ch = x.shape[-1]
        x = layers.ResnetBlock2D(ch, self.groups, EPS, dtype=self.dtype, name="resnets_0")(x)
        x = layers.Attention(1, ch, qkv_bias=True, norm_groups=self.groups, eps=EPS, residual_connection=True,
                             dtype=self.dtype, name="attentions_0")(x)
        return layers.ResnetBlock2D(ch, self.groups, EPS, dtype=self.dtype, name="resnets_1")(x)


class ResampleBlock(nn.Module):
    """DownEncoderBlock2D (resnets then a padded stride-2 conv) or UpDecoderBlock2D (resnets then upsample)."""

    out_channels: int
    num_layers: int
    groups: int
    up: bool
    resample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = layers.ResnetBlock2D(self.out_channels, self.groups, EPS, dtype=self.dtype, name=f"resnets_{i}")(x)
        if self.resample and self.up:
            x = layers.Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x)
        elif self.resample:
            x = layers.Downsample2D(self.out_channels, padding=0, dtype=self.dtype, name="downsamplers_0")(x)
        return x


class Encoder(nn.Module):
    """x [B, H, W, in_channels] -> moments [B, H/f, W/f, 2 * latent_channels]."""

    config: VAEConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = layers.conv(c.block_out_channels[0], 3, dtype=self.dtype, name="conv_in")(x)
        for i, ch in enumerate(c.block_out_channels):
            x = ResampleBlock(ch, c.layers_per_block, c.norm_num_groups, up=False,
                              resample=i < len(c.block_out_channels) - 1, dtype=self.dtype, name=f"down_blocks_{i}")(x)
        x = MidBlock(c.norm_num_groups, dtype=self.dtype, name="mid_block")(x)
        x = nn.silu(layers.group_norm(c.norm_num_groups, EPS, self.dtype, "conv_norm_out")(x))
        return layers.conv(2 * c.latent_channels, 3, dtype=self.dtype, name="conv_out")(x)


class Decoder(nn.Module):
    """z [B, h, w, latent_channels] -> [B, h*f, w*f, out_channels]."""

    config: VAEConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        c = self.config
        chans = tuple(reversed(c.block_out_channels))
        x = layers.conv(chans[0], 3, dtype=self.dtype, name="conv_in")(z)
        x = MidBlock(c.norm_num_groups, dtype=self.dtype, name="mid_block")(x)
        for i, ch in enumerate(chans):
            x = ResampleBlock(ch, c.layers_per_block + 1, c.norm_num_groups, up=True, resample=i < len(chans) - 1,
                              dtype=self.dtype, name=f"up_blocks_{i}")(x)
        x = nn.silu(layers.group_norm(c.norm_num_groups, EPS, self.dtype, "conv_norm_out")(x))
        return layers.conv(c.out_channels, 3, dtype=self.dtype, name="conv_out")(x)


class AutoencoderKL(nn.Module):
    """The KL autoencoder. `__call__(x)` reconstructs through the posterior mean (diffusers' default)."""

    config: VAEConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = Encoder(c, dtype=self.dtype)
        self.decoder = Decoder(c, dtype=self.dtype)
        self.quant_conv = layers.conv(2 * c.latent_channels, 1, dtype=self.dtype)
        self.post_quant_conv = layers.conv(c.latent_channels, 1, dtype=self.dtype)

    def dummy_inputs(self) -> tuple:
        s = self.config.sample_size
        return (jnp.zeros((1, s, s, self.config.in_channels), jnp.float32),)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, H, W, C] in [-1, 1] -> (mean, logvar), each [B, H/f, W/f, latent_channels]; logvar clipped as
        diffusers' DiagonalGaussianDistribution does."""
        _check_size(x.shape, self.config.downscale)
        moments = self.quant_conv(self.encoder(x.astype(self.dtype)))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents [B, h, w, latent_channels] -> images [B, h*f, w*f, out_channels] (about [-1, 1])."""
        return self.decoder(self.post_quant_conv(z.astype(self.dtype)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x)[0])


def _check_size(shape, factor: int) -> None:
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(f"VAE input {shape[1]}x{shape[2]} is not a multiple of the VAE factor {factor}")
