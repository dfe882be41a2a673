"""The scene study on SDXL: configs/scene/sdxl_paper.py runs capture -> user label files -> fit -> report on
`jaxprobe.testing.sdxl_structured_pipeline`, and the paper's intervention edits it with the probes that sweep
fitted, all through the one sampler and hook mechanism."""
import shutil

import numpy as np
import pytest

from configs.scene import sd_v1_intervene, sdxl_paper
from jaxprobe import io, testing
from jaxprobe.scene import edit_study, image_index, sweep

pytestmark = pytest.mark.slow  # a whole staged sweep and an intervention


def test_the_sdxl_paper_config_sweeps_and_intervenes_on_an_sdxl_structured_pipeline(tmp_path, paper_config_on):
    _, config = paper_config_on(testing.sdxl_structured_pipeline, sdxl_paper, batch_size=4)
    pipe_dir = tmp_path / "pipeline"

    workdir = tmp_path / "run"
    sweep.run(config(stage="capture"), workdir)
    user = tmp_path / "labels"
    user.mkdir()
    rng = np.random.default_rng(0)
    saliency = np.zeros((8, 64, 64), bool)
    saliency[:, 16:40, 8:32] = True  # an object the edit can move
    np.save(user / "saliency.npy", saliency)
    np.save(user / "depth.npy", rng.normal(size=(8, 32, 32)).astype(np.float32))
    shutil.copy(workdir / "images" / image_index.INDEX, user)
    for stage in ("label", "fit", "report"):
        summary = sweep.run(config(stage=stage, labels_dir=str(user)), workdir)
    rows = io.read_csv(workdir / "results.csv")
    trained_layers = {r["layer"] for r in rows if r["model"] == "trained"}
    assert len(trained_layers) == 22  # the stand-in's attn1 layers, SDXL's module paths
    assert "down_blocks_2/attentions_1/transformer_blocks_1/attn1/to_out_0" in trained_layers
    assert {r["model"] for r in rows} == {"trained", "randomized", "vae", "vae_x0", "prior", "ceiling"}
    assert set(summary["trained"]) == {"saliency", "depth"}

    c = sd_v1_intervene.get_config()
    c.pipeline_dir, c.labels_dir, c.probes = str(pipe_dir), str(user), str(workdir)
    c.prompts_file, c.resolution, c.num_images, c.shifts_per_image, c.batch_size = str(tmp_path / "prompts.txt"), \
        64, 2, 1, 2
    c.steps, c.iterations, c.lr, c.controls = (0, 1), 8, 0.05, ("null",)
    edit_study.run(c, tmp_path / "edit")
    edits = io.read_csv(tmp_path / "edit" / "edits.csv")
    assert sorted(r["image"] for r in edits) == sorted(f"{run}/{k}.png" for run in ("no_edit", "edited", "null")
                                                       for k in range(2))
    for k in range(2):
        plain, edited = (io.read_png(tmp_path / "edit" / run / f"{k}.png") for run in ("no_edit", "edited"))
        assert plain.shape == (64, 64, 3) and not np.array_equal(plain, edited)
