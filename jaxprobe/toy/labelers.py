"""Toy-world stand-ins for the paper's labelers (MiDaS depth, a salient-object network): one small Flax U-Net with a
saliency head and a depth head, trained on the toy world's exact ground truth, so probes can label *generated*
images the way the paper does.

Network: the 64x64 image is folded 2x2 into channels (space-to-depth, lossless), encoded at 32, 16, 8, 4 px
(the 4x4 bottleneck sees the whole image: the salient object is the *largest* one, a global property), decoded
with U-Net skips back to 32 px, and unfolded (depth-to-space) to per-pixel outputs. No convolution runs at full
resolution, which is what keeps a training step cheap on a CPU, yet edges stay pixel-exact because the folded
input reaches the last layer.

Targets: saliency logits (BCE against the exact mask); depth is *absolute* camera-space depth z-scored with one
global mean/std of the training set (Huber, delta 1, as the paper's depth probe). The toy camera has a fixed field
of view and a narrow height range, so absolute depth is learnable and no scale-and-shift alignment is needed;
`Labelers.label` returns depth back in scene units (sky ~ render.FAR), and evaluation z-scores prediction and
truth with the same training statistics.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import io, train
from jaxprobe.models import convert
from jaxprobe.models.config import Config, read_json
from jaxprobe.probing import metrics
from jaxprobe.toy import data as toy_data

CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME = "config.json", "model.safetensors", "metrics.json"


@dataclasses.dataclass(frozen=True)
class LabelerConfig(Config):
    """What config.json holds: the architecture, the image size it was trained at, and the depth z-score stats."""
    EXPORT = {"_class_name": "ToyLabelers"}

    channels: tuple[int, ...] = (16, 32, 64, 64)
    resolution: int = 64
    depth_mean: float = 0.0
    depth_std: float = 1.0


def space_to_depth(x: jax.Array, f: int) -> jax.Array:
    """[N,H,W,C] -> [N,H/f,W/f,f*f*C]: each f x f block of pixels becomes one pixel's channels."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // f, f, w // f, f, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // f, w // f, f * f * c)


def depth_to_space(x: jax.Array, f: int) -> jax.Array:
    """[N,H,W,f*f*C] -> [N,H*f,W*f,C], the inverse of `space_to_depth`."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, f, f, c // (f * f))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * f, w * f, c // (f * f))


class ConvBlock(nn.Module):
    """3x3 conv (optionally strided) -> GroupNorm -> SiLU, NHWC."""
    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, (3, 3), strides=self.stride, padding="SAME")(x)
        return nn.silu(nn.GroupNorm(num_groups=math.gcd(8, self.features))(x))


class LabelNet(nn.Module):
    """Images in [-1, 1] [N,H,W,3] (H, W divisible by 2**len(channels)) -> (saliency logits [N,H,W],
    z-scored depth [N,H,W]). The config travels with the module (as for the other jaxprobe models), so saving
    needs only (module, params)."""
    config: LabelerConfig

    @nn.compact
    def __call__(self, x):
        channels = self.config.channels
        folded = space_to_depth(x, 2)
        h, skips = folded, []
        for i, ch in enumerate(channels):
            h = ConvBlock(ch, stride=1 if i == 0 else 2)(h)
            h = ConvBlock(ch)(h)
            skips.append(h)
        for ch, skip in zip(channels[-2::-1], skips[-2::-1]):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = ConvBlock(ch)(jnp.concatenate([h, skip], axis=-1))
        h = ConvBlock(channels[0])(jnp.concatenate([h, folded], axis=-1))  # refine edges with the exact pixels
        out = nn.Conv(2 * 4, (3, 3), padding="SAME")(jnp.concatenate([h, folded], axis=-1))
        out = depth_to_space(out, 2)
        return out[..., 0], out[..., 1]


# ------------------------------------------------------------------------------------------- data and training
def labelled_scenes(workdir, *, num_images: int, resolution: int, seed_offset: int = 0) -> dict:
    """Toy scenes of seeds seed_offset.. with their labels (cached by `jaxprobe.toy.data.scene_data`):
    rgb uint8 [N,R,R,3], depth float32 [N,R,R] (scene units, FAR for the sky), salient bool [N,R,R]."""
    return toy_data.scene_data(workdir, num_images=num_images, resolution=resolution, seed_offset=seed_offset,
                               fields=("rgb", "depth", "salient"))


def soft_dice_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over images of 1 - soft Dice, logits/mask [B,H,W] -> scalar. Pixel BCE alone is dominated by the
    background; this term weighs each image's mask equally, whatever its size, as the IoU metric does."""
    p, t = jax.nn.sigmoid(logits), mask.astype(logits.dtype)
    inter = jnp.sum(p * t, axis=(1, 2))
    return jnp.mean(1.0 - (2.0 * inter + 1.0) / (jnp.sum(p, axis=(1, 2)) + jnp.sum(t, axis=(1, 2)) + 1.0))


