"""UNet2DConditionModel (Stable Diffusion v1/v2/XL UNet) in Flax linen, NHWC, with diffusers' parameter names.

Module paths mirror diffusers (`down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_out_0` is diffusers'
`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0`), so layers are picked by the names people
know, and `capture_intermediates` records each module's output under that path. Everything is driven by the
component's config.json, from the tiny test configs to SD v1-4 (859,520,964 parameters) and SDXL, whose
`addition_embed_type="text_time"` conditions on a `TextTimeConditioning` instead of a plain context array.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models import layers
from jaxprobe.models.config import Config

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
TIME_IDS = 6  # SDXL's micro-conditioning per image: original size (h, w), crop top-left (y, x), target size (h, w)


@dataclasses.dataclass(frozen=True)
class UNetConfig(Config):
    """The config.json fields of diffusers' UNet2DConditionModel that SD v1/v2/XL use (same names and defaults).

    `transformer_layers_per_block` is one int, one per block, or one tuple per block (one depth per resnet layer);
    up blocks take `reverse_transformer_layers_per_block`, or else the reversed per-block depths, as diffusers.
    """

    EXPORT = {"_class_name": "UNet2DConditionModel"}
    SUPPORTED = {
        "act_fn": ("silu",), "mid_block_type": ("UNetMidBlock2DCrossAttn",), "only_cross_attention": (False,),
        "dual_cross_attention": (False,), "class_embed_type": (None,), "addition_embed_type": (None, "text_time"),
        "resnet_time_scale_shift": ("default",), "time_embedding_type": ("positional",),
        "conv_in_kernel": (3,), "conv_out_kernel": (3,), "encoder_hid_dim": (None,),
    }

    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    only_cross_attention: bool = False
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int | tuple[int, ...] = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 1280
    transformer_layers_per_block: int | tuple = 1
    reverse_transformer_layers_per_block: tuple | None = None
    encoder_hid_dim: int | None = None
    # diffusers' historical naming: `attention_head_dim` holds the number of heads unless num_attention_heads is set.
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    dual_cross_attention: bool = False
    use_linear_projection: bool = False
    class_embed_type: str | None = None
    addition_embed_type: str | None = None
    addition_time_embed_dim: int | None = None
    projection_class_embeddings_input_dim: int | None = None
    upcast_attention: bool = False
    resnet_time_scale_shift: str = "default"
    time_embedding_type: str = "positional"
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3

    def __post_init__(self):
        n = len(self.block_out_channels)
        for name, types, valid in (("down_block_types", self.down_block_types, DOWN_BLOCKS),
                                   ("up_block_types", self.up_block_types, UP_BLOCKS)):
            bad = [t for t in types if t not in valid]
            if bad or len(types) != n:
                raise ValueError(f"UNetConfig.{name}={list(types)}: need {n} blocks (one per block_out_channels) "
                                 f"of {', '.join(valid)}")
        if self.addition_embed_type == "text_time" and None in (self.addition_time_embed_dim,
                                                                self.projection_class_embeddings_input_dim):
            raise ValueError("UNetConfig: addition_embed_type='text_time' needs addition_time_embed_dim and "
                             "projection_class_embeddings_input_dim")

    def per_block(self, name: str) -> tuple:
        """An int-or-per-block field as one value per down block."""
        value = getattr(self, name)
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * len(self.block_out_channels)

    @property
    def heads(self) -> tuple[int, ...]:
        return self.per_block("num_attention_heads" if self.num_attention_heads is not None else "attention_head_dim")

    @property
    def up_transformer_layers(self) -> tuple:
        """Each up block's transformer depth(s), in up-block order."""
        if self.reverse_transformer_layers_per_block is not None:
            return tuple(self.reverse_transformer_layers_per_block)
        return self.per_block("transformer_layers_per_block")[::-1]


class TextTimeConditioning(NamedTuple):
    """SDXL's conditioning (`addition_embed_type="text_time"`): the two text encoders' penultimate hidden states
    concatenated [B, T, cross_attention_dim], the second encoder's projected pooled output `text_embeds` [B, P] and
    `time_ids` [B, 6] (original height, width, crop top, left, target height, width), as diffusers'
    `added_cond_kwargs`. A pytree, so the sampler, CFG and hooks carry it as they carry a plain context array."""

    encoder_hidden_states: jax.Array
    text_embeds: jax.Array
    time_ids: jax.Array


