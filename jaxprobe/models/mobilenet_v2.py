"""MobileNetV2 in Flax linen, equal to torchvision's `mobilenet_v2` (eval and train mode), and its torchvision
state-dict names (`load.load_mobilenet_v2` / `load.save_mobilenet_v2` read and write them).

Module names mirror torchvision's: `features_0` ... `features_18` are `features[0]` ... `features[18]` (each
returns that block's output, residual included, so `jaxprobe.hooks` records them by path) and `classifier_1` is
`classifier[1]`. Inside a block every conv and batch norm sits directly under the block, named by its torch path
below `features.k` with dots as underscores; the stem and the last conv (torchvision `Conv2dNormActivation`, a bare
Sequential) name their conv and norm `layers_0` and `layers_1`:

  features.0.0.weight               <-> params      features_0/layers_0/kernel   (OIHW <-> HWIO)
  features.0.1.{weight,bias}        <-> params      features_0/layers_1/{scale,bias}
  features.0.1.running_{mean,var}   <-> batch_stats features_0/layers_1/{mean,var}
  features.2.conv.1.0.weight        <-> params      features_2/conv_1_0/kernel   (depthwise [C,1,3,3] <-> [3,3,1,C])
  features.2.conv.3.running_mean    <-> batch_stats features_2/conv_3/mean
  classifier.1.{weight,bias}        <-> params      classifier_1/{kernel,bias}   ((out, in) <-> (in, out))

`layout(config)` lists every layer with its channel counts; the module and `variable_shapes` (the template the
loader converts and checks a state dict against, and infers the width with) are both built from it, so they cannot
disagree.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxprobe import kernels
from jaxprobe.models import convert
from jaxprobe.models.config import Config

# torchvision's inverted-residual setting: expand ratio t, output channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
INPUT_CHANNELS, LAST_CHANNELS = 32, 1280
BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # Flax keeps `momentum` of the old value: torch momentum 0.1
# torchvision's ImageNet recipe normalises inputs with these (ToTensor, then Normalize(mean, std)).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 RGB [B, H, W, 3] -> the float32 input torchvision's recipe feeds: /255, then IMAGENET_MEAN/STD."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision's `_make_divisible`: round to a multiple of `divisor`, never more than 10% down."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclasses.dataclass(frozen=True)
class MobileNetV2Config(Config):
    """torchvision `mobilenet_v2` keyword arguments (same names and defaults)."""

    num_classes: int = 1000
    width_mult: float = 1.0
    round_nearest: int = 8
    dropout: float = 0.2

    def __post_init__(self):
        if not (isinstance(self.num_classes, (int, np.integer)) and self.num_classes >= 1):
            raise ValueError(f"MobileNetV2Config: num_classes={self.num_classes!r} must be a positive integer")
        if not (isinstance(self.width_mult, (int, float)) and math.isfinite(self.width_mult)
                and self.width_mult > 0):
            raise ValueError(f"MobileNetV2Config: width_mult={self.width_mult!r} must be a positive number")
        if not (isinstance(self.round_nearest, (int, np.integer)) and self.round_nearest >= 1):
            raise ValueError(f"MobileNetV2Config: round_nearest={self.round_nearest!r} must be a positive integer")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"MobileNetV2Config: dropout={self.dropout!r} must be in [0, 1)")


class Block(NamedTuple):
    """One `features[k]`: kind 'stem' / 'last' (conv-BN-ReLU6) or 'inverted' (torchvision `InvertedResidual`)."""

    kind: str
    inp: int
    out: int
    stride: int
    expand: int
    kernel: int

    @property
    def hidden(self) -> int:
        return int(round(self.inp * self.expand))


def layout(config: MobileNetV2Config) -> tuple[Block, ...]:
    """The 19 `features` blocks of torchvision's MobileNetV2 for `config`."""
    r = config.round_nearest
    channels = _make_divisible(INPUT_CHANNELS * config.width_mult, r)
    blocks = [Block("stem", 3, channels, 2, 1, 3)]
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        out = _make_divisible(c * config.width_mult, r)
        for i in range(n):
            blocks.append(Block("inverted", channels, out, s if i == 0 else 1, t, 3))
            channels = out
    blocks.append(Block("last", channels, last_channels(config), 1, 1, 1))
    return tuple(blocks)


