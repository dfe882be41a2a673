"""The sweep's data: its prompts (toy-world captions, or a prompts file) and, for encoded data, the rendered scenes
with their exact labels; and the image index the capture writes, known from the config alone."""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxprobe import jobs
from jaxprobe.scene import image_index
from jaxprobe.scene.captions import toy_captions


@dataclasses.dataclass
class Dataset:
    """What the probes learn from: prompts, and (encoded mode) the real images with their exact labels."""

    prompts: list[str]
    images: np.ndarray | None = None  # uint8 [N, H, W, 3], encoded mode only
    salient: np.ndarray | None = None  # bool [N, H, W]
    depth: np.ndarray | None = None  # float32 [N, H, W], raw depth (z-scored later with train statistics)


def make_dataset(c) -> Dataset:
    """Prompts (toy-world captions, or a prompts file) and, for encoded data, the scenes with exact labels."""
    prompts = sweep_prompts(c)
    if c.data == "generated":  # captions only: no need to render
        return Dataset(prompts=prompts)
    from jaxprobe.toy.world import render
    scenes = render.render_batch(list(range(c.scene_seed_offset, c.scene_seed_offset + len(prompts))), c.resolution)
    return Dataset(prompts=prompts, images=scenes["rgb"], salient=scenes["salient"], depth=scenes["depth"])


def sweep_prompts(c, tokenize=None) -> list[str]:
    """The prompts file's first N lines, or the captions of toy-world scenes scene_seed_offset .. + N; `tokenize`
    (the pipeline's) checks that a file's prompts fit the text encoder."""
    return jobs.prompts(c, c.num_train + c.num_test, toy_captions(c), tokenize=tokenize,
                        what="config.num_train + config.num_test =")


def expected_index(c) -> list[dict[str, str]]:
    """images/index.csv as the capture writes it (known from the config alone)."""
    prompts = sweep_prompts(c)
    return image_index.rows(prompts, [c.seed + i for i in range(len(prompts))], c.num_train)
