"""The scene tests' tiny random SD pipeline (built once with diffusers PyTorch, the parity reference), its prompts
and labels for its generated images, as a user of configs/scene/sd_v1_paper.py supplies them."""
import numpy as np
import pytest
from tiny_sd import PROMPTS, build_torch_pipeline, write_index

from jaxprobe import hooks, jobs
from jaxprobe.models import load_pipeline
from jaxprobe.probing import saved
from jaxprobe.scene import capture
from jaxprobe.scene.tasks import SALIENCY
from jaxprobe.testing import random_linear_probes



@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """pipeline dir + prompts.txt + labels/ (8 images) + few_labels/ (7 images: one short), each with the index.csv
    of the images they label (seeds 0..)."""
    directory = tmp_path_factory.mktemp("tiny_sd")
    build_torch_pipeline(directory)
    (directory / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    rng = np.random.default_rng(0)
    for name, rows in (("labels", 8), ("few_labels", 7)):
        (directory / name).mkdir()
        np.save(directory / name / "saliency.npy", rng.random((rows, 16, 16)) < 0.4)
        np.save(directory / name / "depth.npy", rng.normal(size=(rows, 16, 16)).astype(np.float32))
        write_index(directory / name, PROMPTS[:rows])
    return directory


EDIT_STEPS = 3  # the sampling steps the probes_dir probes were fitted at


@pytest.fixture(scope="session")
def probes_dir(tiny_dir, tmp_path_factory):
    """A sweep workdir's probes/ for the tiny pipeline: random linear saliency probes of its two last up-block
    attn1 layers at steps 0 and 1."""
    directory = tmp_path_factory.mktemp("sweep")
    pipe = load_pipeline(tiny_dir)
    layers = hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS)[-2:]
    saved.save(saved.path_for(directory / "probes", "trained", SALIENCY), saved.SavedProbes(
        "trained", SALIENCY, "linear", random_linear_probes(pipe, layers, (0, 1), np.random.default_rng(0)),
        meta={"resolution": 16, "num_inference_steps": EDIT_STEPS,
              "pipeline_sha256": jobs.weights_fingerprint(tiny_dir)}))
    return directory, layers


@pytest.fixture
def paper_config_on(tmp_path):
    """make(build, paper, **fixed) -> (prompts, config(**changes)): a structured stand-in built by `build`
    (`jaxprobe.testing`) in tmp_path/pipeline, 8 prompts, and `paper`'s get_config() with only the directories, a
    64^2 size, 4/1/4 images, 3 probe epochs, `fixed` and the call's changes set, as a user of that paper config would
    run it on a small machine."""
    def make(build, paper, **fixed):
        build(tmp_path / "pipeline")
        prompts = [f"a photo of object {i}" for i in range(8)]
        (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")

        def config(**changes):
            c = paper.get_config()
            c.pipeline_dir, c.prompts_file, c.resolution = str(tmp_path / "pipeline"), str(tmp_path / "prompts.txt"), 64
            c.num_train, c.num_val, c.num_test, c.probe.epochs = 4, 1, 4, 3
            for key, value in {**fixed, **changes}.items():
                c[key] = value
            return c

        return prompts, config

    return make
