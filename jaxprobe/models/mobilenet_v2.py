"""MobileNetV2 in Flax linen, equal to torchvision's `mobilenet_v2` (eval and train mode), with a safetensors
loader and saver for torchvision state dicts.

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

`layout(config)` lists every layer with its channel counts; the module, the key table and the width inference of
`load_mobilenet_v2` are all built from it, so they cannot disagree.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import traverse_util

from jaxprobe import io
from jaxprobe.models import convert
from jaxprobe.models.config import Config

# torchvision's inverted-residual setting: expand ratio t, output channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
INPUT_CHANNELS, LAST_CHANNELS = 32, 1280
BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # Flax keeps `momentum` of the old value: torch momentum 0.1
# Widths tried when a checkpoint has no `width_mult` metadata: the published ones first, then a 0.05 grid.
COMMON_WIDTHS = (1.0, 0.5, 0.75, 0.35, 1.4, 1.3, 0.25)
WIDTH_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(59))  # 0.1 ... 3.0
# torchvision's ImageNet recipe normalises inputs with these (ToTensor, then Normalize(mean, std)).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


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
    """Depthwise conv [B, H, W, C] -> [B, H', W', C] as k*k shifted multiply-adds, PyTorch padding.

    Same parameter as `nn.Conv(feature_group_count=C)` (`kernel` [k, k, 1, C], so checkpoints do not change) and
    the same result up to float summation order, but XLA:CPU runs its grouped conv 5-20x slower than this (forward
    and backward; measured on the MobileNetV2 shapes), which dominated a training step.
    """

    features: int
    kernel: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel, self.stride
        weight = self.param("kernel", _KAIMING_FAN_OUT, (k, k, 1, self.features), jnp.float32)
        x, weight = x.astype(self.dtype), weight.astype(self.dtype)
        pad = (k - 1) // 2
        batch, height, width, channels = x.shape
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        out_h, out_w = (height + 2 * pad - k) // s + 1, (width + 2 * pad - k) // s + 1
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


def key_table(config: MobileNetV2Config) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """torch state-dict key -> (Flax collection, Flax path, torch shape) for every tensor but `num_batches_tracked`."""
    table = {}
    for k, block in enumerate(layout(config)):
        for name, kind, inp, out, kernel, groups in block_layers(block):
            torch_mod = f"features.{k}." + (name.split("_", 1)[1] if block.kind != "inverted"
                                             else name.replace("_", "."))
            path = (f"features_{k}", name)
            if kind == "conv":
                table[torch_mod + ".weight"] = ("params", path + ("kernel",), (out, inp // groups, kernel, kernel))
            else:
                for leaf, (collection, flax_leaf) in _BN_LEAVES.items():
                    table[f"{torch_mod}.{leaf}"] = (collection, path + (flax_leaf,), (out,))
    classes = config.num_classes
    table["classifier.1.weight"] = ("params", ("classifier_1", "kernel"), (classes, last_channels(config)))
    table["classifier.1.bias"] = ("params", ("classifier_1", "bias"), (classes,))
    return table


def _torch_to_flax(arr: np.ndarray) -> np.ndarray:
    """Conv OIHW -> HWIO (depthwise [C,1,kh,kw] -> [kh,kw,1,C]); linear (out, in) -> (in, out); vectors as is."""
    return arr.transpose(2, 3, 1, 0) if arr.ndim == 4 else arr.T if arr.ndim == 2 else arr


def _flax_to_torch(arr: np.ndarray) -> np.ndarray:
    return arr.transpose(3, 2, 0, 1) if arr.ndim == 4 else arr.T if arr.ndim == 2 else arr


def _mismatches(state: dict[str, np.ndarray], table: dict) -> tuple[list, list, list]:
    """(missing, unexpected, mis-shaped) keys of `state` against `table`."""
    missing = [k for k in table if k not in state]
    unexpected = [k for k in state if k not in table and not k.endswith(".num_batches_tracked")]
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {table[k][2]}"
                 for k in table if k in state and tuple(state[k].shape) != table[k][2]]
    return missing, unexpected, misshaped


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not path.exists():
        raise FileNotFoundError(f"MobileNetV2 checkpoint {path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 checkpoint {path} is not a file (expected one .safetensors file)")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"MobileNetV2 checkpoint {path} is unreadable (truncated or not safetensors): {e}") from e
    return state, metadata


def _infer_width(state: dict[str, np.ndarray], num_classes: int, path: Path) -> float:
    """The first candidate width whose layout has exactly the checkpoint's keys and shapes (widths with equal
    layouts build identical models, so which one of them is taken does not matter)."""
    for width in dict.fromkeys(COMMON_WIDTHS + WIDTH_GRID):
        config = MobileNetV2Config(num_classes=num_classes, width_mult=width)
        if not any(_mismatches(state, key_table(config))):
            return width
    stem = state.get("features.0.0.weight")
    hint = f" (stem conv {tuple(stem.shape)})" if stem is not None else " (no features.0.0.weight)"
    raise ValueError(f"MobileNetV2 checkpoint {path} fits no torchvision mobilenet_v2 of width_mult "
                     f"{WIDTH_GRID[0]}..{WIDTH_GRID[-1]}{hint}; pass width_mult= if it is another width, or "
                     "check that it is a torchvision mobilenet_v2 state dict")


def load_mobilenet_v2(path: str | os.PathLike, *, num_classes: int | None = None, width_mult: float | None = None,
                      dtype=None) -> tuple[MobileNetV2, dict]:
    """Read a torchvision `mobilenet_v2` state dict saved as one .safetensors file.

    The class count comes from `classifier.1.weight`; the width from the file's `width_mult` metadata (written by
    `save_mobilenet_v2`) or else from the tensor shapes. Explicit arguments are checked against the file.
    Returns (module, {'params': ..., 'batch_stats': ...}), all float32 (half-precision files are cast).

    Raises:
      FileNotFoundError: no such file.
      ValueError: unreadable file, arguments that contradict it, or no width that fits.
      convert.WeightMismatchError: tensors that do not fit the model (missing, unexpected, mis-shaped keys).
    """
    path = Path(os.path.abspath(path))
    state, metadata = _read(path)
    head = state.get("classifier.1.weight")
    if head is not None and head.ndim == 2:
        if num_classes is not None and num_classes != head.shape[0]:
            raise ValueError(f"num_classes={num_classes} given but MobileNetV2 checkpoint {path} has "
                             f"{head.shape[0]} classes (classifier.1.weight {tuple(head.shape)})")
        num_classes = int(head.shape[0])
    elif num_classes is None:
        raise convert.WeightMismatchError(f"MobileNetV2 checkpoint {path} has no 2-D classifier.1.weight, so its "
                                          "class count is unknown; is it a torchvision mobilenet_v2 state dict?")
    stored = metadata.get("width_mult")
    if stored is not None:
        try:
            stored = float(stored)
        except ValueError:
            raise ValueError(f"MobileNetV2 checkpoint {path} has unreadable width_mult metadata {stored!r}") from None
    if width_mult is not None and stored is not None and not math.isclose(width_mult, stored):
        raise ValueError(f"width_mult={width_mult} given but MobileNetV2 checkpoint {path} was saved with "
                         f"width_mult={stored}")
    if width_mult is None:
        width_mult = stored if stored is not None else _infer_width(state, num_classes, path)
    config = MobileNetV2Config(num_classes=num_classes, width_mult=width_mult)
    table = key_table(config)
    missing, unexpected, misshaped = _mismatches(state, table)
    if missing or unexpected or misshaped:
        raise convert.WeightMismatchError(convert.mismatch_message(
            f"MobileNetV2 checkpoint {path} does not fit mobilenet_v2(width_mult={width_mult}, "
            f"num_classes={num_classes})", missing, unexpected, misshaped))
    flat = {}
    for key, (collection, flax_path, _) in table.items():
        arr = state[key]
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"MobileNetV2 checkpoint {path}: {key} has dtype {arr.dtype}, expected floating point")
        flat[(collection,) + flax_path] = np.ascontiguousarray(_torch_to_flax(arr.astype(np.float32)))
    module = MobileNetV2(config, **({} if dtype is None else {"dtype": dtype}))
    return module, jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat))


def save_mobilenet_v2(path: str | os.PathLike, module: MobileNetV2, variables: dict, *, dtype=np.float32) -> None:
    """Write `variables` as a torchvision `mobilenet_v2` state dict (one .safetensors file, atomically).

    `dtype` is the float dtype written (float16 makes small checkpoints); `num_batches_tracked` is written as
    int64 zeros so torchvision's strict `load_state_dict` accepts the file. Metadata records `width_mult`.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"save_mobilenet_v2: dtype={dtype} is not supported; use float32 or float16")
    config = module.config
    flat = traverse_util.flatten_dict({c: variables.get(c, {}) for c in ("params", "batch_stats")})
    table = key_table(config)
    state, wanted = {}, {}
    for key, (collection, flax_path, torch_shape) in table.items():
        wanted[(collection,) + flax_path] = key
        arr = flat.get((collection,) + flax_path)
        if arr is not None:
            state[key] = np.ascontiguousarray(_flax_to_torch(np.asarray(arr, dtype=np.float32)).astype(dtype))
    missing, _, misshaped = _mismatches(state, table)
    unexpected = ["/".join(p) for p in flat if p not in wanted]
    if missing or unexpected or misshaped:
        raise convert.WeightMismatchError(convert.mismatch_message(
            f"variables do not fit mobilenet_v2(width_mult={config.width_mult}, num_classes={config.num_classes})",
            missing, unexpected, misshaped))
    for key in [key for key in table if key.endswith(".running_var")]:
        state[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    with io.atomic_path(path) as tmp:
        safetensors.numpy.save_file(state, str(tmp), metadata={"format": "pt", "width_mult": repr(config.width_mult)})
