"""Training data of the toy models: rendered scenes cached on disk, and batches that depend only on the step (so a
resumed run sees exactly the data an uninterrupted one would)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from jaxprobe import io
from jaxprobe.toy.world import render


def scene_data(workdir, *, num_images: int, resolution: int, seed_offset: int = 0,
               fields: tuple[str, ...] = ("rgb", "caption")) -> dict:
    """Rendered toy scenes of seeds seed_offset.. (the `render.render_batch` entries named in `fields`, e.g. rgb
    uint8 [N,H,W,3], caption list[str], depth, salient), cached in `workdir/scenes_*.npz`."""
    path = Path(workdir) / f"scenes_{'-'.join(fields)}_{resolution}px_{seed_offset}_{num_images}.npz"
    if not path.exists():
        batch = render.render_batch(list(range(seed_offset, seed_offset + num_images)), resolution=resolution)
        with io.atomic_path(path) as tmp:
            np.savez(tmp, **{k: np.asarray(batch[k]) for k in fields})
    with np.load(path) as data:
        return {k: [str(s) for s in data[k]] if k == "caption" else data[k] for k in fields}


def to_unit(rgb):
    """uint8 [N,H,W,3] -> float32 in [-1, 1], the range the VAE and the labelers take. A numpy array stays numpy
    (data preparation); a jax array, traced or not, stays jax (inside a jitted step)."""
    return rgb.astype(np.float32) / 127.5 - 1.0


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The batch for `step`: a fixed per-epoch permutation, so data depends only on the step (exact resume)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]


def random_crops(images: np.ndarray, size: int, seed) -> np.ndarray:
    """One random size x size crop of each [N,H,W,C] image, at offsets that are multiples of 8 (so the VAE's
    downsampling grid stays aligned). The VAE is convolutional: training on crops is ~4x cheaper at half size and
    it still runs on whole images, as SD's VAE trained at 256 runs at 512."""
    n, h, w, _ = images.shape
    if size == h == w:
        return images
    if size > min(h, w) or size % 8:
        raise ValueError(f"crop_size must be a multiple of 8 and at most {min(h, w)}; got {size}")
    rng = np.random.default_rng(seed)
    ys, xs = (rng.integers(0, (d - size) // 8 + 1, n) * 8 for d in (h, w))
    return np.stack([im[y:y + size, x:x + size] for im, y, x in zip(images, ys, xs)])


def map_batches(fn: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`fn` (a jitted model call) over `x` in slices of `batch_size`, concatenated on the host: a whole data set
    through a model without holding its activations on the device at once."""
    return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