class BasicTransformerBlock(nn.Module):
    """Self-attention (attn1), cross-attention on the text (attn2), GEGLU feed-forward; pre-LayerNorm residuals."""

    dim: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """x [B, T, dim], context [B, S, D] -> [B, T, dim]."""
        def attention(name):
            return layers.Attention(self.heads, self.dim // self.heads, dtype=self.dtype, name=name)

        x = x + attention("attn1")(layers.layer_norm(1e-5, self.dtype, "norm1")(x))
        x = x + attention("attn2")(layers.layer_norm(1e-5, self.dtype, "norm2")(x), context)
        return x + FeedForward(self.dim, dtype=self.dtype, name="ff")(layers.layer_norm(1e-5, self.dtype, "norm3")(x))


class GEGLU(nn.Module):
    """proj to 2 x inner, then value * gelu(gate) (exact erf GELU)."""

    inner: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        value, gate = jnp.split(nn.Dense(2 * self.inner, dtype=self.dtype, name="proj")(x), 2, axis=-1)
        return value * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """diffusers' FeedForward: net.0 = GEGLU(dim -> 4 dim), net.1 = dropout (omitted), net.2 = Linear(4 dim -> dim)."""

    dim: int
    mult: int = 4
    dtype: Any = jnp.float32

    def setup(self):
        self.net_0 = GEGLU(self.dim * self.mult, dtype=self.dtype)
        self.net_2 = nn.Dense(self.dim, dtype=self.dtype)

    def __call__(self, x):
        return self.net_2(self.net_0(x))


class Transformer2DModel(nn.Module):
    """GroupNorm, proj_in (1x1 conv, or linear for SD2), transformer blocks over the H*W tokens, proj_out, residual.

    x [B, H, W, C], context [B, S, D] -> [B, H, W, C].
    """

    heads: int
    num_layers: int
    groups: int
    use_linear_projection: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = layers.group_norm(self.groups, 1e-6, self.dtype, "norm")(x)

        def proj(name, y):
            if self.use_linear_projection:
                return nn.Dense(c, dtype=self.dtype, name=name)(y)
            return layers.conv(c, 1, dtype=self.dtype, name=name)(y)

        if self.use_linear_projection:
            y = proj("proj_in", y.reshape(b, h * w, c))
        else:
            y = proj("proj_in", y).reshape(b, h * w, c)
        for i in range(self.num_layers):
            y = BasicTransformerBlock(c, self.heads, dtype=self.dtype, name=f"transformer_blocks_{i}")(y, context)
        if self.use_linear_projection:
            y = proj("proj_out", y).reshape(b, h, w, c)
        else:
            y = proj("proj_out", y.reshape(b, h, w, c))
        return y + x


class UNetBlock(nn.Module):
    """One down or up block (CrossAttn* or plain), named resnets_i / attentions_i / {down,up}samplers_0.

    Down: returns (x, skips) with one skip per layer plus one after downsampling. Up: consumes `skips` from the end
    (concatenated on channels before each resnet) and returns (x, remaining skips).
    """

    config: UNetConfig
    out_channels: int
    num_layers: int
    heads: int
    transformer_layers: int | tuple[int, ...]  # one depth for every layer, or one per layer
    cross_attention: bool
    up: bool
    resample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb, context, skips):
        c = self.config
        depths = _depths(self.transformer_layers, self.num_layers)
        outputs = []
        for i in range(self.num_layers):
            if self.up:
                x = jnp.concatenate([x, skips[-1]], axis=-1)
                skips = skips[:-1]
            x = layers.ResnetBlock2D(self.out_channels, c.norm_num_groups, c.norm_eps, dtype=self.dtype,
                                     name=f"resnets_{i}")(x, temb)
            if self.cross_attention:
                x = Transformer2DModel(self.heads, depths[i], c.norm_num_groups,
                                       c.use_linear_projection, dtype=self.dtype, name=f"attentions_{i}")(x, context)
            outputs.append(x)
        if self.resample and self.up:
            x = layers.Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x)
        elif self.resample:
            x = layers.Downsample2D(self.out_channels, c.downsample_padding, dtype=self.dtype,
                                    name="downsamplers_0")(x)
            outputs.append(x)
        return x, (skips if self.up else tuple(outputs))


