"""DPT depth estimation (transformers' `DPTForDepthEstimation`: DPT-Large, the MiDaS v3 ViT family) in Flax linen.

Parameter paths mirror the transformers state dict (`dpt.embeddings.patch_embeddings.projection.weight` <->
`dpt/embeddings/patch_embeddings/projection/kernel`, `neck.reassemble_stage.readout_projects.0.0.weight` <->
`neck/reassemble_stage/readout_projects_0_0/kernel`, `head.head.4.weight` <-> `head/head_4/kernel`), so
`load.load_dpt` reads a `save_pretrained` directory and `load.save_component` writes one transformers loads.

Layout is NHWC: pixel_values float [B, H, W, num_channels], normalised as the DPT image processor does
(`(rgb / 255 - mean) / std`, mean = std = 0.5 for DPT-Large) -> predicted_depth float [B, H', W'], the relative
inverse depth (larger = nearer) that transformers returns as `outputs.predicted_depth`. H' = H and W' = W when
patch_size is 16 and H, W are multiples of 32 (DPT-Large at 384x384); in general H' = 16 * (H // patch_size), more
when the patch grid is odd (as in transformers). `predict_depth` wraps the whole pipeline for raw images at any size.

Sizes other than config.image_size work as in transformers: the position embeddings are resized to the patch grid
(torch bilinear, align_corners=False). transformers' ViT-backed DPT reshapes the tokens to a *square* grid and so
fails on non-square inputs; here the grid is H // patch_size x W // patch_size, which is what the same torch modules
compute when given the patch grid (as transformers does for its `backbone` variants).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.clip import ACTIVATIONS
from jaxprobe.models.config import Config, read_json
from jaxprobe.models.resize import resize_bicubic, resize_bilinear

READOUT_TYPES = ("ignore", "add", "project")
# DPTImageProcessor's settings for Intel/dpt-large, used when a directory has no preprocessor_config.json; the keys
# are `predict_depth`'s keyword arguments.
DPT_LARGE_PREPROCESSOR = {"size": (384, 384), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                          "rescale_factor": 1 / 255, "keep_aspect_ratio": False, "ensure_multiple_of": 1}
_BICUBIC = 3  # PILImageResampling.BICUBIC, the only `resample` DPT processors use


@dataclasses.dataclass(frozen=True)
class DPTConfig(Config):
    """transformers `DPTConfig` fields (same names and defaults) that the ViT-backed depth model reads.

    Not implemented, so rejected: DPT-Hybrid (`is_hybrid`), external backbones (`backbone`, `backbone_config`:
    Dinov2, BEiT, Swinv2 ...), batch norm in the fusion residual units, non-square `image_size` / `patch_size`.
    """

    EXPORT: ClassVar[dict] = {"architectures": ["DPTForDepthEstimation"], "model_type": "dpt"}
    SUPPORTED: ClassVar[dict] = {"hidden_act": tuple(ACTIVATIONS), "readout_type": READOUT_TYPES,
                                 "is_hybrid": (False,), "use_batch_norm_in_fusion_residual": (False,)}

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int = 384
    patch_size: int = 16
    num_channels: int = 3
    is_hybrid: bool = False
    qkv_bias: bool = True
    backbone_out_indices: tuple[int, ...] = (2, 5, 8, 11)
    readout_type: str = "project"
    reassemble_factors: tuple[float, ...] = (4, 2, 1, 0.5)
    neck_hidden_sizes: tuple[int, ...] = (96, 192, 384, 768)
    fusion_hidden_size: int = 256
    head_in_index: int = -1
    use_batch_norm_in_fusion_residual: bool = False
    use_bias_in_fusion_residual: bool | None = None
    add_projection: bool = False

    def __post_init__(self):
        def fail(message):
            raise ValueError(f"DPTConfig: {message}")

        if self.hidden_size % self.num_attention_heads:
            fail(f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}")
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                fail(f"{name}={getattr(self, name)!r} is not supported; only a positive int (square)")
        stages = len(self.neck_hidden_sizes)
        if len(self.reassemble_factors) != stages:
            fail(f"{len(self.reassemble_factors)} reassemble_factors for {stages} neck_hidden_sizes")
        for factor in self.reassemble_factors:
            if not (factor == int(factor) >= 1 or 0 < factor < 1 and (1 / factor).is_integer()):
                fail(f"reassemble_factors: {factor!r} is neither an int >= 1 nor 1/n")
        used = [i for i in range(self.num_hidden_layers) if i in self.backbone_out_indices]
        if len(used) != stages:
            fail(f"backbone_out_indices={self.backbone_out_indices} select {len(used)} of the {self.num_hidden_layers}"
                 f" layers, but there are {stages} neck_hidden_sizes")
        if not -stages <= self.head_in_index < stages:
            fail(f"head_in_index={self.head_in_index} is out of range for {stages} fusion stages")
        if self.add_projection and self.fusion_hidden_size != 256:
            fail("add_projection needs fusion_hidden_size=256 (transformers' projection is a fixed 256->256 conv); "
                 f"got {self.fusion_hidden_size}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]):
        out = super().from_dict(config)
        for key in ("backbone", "backbone_config"):
            if config.get(key) is not None:
                raise ValueError(f"DPTConfig: {key}={config[key]!r} is not supported; only DPT's own ViT "
                                 "(DPT-Large style, no backbone)")
        return out

    @property
    def fusion_residual_bias(self) -> bool:
        """transformers' default: conv biases in the residual units unless they use batch norm."""
        return (not self.use_batch_norm_in_fusion_residual if self.use_bias_in_fusion_residual is None
                else self.use_bias_in_fusion_residual)


