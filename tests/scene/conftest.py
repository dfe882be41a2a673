"""The scene tests' tiny random SD pipeline (built once with diffusers PyTorch, the parity reference), its prompts
and labels for its generated images, as a user of configs/scene/sd_v1_paper.py supplies them."""
import numpy as np
import pytest
from tiny_sd import build_torch_pipeline

PROMPTS = ["a red ball", "blue cube", "a green cone", "two cubes", "a sphere", "red cone", "big ball", "a cube"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """pipeline dir + prompts.txt + labels/ (8 images) + few_labels/ (7 images: one short)."""
    directory = tmp_path_factory.mktemp("tiny_sd")
    build_torch_pipeline(directory)
    (directory / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    rng = np.random.default_rng(0)
    for name, rows in (("labels", 8), ("few_labels", 7)):
        (directory / name).mkdir()
        np.save(directory / name / "saliency.npy", rng.random((rows, 16, 16)) < 0.4)
        np.save(directory / name / "depth.npy", rng.normal(size=(rows, 16, 16)).astype(np.float32))
    return directory
