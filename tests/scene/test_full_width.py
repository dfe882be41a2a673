"""Real-size module paths and loading: a full-width SD v1 directory that diffusers writes (random weights, 4.3 GB)
loads into jaxprobe's models, its UNet agrees with diffusers' at that width, and one capture batch of
configs/scene/sd_v1_paper.py runs on it at 64x64 with the job's memory estimate printed first."""
import gc

import jax
import numpy as np
import pytest

from benchmarks import device
from configs.scene import sd_v1_paper
from jaxprobe import hooks
from jaxprobe.models import load_pipeline
from jaxprobe.probing import store
from jaxprobe.scene import capture, sweep

# A 4.3 GB pipeline written, loaded twice and compiled: 13 GiB of peak RSS, so it runs after the other slow tests
pytestmark = [pytest.mark.slow, pytest.mark.alone]


def full_width(directory):
    device.write_pipeline(directory, {"size": "sd_v1"})


def test_a_full_width_sd_v1_loads_matches_diffusers_and_captures_one_batch(tmp_path, paper_config_on, capsys):
    torch = pytest.importorskip("torch")
    import diffusers

    _, config = paper_config_on(full_width, sd_v1_paper, num_train=2, num_val=1, num_test=2)
    c = config(stage="capture")
    pipe = load_pipeline(c.pipeline_dir)
    reference = diffusers.UNet2DConditionModel.from_pretrained(f"{c.pipeline_dir}/unet").eval()
    count = sum(p.size for p in jax.tree.leaves(pipe.params["unet"]))
    assert count == sum(p.numel() for p in reference.parameters()) == 859_520_964  # SD v1's UNet

    rng = np.random.default_rng(0)
    x, ctx = rng.normal(size=(1, 8, 8, 4)).astype(np.float32), rng.normal(size=(1, 77, 768)).astype(np.float32)
    ours = pipe.unet.apply({"params": pipe.params["unet"]}, x, np.array([500]), ctx)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x).permute(0, 3, 1, 2), 500, torch.from_numpy(ctx)).sample
    np.testing.assert_allclose(np.asarray(ours), theirs.permute(0, 2, 3, 1).numpy(), atol=1e-4, rtol=0)
    layers = hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS)
    assert len(layers) == 16 and layers[0] == "down_blocks_0/attentions_0/transformer_blocks_0/attn1/to_out_0"
    del pipe, reference
    gc.collect()

    sweep.run(c, tmp_path / "run")
    assert "memory estimate:" in capsys.readouterr().out
    acts = store.ProcessStores(tmp_path / "run" / "activations", 0, 1)
    grids = {layers[0]: (8, 8, 320), layers[6]: (1, 1, 1280), layers[-1]: (8, 8, 320)}  # down0, mid, up3
    for model in ("trained", "randomized"):
        for layer, grid in grids.items():
            a = acts.read(f"{model}/{layer}")
            assert a.shape == (4, 15, *grid) and a.dtype.name == "bfloat16" and np.isfinite(a.astype(np.float32)).all()
    assert acts.read(f"vae/{sweep.VAE_LAYER}").shape == (4, 15, 8, 8, 512)