def _upsample2x(x: jax.Array) -> jax.Array:
    """`nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)`: [B, H, W, C] -> [B, 2H, 2W, C]."""
    return resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]), align_corners=True)


# ---------------------------------------------------------------------------------------------------------------
# Layers: transformers' init (normal(initializer_range) weights, zero biases); params float32, compute `dtype`.


def _dense(config: DPTConfig, features: int, dtype, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(config.initializer_range))


def _conv(config: DPTConfig, features: int, kernel: int, dtype, *, stride: int = 1, padding: int = 0,
          use_bias: bool = True) -> nn.Conv:
    """torch `nn.Conv2d(..., kernel_size=kernel, stride=stride, padding=padding)` (symmetric padding)."""
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                   use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                   kernel_init=nn.initializers.normal(config.initializer_range))


class ConvTranspose(nn.Module):
    """torch `nn.ConvTranspose2d(c, features, kernel_size=factor, stride=factor, padding=0)`: every input pixel
    becomes a factor x factor block, [B, H, W, c] -> [B, factor*H, factor*W, features].

    The kernel is stored [factor, factor, features, c]: torch's (in, out, kh, kw) weight under convert.py's generic
    conv rule (OIHW -> HWIO), so loading and saving need no special case. With kernel == stride the blocks do not
    overlap, so the transposed conv is one einsum (torch does not flip the kernel here).
    """

    features: int
    factor: int
    init_std: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.factor
        kernel = self.param("kernel", nn.initializers.normal(self.init_std), (k, k, self.features, x.shape[-1]),
                            jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwc,ijoc->bhiwjo", x.astype(self.dtype), kernel.astype(self.dtype))
        return y.reshape(b, h * k, w * k, self.features) + bias.astype(self.dtype)


# ---------------------------------------------------------------------------------------------------------------
# ViT backbone: `dpt.*`.


class DPTViTPatchEmbeddings(nn.Module):
    """Patchify conv: [B, H, W, C] -> [B, H // patch, W // patch, hidden] (torch flattens it row by row)."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.projection = _conv(c, c.hidden_size, c.patch_size, self.dtype, stride=c.patch_size)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        return self.projection(pixel_values)


class DPTViTEmbeddings(nn.Module):
    """Class token + patch embeddings + position embeddings resized to the patch grid.

    pixel_values [B, H, W, C] -> (tokens [B, 1 + gh*gw, hidden], (gh, gw)) with gh = H // patch, gw = W // patch.
    `position_embeddings` [1, 1 + n*n, hidden] holds an n x n grid (n = image_size // patch_size); another grid size
    gets it bilinearly resized (align_corners=False), as transformers' `_resize_pos_embed`.
    """

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        positions = (c.image_size // c.patch_size) ** 2 + 1
        self.cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, c.hidden_size), jnp.float32)
        self.position_embeddings = self.param("position_embeddings", nn.initializers.zeros,
                                              (1, positions, c.hidden_size), jnp.float32)
        self.patch_embeddings = DPTViTPatchEmbeddings(c, self.dtype)

    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        c = self.config
        if pixel_values.ndim != 4 or pixel_values.shape[-1] != c.num_channels:
            raise ValueError(f"pixel_values must be NHWC [B, H, W, {c.num_channels}]; got {pixel_values.shape}")
        patches = self.patch_embeddings(pixel_values)
        batch, gh, gw, width = patches.shape
        grid = self.position_embeddings[0, 1:].astype(self.dtype)
        old = c.image_size // c.patch_size
        if (gh, gw) != (old, old):
            grid = resize_bilinear(grid.reshape(1, old, old, width), (gh, gw), align_corners=False)
        positions = jnp.concatenate([self.position_embeddings[0, :1].astype(self.dtype), grid.reshape(gh * gw, width)])
        cls = jnp.broadcast_to(self.cls_token.astype(self.dtype), (batch, 1, width))
        tokens = jnp.concatenate([cls, patches.reshape(batch, gh * gw, width)], axis=1)
        return tokens + positions[None], (gh, gw)


class DPTSelfAttention(nn.Module):
    """Q, K, V projections and softmax attention: [B, T, hidden] -> [B, T, hidden] (before the output dense)."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.query = _dense(c, c.hidden_size, self.dtype, c.qkv_bias)
        self.key = _dense(c, c.hidden_size, self.dtype, c.qkv_bias)
        self.value = _dense(c, c.hidden_size, self.dtype, c.qkv_bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, width = x.shape
        heads = self.config.num_attention_heads

        def split(y):  # [B, T, hidden] -> [B, T, heads, head_dim]
            return y.reshape(batch, length, heads, width // heads)

        out = jax.nn.dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return out.reshape(batch, length, width)


class DPTViTSelfOutput(nn.Module):
    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.dense = _dense(self.config, self.config.hidden_size, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dense(x)


class DPTViTAttention(nn.Module):
    """`attention.attention` (Q, K, V) then `attention.output.dense`: [B, T, hidden] -> [B, T, hidden]."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.attention = DPTSelfAttention(self.config, self.dtype)
        self.output = DPTViTSelfOutput(self.config, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output(self.attention(x))


class DPTViTIntermediate(nn.Module):
    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.dense = _dense(self.config, self.config.intermediate_size, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.config.hidden_act](self.dense(x))


class DPTViTOutput(nn.Module):
    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.dense = _dense(self.config, self.config.hidden_size, self.dtype)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        return self.dense(x) + residual


class DPTViTLayer(nn.Module):
    """Pre-norm ViT block: x + attn(ln_before(x)), then h + mlp(ln_after(h)); [B, T, hidden] -> [B, T, hidden]."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.attention = DPTViTAttention(c, self.dtype)
        self.intermediate = DPTViTIntermediate(c, self.dtype)
        self.output = DPTViTOutput(c, self.dtype)
        self.layernorm_before = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32)
        self.layernorm_after = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.layernorm_before(x))
        return self.output(self.intermediate(self.layernorm_after(x)), x)


class DPTViTEncoder(nn.Module):
    """`num_hidden_layers` blocks (`layer_0` ... as transformers' `layer.0` ...); returns every block's output."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.layer = [DPTViTLayer(self.config, self.dtype) for _ in range(self.config.num_hidden_layers)]

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        outputs = []
        for layer in self.layer:
            x = layer(x)
            outputs.append(x)
        return outputs


class DPTViTModel(nn.Module):
    """transformers' `DPTModel` without pooler (`DPTForDepthEstimation.dpt`).

    pixel_values [B, H, W, C] -> (per-layer outputs, num_hidden_layers x [B, 1 + gh*gw, hidden] (not normalised: the
    neck reads these), last_hidden_state [B, 1 + gh*gw, hidden] (after `layernorm`), (gh, gw)).
    """

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.embeddings = DPTViTEmbeddings(self.config, self.dtype)
        self.encoder = DPTViTEncoder(self.config, self.dtype)
        self.layernorm = nn.LayerNorm(self.config.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32)

    def __call__(self, pixel_values: jax.Array) -> tuple[list[jax.Array], jax.Array, tuple[int, int]]:
        tokens, grid = self.embeddings(pixel_values)
        hidden_states = self.encoder(tokens)
        return hidden_states, self.layernorm(hidden_states[-1]), grid


# ---------------------------------------------------------------------------------------------------------------
# Neck: `neck.reassemble_stage`, `neck.convs`, `neck.fusion_stage`.


class DPTReassembleLayer(nn.Module):
    """1x1 projection to `channels`, then resize by `factor`: ConvTranspose (factor > 1), identity (1) or a 3x3
    stride-1/factor conv (< 1). [B, gh, gw, hidden] -> [B, ~factor*gh, ~factor*gw, channels]."""

    config: DPTConfig
    channels: int
    factor: float
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.projection = _conv(c, self.channels, 1, self.dtype)
        if self.factor > 1:
            self.resize = ConvTranspose(self.channels, int(self.factor), c.initializer_range, self.dtype)
        elif self.factor < 1:
            self.resize = _conv(c, self.channels, 3, self.dtype, stride=round(1 / self.factor), padding=1)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.projection(x)
        return self.resize(x) if self.factor != 1 else x


class DPTReassembleStage(nn.Module):
    """Tokens -> image-like feature maps: fold the class token in (readout_type), reshape to the patch grid, project
    and resize. Per stage: [B, 1 + gh*gw, hidden] -> [B, ~factor*gh, ~factor*gw, neck_hidden_sizes[i]]."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.layers = [DPTReassembleLayer(c, size, factor, self.dtype)
                       for size, factor in zip(c.neck_hidden_sizes, c.reassemble_factors)]
        if c.readout_type == "project":  # nn.Sequential(Linear(2 * hidden, hidden), act): `readout_projects.i.0`
            self.readout_projects = [[_dense(c, c.hidden_size, self.dtype), ACTIVATIONS[c.hidden_act]]
                                     for _ in c.neck_hidden_sizes]

    def __call__(self, hidden_states: Sequence[jax.Array], grid: tuple[int, int]) -> list[jax.Array]:
        out = []
        for i, tokens in enumerate(hidden_states):
            cls, x = tokens[:, :1], tokens[:, 1:]
            if self.config.readout_type == "project":
                dense, act = self.readout_projects[i]
                x = act(dense(jnp.concatenate([x, jnp.broadcast_to(cls, x.shape)], axis=-1)))
            elif self.config.readout_type == "add":
                x = x + cls
            out.append(self.layers[i](x.reshape(x.shape[0], *grid, x.shape[-1])))
        return out


class DPTPreActResidualLayer(nn.Module):
    """Pre-activation residual unit: x + conv2(relu(conv1(relu(x)))), 3x3 convs; [B, H, W, F] -> same."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.convolution1 = _conv(c, c.fusion_hidden_size, 3, self.dtype, padding=1, use_bias=c.fusion_residual_bias)
        self.convolution2 = _conv(c, c.fusion_hidden_size, 3, self.dtype, padding=1, use_bias=c.fusion_residual_bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.convolution2(nn.relu(self.convolution1(nn.relu(x))))


class DPTFeatureFusionLayer(nn.Module):
    """Merge a coarser fused map with this stage's features, then upsample x2 (bilinear, align_corners=True) and
    project (1x1). hidden [B, H, W, F] (+ residual [B, H2, W2, F], resized to H x W if it differs) ->
    [B, 2H, 2W, F]."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.projection = _conv(c, c.fusion_hidden_size, 1, self.dtype)
        self.residual_layer1 = DPTPreActResidualLayer(c, self.dtype)
        self.residual_layer2 = DPTPreActResidualLayer(c, self.dtype)

    def __call__(self, hidden: jax.Array, residual: jax.Array | None = None) -> jax.Array:
        if residual is not None:
            if residual.shape != hidden.shape:
                residual = resize_bilinear(residual, hidden.shape[1:3], align_corners=False)
            hidden = hidden + self.residual_layer1(residual)
        elif self.is_initializing():
            self.residual_layer1(hidden)  # the first (deepest) layer never uses it, but torch has its weights
        return self.projection(_upsample2x(self.residual_layer2(hidden)))


class DPTFeatureFusionStage(nn.Module):
    """Fuse from the deepest stage up: list of [B, Hi, Wi, F] (shallow first) -> fused maps, deepest first, each
    twice the size of the one before."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.layers = [DPTFeatureFusionLayer(self.config, self.dtype) for _ in self.config.neck_hidden_sizes]

    def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
        fused, out = None, []
        for x, layer in zip(features[::-1], self.layers):
            fused = layer(x) if fused is None else layer(fused, x)
            out.append(fused)
        return out


class DPTNeck(nn.Module):
    """Reassemble the selected layers' tokens, 3x3 conv each to fusion_hidden_size (no bias), fuse."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.reassemble_stage = DPTReassembleStage(c, self.dtype)
        self.convs = [_conv(c, c.fusion_hidden_size, 3, self.dtype, padding=1, use_bias=False)
                      for _ in c.neck_hidden_sizes]
        self.fusion_stage = DPTFeatureFusionStage(c, self.dtype)

    def __call__(self, hidden_states: Sequence[jax.Array], grid: tuple[int, int]) -> list[jax.Array]:
        features = self.reassemble_stage(hidden_states, grid)
        return self.fusion_stage([conv(x) for conv, x in zip(self.convs, features)])


class DPTDepthEstimationHead(nn.Module):
    """fused[head_in_index] [B, H, W, F] -> depth [B, 2H, 2W]: (optional 256->256 conv + ReLU), then transformers'
    `head` Sequential (conv F->F/2, upsample x2, conv ->32, ReLU, 1x1 conv ->1, ReLU), kept at its indices."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        if c.add_projection:
            self.projection = _conv(c, 256, 3, self.dtype, padding=1)
        f = c.fusion_hidden_size
        self.head = [_conv(c, f // 2, 3, self.dtype, padding=1), _upsample2x, _conv(c, 32, 3, self.dtype, padding=1),
                     nn.relu, _conv(c, 1, 1, self.dtype), nn.relu]

    def __call__(self, fused: Sequence[jax.Array]) -> jax.Array:
        x = fused[self.config.head_in_index]
        if self.config.add_projection:
            x = nn.relu(self.projection(x))
        for layer in self.head:
            x = layer(x)
        return x[..., 0]


class DPTForDepthEstimation(nn.Module):
    """transformers `DPTForDepthEstimation` (ViT backbone): pixel_values float [B, H, W, num_channels] (NHWC,
    normalised; H, W >= patch_size, ideally multiples of it) -> predicted_depth float [B, H', W'] (see the module
    docstring). `dtype` is the compute dtype; params are always float32."""

    config: DPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.dpt = DPTViTModel(self.config, self.dtype)
        self.neck = DPTNeck(self.config, self.dtype)
        self.head = DPTDepthEstimationHead(self.config, self.dtype)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        hidden_states, _, grid = self.dpt(pixel_values)
        selected = [h for i, h in enumerate(hidden_states) if i in self.config.backbone_out_indices]
        return self.head(self.neck(selected, grid))

    def dummy_inputs(self) -> tuple:
        """Arguments for `init`: one zero image, float32 [1, image_size, image_size, num_channels]."""
        c = self.config
        return (jnp.zeros((1, c.image_size, c.image_size, c.num_channels), jnp.float32),)


# ---------------------------------------------------------------------------------------------------------------
# Raw images in, depth at the input resolution out.


def preprocessor(directory: str | os.PathLike) -> dict:
    """`predict_depth`'s keyword arguments from a directory's `preprocessor_config.json` (DPTImageProcessor's keys),
    or DPT_LARGE_PREPROCESSOR's when there is none: size (h, w), mean, std (3-tuples), rescale_factor,
    keep_aspect_ratio, ensure_multiple_of. Settings it cannot honour (padding, a resample other than bicubic) raise.
    """
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return dict(DPT_LARGE_PREPROCESSOR)
    raw = read_json(path, "DPT preprocessor config")
    if raw.get("do_pad"):
        raise ValueError(f"{path}: do_pad=True is not supported")
    if raw.get("resample", _BICUBIC) != _BICUBIC:
        raise ValueError(f"{path}: resample={raw['resample']!r} is not supported; only bicubic ({_BICUBIC})")
    out = dict(DPT_LARGE_PREPROCESSOR)
    size = raw.get("size", out["size"])
    out["size"] = ((size["height"], size["width"]) if isinstance(size, Mapping) else
                   (size, size) if isinstance(size, int) else tuple(size))
    if not raw.get("do_resize", True):
        out["size"] = None
    for key, name in (("image_mean", "mean"), ("image_std", "std")):
        value = raw.get(key, out[name])
        out[name] = tuple(float(v) for v in (value if isinstance(value, Sequence) else [value] * 3))
    if not raw.get("do_normalize", True):
        out["mean"], out["std"] = (0.0,) * 3, (1.0,) * 3
    if raw.get("do_rescale", True):
        out["rescale_factor"] = float(raw.get("rescale_factor", out["rescale_factor"]))
    else:
        out["rescale_factor"] = 1.0
    out["keep_aspect_ratio"] = bool(raw.get("keep_aspect_ratio", False))
    out["ensure_multiple_of"] = int(raw.get("ensure_multiple_of", 1) or 1)
    return out


def resize_output_size(height: int, width: int, size: tuple[int, int], keep_aspect_ratio: bool,
                       multiple: int) -> tuple[int, int]:
    """The model input size for an H x W image: DPTImageProcessor's `get_resize_output_image_size` (with
    keep_aspect_ratio, the axis that changes least sets the scale of both; each side rounded to `multiple`)."""
    scale_h, scale_w = size[0] / height, size[1] / width
    if keep_aspect_ratio:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
    return round(scale_h * height / multiple) * multiple, round(scale_w * width / multiple) * multiple


def pixel_values(images: jax.Array, *, size: tuple[int, int] | None = DPT_LARGE_PREPROCESSOR["size"],
                 mean: tuple[float, ...] = DPT_LARGE_PREPROCESSOR["mean"],
                 std: tuple[float, ...] = DPT_LARGE_PREPROCESSOR["std"],
                 rescale_factor: float = DPT_LARGE_PREPROCESSOR["rescale_factor"], keep_aspect_ratio: bool = False,
                 ensure_multiple_of: int = 1) -> jax.Array:
    """The DPT processor's input steps for RGB images [B, H, W, 3] (uint8, or float in 0..255): resize to `size`
    (adjusted by keep_aspect_ratio / ensure_multiple_of; None = keep), rescale, normalise -> float32 [B, h, w, 3].

    The resize is PIL's bicubic as the processor runs it: Keys a=-0.5, antialiased when shrinking, the width pass
    then the height pass, uint8 images rounded and clipped to 0..255 after each (PIL keeps 8 bits between them).
    PIL's fixed-point weights still differ from it by a grey level or two on a few pixels.
    """
    x = images.astype(jnp.float32)
    batch, height, width, channels = x.shape
    target = (height, width) if size is None else resize_output_size(height, width, size, keep_aspect_ratio,
                                                                     ensure_multiple_of)
    for shape in ((batch, height, target[1], channels), (batch, *target, channels)):
        if shape != x.shape:
            x = jax.image.resize(x, shape, method="cubic")
            if jnp.issubdtype(images.dtype, jnp.integer):
                x = jnp.clip(jnp.round(x), 0, 255)
    return (x * rescale_factor - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@functools.partial(jax.jit, static_argnames=("module", "size", "mean", "std", "rescale_factor", "keep_aspect_ratio",
                                             "ensure_multiple_of"))
def predict_depth(module: DPTForDepthEstimation, params, images: jax.Array, **preprocessing) -> jax.Array:
    """Relative inverse depth float32 [B, H, W] at the input resolution, for RGB images [B, H, W, 3] (uint8, or
    float in 0..255): `pixel_values`, `module.apply`, then `post_process_depth_estimation`'s resize back to H x W
    (torch's bicubic, `resize_bicubic`). Jitted; `module` and the keyword arguments of `pixel_values`
    (`preprocessor(directory)` gives them) are static."""
    height, width = images.shape[1:3]
    x = pixel_values(images, **preprocessing)
    depth = module.apply({"params": params}, x.astype(module.dtype)).astype(jnp.float32)
    if depth.shape[1:] != (height, width):
        depth = resize_bicubic(depth[..., None], (height, width))[..., 0]
    return depth
