"""The generated images of a sweep, written out to be labelled elsewhere: `<workdir>/images/<row>.png` and
`images/index.csv` with one row per image (row, file, split, seed, prompt). Labels brought back must follow this
index row for row; a copy of index.csv beside them is how the label stage checks their order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe import io

INDEX = "index.csv"
COLUMNS = ["row", "file", "split", "seed", "prompt"]
KEYS = ("row", "file", "seed", "prompt")  # what identifies an image


def rows(prompts, seeds, num_train: int) -> list[dict[str, str]]:
    """The index rows, as strings (what `io.read_csv` gives back), of images made from `prompts` with `seeds`."""
    return [{"row": str(i), "file": f"{i:05d}.png", "split": "train" if i < num_train else "test",
             "seed": str(seed), "prompt": prompt} for i, (prompt, seed) in enumerate(zip(prompts, seeds))]


def write(directory: Path, images: np.ndarray, index: list[dict[str, str]]) -> None:
    """uint8 images [N, H, W, 3] as PNGs named by the index, then the index itself (last: a directory with an
    index is complete). Images already written are not written again."""
    for row, image in zip(index, images):
        if not (directory / row["file"]).exists():
            io.write_png(directory / row["file"], image)
    io.write_csv(directory / INDEX, index, COLUMNS)


def check_order(path: Path, index: list[dict[str, str]]) -> int:
    """`path` (the user's copy of index.csv beside their labels) must list the sweep's images in the sweep's order;
    it may list more after them (labels made once for a longer prompt list). Returns how many it lists. The split
    column is not compared: it follows config.num_train."""
    given = io.read_csv(path)
    missing = [k for k in KEYS if given and k not in given[0]]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} of {INDEX}; copy the sweep's "
                         f"images/{INDEX} there unchanged")
    if len(given) < len(index):
        raise ValueError(f"{path} lists {len(given)} images; the sweep has {len(index)}")
    for want, got in zip(index, given):
        diff = [k for k in KEYS if got[k] != want[k]]
        if diff:
            raise ValueError(f"{path} row {want['row']} differs from the sweep's images/{INDEX} in "
                             f"{', '.join(diff)} ({', '.join(f'{k}={got[k]!r}, want {want[k]!r}' for k in diff)}): "
                             "the labels are in another order or for other images")
    return len(given)
