"""The staged sweep end to end: labels made outside the job from the exported images reproduce the in-sweep labels'
results exactly, and configs/scene/sd_v1_paper.py runs capture -> user label files -> fit -> report on a random
pipeline with SD v1's block structure."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from configs.scene import sd_v1_paper, toy_probe
from jaxprobe import io, testing
from jaxprobe.scene import image_index, labels, sweep

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # whole sweeps


def _toy_config(**changes):
    c = toy_probe.get_config()
    c.pipeline_dir, c.labelers_dir = str(ROOT / "assets/toy_pipeline"), str(ROOT / "assets/toy_labelers")
    c.num_train, c.num_val, c.num_test, c.batch_size, c.num_inference_steps, c.steps = 6, 2, 6, 6, 4, (1, 3)
    c.layers, c.models, c.probe.epochs = ("up_blocks_3/*attn1/to_out_0",), ("trained", "randomized"), 3
    for key, value in changes.items():
        c[key] = value
    return c


def _exported_images(workdir: Path) -> tuple[list[dict], np.ndarray]:
    index = io.read_csv(workdir / "images" / image_index.INDEX)
    return index, np.stack([io.read_png(workdir / "images" / row["file"]) for row in index])


def test_labels_made_from_the_exported_images_reproduce_the_in_sweep_results(tmp_path):
    """In one job: toy labelers for saliency, a (random) DPT for depth. In stages: the same two models run by the user
    on the PNGs the capture stage wrote, brought back as files."""
    dpt_dir = testing.random_dpt(tmp_path / "dpt")
    c = _toy_config(depth_model_dir=str(dpt_dir))
    in_sweep = sweep.run(c, tmp_path / "all")

    staged = tmp_path / "staged"
    sweep.run(_toy_config(stage="capture", labelers_dir=""), staged)
    index, images = _exported_images(staged)
    user = tmp_path / "user_labels"
    user.mkdir()
    salient, _ = labels.from_labelers(c.labelers_dir, images)
    np.save(user / "saliency.npy", salient)
    np.save(user / "depth.npy", labels.from_depth_model(dpt_dir, images, c.batch_size))
    shutil.copy(staged / "images" / image_index.INDEX, user)
    for stage in ("label", "fit", "report"):
        out = sweep.run(_toy_config(stage=stage, labelers_dir="", labels_dir=str(user)), staged)
    assert out == in_sweep
    assert (staged / "results.csv").read_bytes() == (tmp_path / "all" / "results.csv").read_bytes()
    for task in ("saliency", "depth"):
        np.testing.assert_array_equal(np.load(staged / "labels" / f"{task}.npy"),
                                      np.load(tmp_path / "all" / "labels" / f"{task}.npy"))
    assert len(index) == 12 and np.isfinite(np.load(staged / "labels" / "depth.npy")).all()


def test_the_paper_config_runs_in_stages_on_an_sd_v1_structured_pipeline(tmp_path, paper_config_on):
    """configs/scene/sd_v1_paper.py with only the directories, the size and the image count changed."""
    prompts, config = paper_config_on(testing.sd_v1_structured_pipeline, sd_v1_paper)

    workdir = tmp_path / "run"
    sweep.run(config(stage="capture"), workdir)
    index, images = _exported_images(workdir)
    assert [r["prompt"] for r in index] == prompts and images.shape == (8, 64, 64, 3)

    user = tmp_path / "labels"  # a segmentation (instance ids) and depth, as the user's own models give them
    user.mkdir()
    rng = np.random.default_rng(0)
    segmentation = rng.integers(0, 4, size=(8, 64, 64)).astype(np.int32)
    np.save(user / "segmentation.npy", segmentation)
    np.save(user / "depth.npy", rng.normal(size=(8, 32, 32)).astype(np.float32))  # a multiple of the token grids
    shutil.copy(workdir / "images" / image_index.INDEX, user)
    for stage in ("label", "fit", "report"):
        summary = sweep.run(config(stage=stage, labels_dir=str(user)), workdir)

    np.testing.assert_array_equal(np.load(workdir / "labels" / "saliency.npy"),
                                  labels.largest_instance(segmentation))
    rows = io.read_csv(workdir / "results.csv")
    trained_layers = {r["layer"] for r in rows if r["model"] == "trained"}
    assert len(trained_layers) == 16  # SD v1's attn1 layers
    assert {r["step"] for r in rows} == {str(s) for s in range(15)}
    assert {r["model"] for r in rows} == {"trained", "randomized", "vae", "vae_x0", "prior", "ceiling"}
    assert set(summary["trained"]) == {"saliency", "depth"}
    assert (workdir / "figures" / "predictions.png").stat().st_size > 1000
