"""The scene study's figures: the prediction grid, and the report's figures with the study's names and styles."""
import numpy as np
import pytest
from PIL import Image

from jaxprobe.scene import figures

ATTN1 = "transformer_blocks_0/attn1/to_out_0"
# down0.a0, down0.a1, mid, up3.a2 of SD v1's UNet, and the VAE decoder's mid attention
SD_LAYERS = (f"down_blocks_0/attentions_0/{ATTN1}", f"down_blocks_0/attentions_1/{ATTN1}",
             f"mid_block/attentions_0/{ATTN1}", f"up_blocks_3/attentions_2/{ATTN1}")
VAE_LAYER = "decoder/mid_block/attentions_0"


def _assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # the atomic temp file is gone


def test_prediction_grid_writes_a_png(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    mask = rng.random((2, 16, 16)) > 0.5
    depth = rng.normal(size=(2, 16, 16))
    figures.prediction_grid(tmp_path / "grid.png", images, mask, ~mask, depth, depth + 0.1,
                            titles=["a red car in the snow", "a dog"], suptitle="saliency: up3.a0 step 4")
    _assert_png(tmp_path / "grid.png")
    with pytest.raises(ValueError, match="one title per image"):
        figures.prediction_grid(tmp_path / "bad.png", images, mask, mask, depth, depth, titles=["one"])
    with pytest.raises(ValueError, match="uint8"):
        figures.prediction_grid(tmp_path / "bad.png", images.astype(float), mask, mask, depth, depth,
                                titles=["a", "b"])
    with pytest.raises(ValueError, match=r"true depth must be \[N=2, H, W\]"):
        figures.prediction_grid(tmp_path / "bad.png", images, mask, mask, depth[:1], depth, titles=["a", "b"])
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_level_styles_colour_by_level_and_dot_the_up_blocks():
    styles = figures.level_styles(SD_LAYERS + (VAE_LAYER,))
    assert styles[SD_LAYERS[0]]["color"] == styles[SD_LAYERS[-1]]["color"]  # down0 and up3: full resolution
    assert styles[SD_LAYERS[0]]["color"] != styles[SD_LAYERS[2]]["color"]  # the bottleneck is lighter
    assert styles[VAE_LAYER]["color"] == "grey"
    assert styles[SD_LAYERS[0]]["linestyle"] == "-" and styles[SD_LAYERS[-1]]["linestyle"] == ":"
    assert styles[SD_LAYERS[0]]["marker"] != styles[SD_LAYERS[1]]["marker"]  # a0 vs a1


def test_scene_figures_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"model": m, "task": "saliency", "layer": l, "step": s, "split": "test", "metric": "dice",
             "value": float(rng.random())}
            for m, ls in (("trained", SD_LAYERS), ("vae", (VAE_LAYER,))) for l in ls for s in (0, 2, 4)]
    order = SD_LAYERS + (VAE_LAYER,)
    figures.heatmap_figure(rows, "saliency", "dice", tmp_path / "heat.png", layer_order=order,
                           models=("trained", "randomized", "vae"))
    figures.curves_figure(rows, "saliency", "dice", tmp_path / "curves.png", layer_order=order)
    figures.layer_profile_figure(rows, "saliency", "dice", tmp_path / "profile.png", layer_order=order, step=2)
    for name in ("heat.png", "curves.png", "profile.png"):
        _assert_png(tmp_path / name)


def test_sdxl_sized_layer_sets_are_drawn_by_transformer_group(tmp_path):
    from jaxprobe.probing import report
    from jaxprobe.scene import layers
    paths = [f"down_blocks_2/attentions_{a}/transformer_blocks_{t}/attn1/to_out_0" for a in (0, 1) for t in range(10)]
    paths += [f"mid_block/attentions_0/transformer_blocks_{t}/attn1/to_out_0" for t in range(10)]
    paths += [f"up_blocks_0/attentions_{a}/transformer_blocks_{t}/attn1/to_out_0" for a in range(3) for t in range(10)]
    groups = report._groups(paths, layers.groups)  # 60 layers, over MAX_LAYER_LABELS
    assert list(groups) == ["down2.a0", "down2.a1", "mid", "up0.a0", "up0.a1", "up0.a2"]
    assert groups["mid"] == paths[20:30]
    assert report._groups(paths[:report.MAX_LAYER_LABELS], layers.groups) is None  # few enough to label each
    rng = np.random.default_rng(0)
    rows = [dict(model="trained", task="saliency", metric="dice", split="test", layer=l, step=s,
                 value=float(rng.random())) for l in paths for s in range(3)]
    figures.heatmap_figure(rows, "saliency", "dice", tmp_path / "heatmap.png", layer_order=paths, models=("trained",))
    figures.curves_figure(rows, "saliency", "dice", tmp_path / "curves.png", layer_order=paths)
    for name in ("heatmap.png", "curves.png"):
        _assert_png(tmp_path / name)
