"""The scene study's labels per image: the salient-object mask and depth, z-scored with the train split's global
mean and std as the paper does. For generated images they come from labelers (the paper: a saliency network and
MiDaS; here the shipped toy labelers) or from the user's files, in prompt order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.probing import metrics


def from_files(directory: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """User-supplied labels: `saliency.npy` (bool/0-1 [N,H,W]) and `depth.npy` (float [N,H,W]), as for SD v1."""
    out = []
    for name in ("saliency.npy", "depth.npy"):
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"no {name} in {directory}: labels are saliency.npy and depth.npy, [N, H, W]")
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 3 or arr.shape[0] < n:
            raise ValueError(f"{path} has shape {arr.shape}; need [N>={n}, H, W]")
        out.append(arr[:n])
    return out[0], out[1].astype(np.float32)


def from_labelers(directory, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shipped toy labelers' (salient mask, raw depth) for uint8 images [N, H, W, 3]."""
    from jaxprobe.toy import labelers
    return labelers.load_labelers(directory).label(images)


def prepare(salient, depth, num_train: int) -> dict[str, np.ndarray]:
    """{'saliency': bool [N,H,W], 'depth': float32 [N,H,W] z-scored with the first num_train images' statistics}."""
    mean, std = metrics.depth_stats(depth[:num_train])
    return {"saliency": np.asarray(salient, bool), "depth": metrics.zscore(depth, mean, std)}