def _depths(depth: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    """A block's transformer depth per layer, from one int or one per layer (diffusers' asymmetric UNets)."""
    return tuple(depth) if isinstance(depth, tuple) else (depth,) * n


class UNetMidBlock2DCrossAttn(nn.Module):
    """resnet, then (transformer, resnet) pairs: x [B, h, w, C] -> same shape."""

    config: UNetConfig
    heads: int
    transformer_layers: int | tuple[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb, context):
        c, ch = self.config, x.shape[-1]

        def resnet(i, x):
            return layers.ResnetBlock2D(ch, c.norm_num_groups, c.norm_eps, c.mid_block_scale_factor,
                                        dtype=self.dtype, name=f"resnets_{i}")(x, temb)

        x = resnet(0, x)
        x = Transformer2DModel(self.heads, _depths(self.transformer_layers, 1)[0], c.norm_num_groups,
                               c.use_linear_projection, dtype=self.dtype, name="attentions_0")(x, context)
        return resnet(1, x)


class UNet2DConditionModel(nn.Module):
    """Noise prediction eps(x_t, t, text): sample [B, h, w, in_channels], timesteps [B] (or scalar), context
    [B, S, cross_attention_dim] (a `TextTimeConditioning` for `addition_embed_type="text_time"`) ->
    [B, h, w, out_channels]. h and w must be multiples of 2**(num blocks - 1)."""

    config: UNetConfig
    dtype: Any = jnp.float32

    def dummy_inputs(self) -> tuple:
        c = self.config
        context = jnp.zeros((1, 1, c.cross_attention_dim), jnp.float32)
        if c.addition_embed_type == "text_time":
            text_dim = c.projection_class_embeddings_input_dim - TIME_IDS * c.addition_time_embed_dim
            context = TextTimeConditioning(context, jnp.zeros((1, text_dim), jnp.float32),
                                           jnp.zeros((1, TIME_IDS), jnp.float32))
        return (jnp.zeros((1, c.sample_size, c.sample_size, c.in_channels), jnp.float32), jnp.ones((1,), jnp.int32),
                context)

    @nn.compact
    def __call__(self, sample: jax.Array, timesteps: jax.Array,
                 encoder_hidden_states: jax.Array | TextTimeConditioning) -> jax.Array:
        c, n = self.config, len(self.config.block_out_channels)
        factor = 2 ** (n - 1)
        if sample.shape[1] % factor or sample.shape[2] % factor:
            raise ValueError(f"UNet input {sample.shape[1]}x{sample.shape[2]} is not a multiple of {factor} "
                             f"(2 ** (number of blocks - 1)); choose an image size that is {factor}x the VAE factor")
        if isinstance(encoder_hidden_states, TextTimeConditioning) != (c.addition_embed_type == "text_time"):
            raise ValueError(f"this UNet (addition_embed_type={c.addition_embed_type!r}) needs "
                             f"{'a TextTimeConditioning' if c.addition_embed_type else 'a context array'}, got "
                             f"{type(encoder_hidden_states).__name__}")
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (sample.shape[0],))
        emb = layers.timestep_embedding(timesteps, c.block_out_channels[0], flip_sin_to_cos=c.flip_sin_to_cos,
                                        freq_shift=c.freq_shift)
        temb = layers.TimestepEmbedding(c.block_out_channels[0] * 4, dtype=self.dtype,
                                        name="time_embedding")(emb.astype(self.dtype))
        if c.addition_embed_type == "text_time":
            temb = temb + self._text_time_embedding(encoder_hidden_states, temb.shape[-1])
            encoder_hidden_states = encoder_hidden_states.encoder_hidden_states
        x = sample.astype(self.dtype)
        if c.center_input_sample:
            x = 2 * x - 1.0
        context = encoder_hidden_states.astype(self.dtype)
        x = layers.conv(c.block_out_channels[0], 3, dtype=self.dtype, name="conv_in")(x)

        heads, per_layer = c.heads, c.per_block("layers_per_block")
        t_layers, up_t_layers = c.per_block("transformer_layers_per_block"), c.up_transformer_layers
        skips = (x,)
        for i, kind in enumerate(c.down_block_types):
            x, out = UNetBlock(c, c.block_out_channels[i], per_layer[i], heads[i], t_layers[i],
                               kind.startswith("CrossAttn"), up=False, resample=i < n - 1, dtype=self.dtype,
                               name=f"down_blocks_{i}")(x, temb, context, ())
            skips += out
        x = UNetMidBlock2DCrossAttn(c, heads[-1], t_layers[-1], dtype=self.dtype, name="mid_block")(x, temb, context)
        for i, kind in enumerate(c.up_block_types):
            j = n - 1 - i  # the matching down block
            x, skips = UNetBlock(c, c.block_out_channels[j], per_layer[j] + 1, heads[j], up_t_layers[i],
                                 kind.startswith("CrossAttn"), up=True, resample=i < n - 1, dtype=self.dtype,
                                 name=f"up_blocks_{i}")(x, temb, context, skips)
        x = nn.silu(layers.group_norm(c.norm_num_groups, c.norm_eps, self.dtype, "conv_norm_out")(x))
        return layers.conv(c.out_channels, 3, dtype=self.dtype, name="conv_out")(x)

    def _text_time_embedding(self, cond: TextTimeConditioning, features: int) -> jax.Array:
        """diffusers' `add_time_proj` (sinusoids of each time id) and `add_embedding` on [text_embeds, those]:
        -> [B, features], added to the time embedding."""
        c = self.config
        ids = jnp.asarray(cond.time_ids)
        time_embeds = layers.timestep_embedding(ids.reshape(-1), c.addition_time_embed_dim,
                                                flip_sin_to_cos=c.flip_sin_to_cos, freq_shift=c.freq_shift)
        add_embeds = jnp.concatenate([cond.text_embeds.astype(jnp.float32),
                                      time_embeds.reshape(ids.shape[0], -1)], axis=-1)
        return layers.TimestepEmbedding(features, dtype=self.dtype, name="add_embedding")(add_embeds.astype(self.dtype))