def loss_fn(model: LabelNet, huber_delta: float = 1.0, dice_weight: float = 1.0, flip: bool = True):
    """(params, (rgb uint8 [B,H,W,3], depth z-scored [B,H,W], salient bool [B,H,W]), key) ->
    (BCE + dice_weight * soft Dice loss + Huber, parts).

    With `flip`, each image is mirrored left-right with probability 1/2 (a symmetry of the toy world: areas,
    depths and the sun's azimuth range are all mirror-symmetric)."""
    def fn(params, batch, key):
        rgb, depth, salient = batch
        flip_mask = jax.random.bernoulli(key, 0.5 if flip else 0.0, (rgb.shape[0], 1, 1))
        x = jnp.where(flip_mask[..., None], rgb[:, :, ::-1], rgb)
        depth = jnp.where(flip_mask, depth[:, :, ::-1], depth)
        salient = jnp.where(flip_mask, salient[:, :, ::-1], salient)
        logits, pred = model.apply({"params": params}, toy_data.to_unit(x))
        bce = optax.sigmoid_binary_cross_entropy(logits, salient.astype(jnp.float32)).mean()
        huber = optax.huber_loss(pred, depth, delta=huber_delta).mean()
        dice = soft_dice_loss(logits, salient)
        return bce + dice_weight * dice + huber, {"bce": bce, "dice": dice, "huber": huber}
    return fn


