"""The image pool that concept sets are drawn from: toy concept cards (exact labels, so CLIP's labels can be
checked), or real images from a folder or a tfds data set (CLIP scores only, as in the paper)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxprobe.validate import check_choice

SOURCES = ("toycards", "folder", "tfds")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_RESOLUTION = 32  # MobileNetV2 downsamples 32x: a smaller image has no spatial extent left at features_18


@dataclasses.dataclass
class Pool:
    images: np.ndarray  # uint8 [P, R, R, 3]
    truth: dict[str, np.ndarray] | None = None  # {group: concept name per image}, toy cards only
    known: dict[str, tuple[str, ...]] | None = None  # {group: the concepts `truth` can name}


def load_pool(c) -> Pool:
    """The pool of config `c.data` (source, num_images, ...) at `c.resolution`."""
    check_choice("config.data.source", c.data.source, SOURCES)
    if c.resolution < MIN_RESOLUTION:
        raise ValueError(f"config.resolution={c.resolution} is below {MIN_RESOLUTION} px, MobileNetV2's stride")
    if c.data.source == "toycards":
        from jaxprobe.toy.cards import render
        cards = render.render_cards(range(c.data.seed_offset, c.data.seed_offset + c.data.num_images), c.resolution)
        return Pool(cards["rgb"], {g: cards[g] for g in render.GROUPS}, dict(render.GROUPS))
    if c.data.source == "folder":
        return Pool(check_images(_folder_images(Path(c.data.path), c.data.num_images, c.resolution), c.resolution))
    return Pool(check_images(_tfds_images(c.data, c.resolution), c.resolution))


def check_images(images: np.ndarray, resolution: int, what: str = "pool images") -> np.ndarray:
    """uint8 [P, R, R, 3] with R = `resolution`, or one clear error (the probed model was trained at R)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3) or images.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 [N, {resolution}, {resolution}, 3] (config.resolution), got "
                         f"{images.dtype} {tuple(images.shape)}")
    if not len(images):
        raise ValueError(f"no {what}")
    return images


def _fit_square(image, resolution: int) -> np.ndarray:
    """A PIL image -> uint8 [R, R, 3]: the shorter side resized to R, centre-cropped (torchvision's eval transform)."""
    from PIL import Image
    image = image.convert("RGB")
    scale = resolution / min(image.size)
    w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)))


def _folder_images(path: Path, limit: int, resolution: int) -> np.ndarray:
    from PIL import Image
    if not path.is_dir():
        raise FileNotFoundError(f"config.data.path={str(path)!r} is not a directory of images")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit or None]
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {path}")
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(_fit_square(im, resolution))
    return np.stack(out)


def _tfds_images(d, resolution: int) -> np.ndarray:
    """The first `num_images` of split `d.split` of the prepared tfds data set `d.name` (feature `d.feature`)."""
    import tensorflow_datasets as tfds
    from PIL import Image
    source = tfds.data_source(d.name, split=d.split, data_dir=d.tfds_dir or None)
    n = min(len(source), d.num_images or len(source))
    return np.stack([_fit_square(Image.fromarray(np.asarray(source[i][d.feature])), resolution) for i in range(n)])