def last_channels(config: MobileNetV2Config) -> int:
    return _make_divisible(LAST_CHANNELS * max(1.0, config.width_mult), config.round_nearest)


def block_layers(block: Block) -> list[tuple[str, str, int, int, int, int]]:
    """The block's layers in call order: (flax name, kind 'conv'/'bn', in, out, kernel, groups)."""
    if block.kind != "inverted":
        return [("layers_0", "conv", block.inp, block.out, block.kernel, 1),
                ("layers_1", "bn", block.out, block.out, 0, 0)]
    hidden, layers, i = block.hidden, [], 0
    if block.expand != 1:  # 1x1 expansion conv-BN-ReLU6
        layers += [(f"conv_{i}_0", "conv", block.inp, hidden, 1, 1), (f"conv_{i}_1", "bn", hidden, hidden, 0, 0)]
        i += 1
    layers += [(f"conv_{i}_0", "conv", hidden, hidden, 3, hidden), (f"conv_{i}_1", "bn", hidden, hidden, 0, 0),
               (f"conv_{i + 1}", "conv", hidden, block.out, 1, 1), (f"conv_{i + 2}", "bn", block.out, block.out, 0, 0)]
    return layers


# ----------------------------------------------------------------------------------------------------- modules


_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's conv init


def _conv(features: int, kernel: int, stride: int, groups: int, name: str, dtype) -> nn.Module:
    """Bias-free conv padded (k-1)//2 on every side, as PyTorch (Flax 'SAME' pads stride 2 asymmetrically)."""
    if groups > 1:
        if groups != features:
            raise ValueError(f"only depthwise grouped convs are used here, not groups={groups} for {features}")
        return DepthwiseConv(features, kernel, stride, dtype, name=name)
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                   dtype=dtype, param_dtype=jnp.float32, kernel_init=_KAIMING_FAN_OUT, name=name)


class DepthwiseConv(nn.Module):
    """Depthwise conv [B, H, W, C] -> [B, H', W', C], PyTorch padding, with the parameter of
    `nn.Conv(feature_group_count=C)` (`kernel` [k, k, 1, C]), so checkpoints do not depend on the path.

    XLA:CPU runs its grouped convolution (forward and backward) several times slower than k*k shifted
    multiply-adds on the MobileNetV2 shapes, which dominated a training step there; `kernels.choose
    ('depthwise_conv')` picks the shifted form on CPU and lax's grouped convolution elsewhere. The two agree up to
    float summation order.
    """

    features: int
    kernel: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel
        weight = self.param("kernel", _KAIMING_FAN_OUT, (k, k, 1, self.features), jnp.float32)
        x, weight = x.astype(self.dtype), weight.astype(self.dtype)
        pad = (k - 1) // 2
        if kernels.choose("depthwise_conv") == "lax":
            return jax.lax.conv_general_dilated(x, weight, (self.stride, self.stride), ((pad, pad), (pad, pad)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                feature_group_count=self.features)
        return _shifted_depthwise(jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))), weight, self.stride)


def _shifted_depthwise(x: jax.Array, weight: jax.Array, s: int) -> jax.Array:
    """Valid depthwise conv of padded x [B, H, W, C] with weight [k, k, 1, C], stride s, as k*k strided slices
    times their tap, summed in row-major tap order."""
    k = weight.shape[0]
    batch, height, width, channels = x.shape
    out_h, out_w = (height - k) // s + 1, (width - k) // s + 1
    out = None
    for i in range(k):
        for j in range(k):
            window = jax.lax.slice(x, (0, i, j, 0), (batch, i + (out_h - 1) * s + 1, j + (out_w - 1) * s + 1,
                                                     channels), (1, s, s, 1))
            out = window * weight[i, j, 0] if out is None else out + window * weight[i, j, 0]
    return out