@dataclasses.dataclass
class Labelers:
    """Trained labelers. `label(images)` maps uint8 [N,R,R,3] (R = config.resolution) to
    (salient bool [N,R,R], depth float32 [N,R,R] in scene units)."""
    module: LabelNet
    params: Any
    _predict: Any = dataclasses.field(init=False, repr=False)

    @property
    def config(self) -> LabelerConfig:
        return self.module.config

    def __post_init__(self):
        c = self.config

        def predict(params, rgb):
            logits, z = self.module.apply({"params": params}, toy_data.to_unit(rgb))
            return logits > 0, z * c.depth_std + c.depth_mean

        self._predict = jax.jit(predict)

    def label(self, images, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Label images in fixed-size batches (the last one padded, so one compilation serves any N)."""
        images = np.asarray(images)
        r = self.config.resolution
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (r, r, 3) or len(images) == 0:
            raise ValueError(f"label() needs uint8 images [N, {r}, {r}, 3] with N >= 1 (the resolution these "
                             f"labelers were trained at), got {images.dtype} {images.shape}")
        n, b = len(images), batch_size
        padded = np.concatenate([images, np.zeros((-n % b, r, r, 3), np.uint8)])
        outs = [jax.device_get(self._predict(self.params, padded[i:i + b])) for i in range(0, len(padded), b)]
        salient = np.concatenate([o[0] for o in outs])[:n]
        depth = np.concatenate([o[1] for o in outs])[:n].astype(np.float32)
        return salient, depth


def evaluate(labelers: Labelers, data: dict) -> dict:
    """Held-out scores, means over images: saliency IoU and Dice; depth RMSE, Spearman and Pearson on depth
    z-scored with the labelers' training statistics. `data` as from `labelled_scenes`."""
    salient, depth = labelers.label(data["rgb"])
    c = labelers.config
    pred_z, true_z = (metrics.zscore(d, c.depth_mean, c.depth_std) for d in (depth, data["depth"]))
    scores = {"saliency_iou": metrics.iou(salient, data["salient"]),
              "saliency_dice": metrics.dice(salient, data["salient"]),
              "depth_rmse": metrics.rmse(pred_z, true_z),
              "depth_spearman": metrics.spearman(pred_z, true_z),
              "depth_pearson": metrics.pearson(pred_z, true_z)}
    out = {"num_images": len(data["rgb"]), "min_saliency_iou": float(scores["saliency_iou"].min())}
    out.update({k: float(np.mean(v)) for k, v in scores.items()})
    return out


def train_labelers(c, workdir) -> tuple[Labelers, dict]:
    """Train on toy scenes 0..c.num_images-1, evaluate (EMA weights) on c.num_eval held-out scenes from
    c.eval_seed_offset; returns the labelers and their held-out metrics (plus training wall time)."""
    start = time.perf_counter()
    workdir = Path(workdir)
    data = labelled_scenes(workdir, num_images=c.num_images, resolution=c.resolution)
    mean, std = metrics.depth_stats(data["depth"])
    depth_z = metrics.zscore(data["depth"], mean, std)
    config = LabelerConfig(channels=tuple(c.channels), resolution=c.resolution, depth_mean=mean, depth_std=std)
    model = LabelNet(config)
    params = model.init(jax.random.key(c.seed), jnp.zeros((1, c.resolution, c.resolution, 3)))["params"]
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.lr, min(100, c.num_steps // 10), c.num_steps),
                      weight_decay=c.weight_decay)

    def batch_fn(s):
        idx = toy_data.batch_indices(s, len(data["rgb"]), c.batch_size, c.seed)
        return data["rgb"][idx], depth_z[idx], data["salient"][idx]

    loss = loss_fn(model, c.huber_delta, c.dice_weight, c.flip)
    state, history = train.fit(workdir=workdir, params=params, loss_fn=loss, batch_fn=batch_fn, optimizer=opt,
                               num_steps=c.num_steps, ema_decay=c.ema_decay, seed=c.seed,
                               checkpoint_every=c.checkpoint_every, desc="toy labelers")
    labelers = Labelers(model, jax.device_get(state.ema_params))
    held_out = labelled_scenes(workdir, num_images=c.num_eval, resolution=c.resolution,
                               seed_offset=c.eval_seed_offset)
    scores = {**evaluate(labelers, held_out), "eval_seed_offset": c.eval_seed_offset,
              "train_images": c.num_images, "train_steps": c.num_steps, "final_train_loss": history[-1]["loss"],
              "wall_time_s": round(time.perf_counter() - start, 1)}
    return labelers, scores


# ------------------------------------------------------------------------------------------------ save / load
def save_labelers(directory, model: LabelNet, params, scores: dict) -> None:
    """Write config.json (model.config), model.safetensors (params under '/'-joined Flax paths) and metrics.json
    (held-out scores), atomically: a temp directory renamed over `directory`."""
    with io.atomic_dir(directory) as tmp:
        io.write_text(tmp / CONFIG_NAME, json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
        io.write_safetensors(tmp / WEIGHTS_NAME, convert.params_to_flax_tensors(jax.device_get(params)))
        io.write_json(tmp / METRICS_NAME, scores)


def load_labelers(directory) -> Labelers:
    """Labelers from a directory written by `save_labelers`; the weights must match the config's parameter tree."""
    directory = Path(os.path.abspath(directory))
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a labelers directory: missing {', '.join(missing)}")
    model = LabelNet(LabelerConfig.from_dict(read_json(directory / CONFIG_NAME, "labelers config")))
    tensors, _ = io.read_safetensors(directory / WEIGHTS_NAME, what="labeler weights")
    r = model.config.resolution
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, r, r, 3)))["params"]
    params = convert.flax_tensors_to_params(tensors, template, source=str(directory / WEIGHTS_NAME),
                                            model=f"toy labelers built from {directory / CONFIG_NAME}")
    return Labelers(model, params)