def _bn(name: str, dtype) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


class FeatureBlock(nn.Module):
    """torchvision `features[k]`: conv-BN-ReLU6 (stem, last) or an inverted residual (1x1 expand, 3x3 depthwise,
    1x1 linear projection, plus the input when stride 1 and in == out). [B, H, W, inp] -> [B, H/s, W/s, out]."""

    block: Block
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = x
        layers = block_layers(self.block)
        for j, (name, kind, _, out, kernel, groups) in enumerate(layers):
            if kind == "conv":
                stride = self.block.stride if (kernel == 3) else 1
                y = _conv(out, kernel, stride, groups, name, self.dtype)(y)
            else:
                y = _bn(name, self.dtype)(y, use_running_average=not train)
                if j != len(layers) - 1 or self.block.kind != "inverted":  # the projection is linear
                    y = jnp.clip(y, 0, 6)  # ReLU6
        if self.block.kind == "inverted" and self.block.stride == 1 and self.block.inp == self.block.out:
            y = x + y
        return y


class MobileNetV2(nn.Module):
    """torchvision `mobilenet_v2`: normalised images float NHWC [B, H, W, 3] -> logits [B, num_classes].

    `train=True` normalises with batch statistics and updates `batch_stats` (apply with `mutable=['batch_stats']`)
    and applies dropout (rng `'dropout'`). `dtype` is the compute dtype; params are always float32.
    """

    config: MobileNetV2Config
    dtype: Any = jnp.float32

    def setup(self):
        self.features = [FeatureBlock(block, self.dtype) for block in layout(self.config)]
        self.classifier_0 = nn.Dropout(self.config.dropout)
        self.classifier_1 = nn.Dense(self.config.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                                     kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.zeros)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        x = images.astype(self.dtype)
        for block in self.features:
            x = block(x, train)
        x = jnp.mean(x, axis=(1, 2))  # adaptive_avg_pool2d(1) + flatten: [B, last_channels]
        return self.classifier_1(self.classifier_0(x, deterministic=not train))

    def dummy_inputs(self) -> tuple:
        """Arguments for `init`: one 64x64 RGB image, float32 [1, 64, 64, 3]."""
        return (jnp.zeros((1, 64, 64, 3)),)


# -------------------------------------------------------------------------------------- torchvision state dicts


def variable_shapes(config: MobileNetV2Config) -> dict:
    """The module's variables template ({'params', 'batch_stats'} of ShapeDtypeStructs) computed from `layout`, as
    `init` would make it but without tracing the model (a loader tries many widths)."""
    flat = {}
    for k, block in enumerate(layout(config)):
        for name, kind, inp, out, kernel, groups in block_layers(block):
            path = (f"features_{k}", name)
            if kind == "conv":
                flat[("params",) + path + ("kernel",)] = (kernel, kernel, inp // groups, out)
            else:
                for collection, leaf in (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"),
                                         ("batch_stats", "var")):
                    flat[(collection,) + path + (leaf,)] = (out,)
    flat[("params", "classifier_1", "kernel")] = (last_channels(config), config.num_classes)
    flat[("params", "classifier_1", "bias")] = (config.num_classes,)
    return traverse_util.unflatten_dict({k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in flat.items()})


def torch_module_key(path: tuple[str, ...]) -> str:
    """Flax module path -> torchvision module name: `convert.path_to_torch_key`, except that the stem's and the last
    conv's children (`Conv2dNormActivation` is a bare Sequential) are plain indices: `features_0/layers_1` ->
    `features.0.1`."""
    return convert.path_to_torch_key(tuple(p[len("layers_"):] if p.startswith("layers_") else p for p in path))
