"""Flax DPTForDepthEstimation against transformers' PyTorch model: depth at the config size and others, the
readout types, save/load both ways, config checks and the raw-image `predict_depth` pipeline."""
import json

import chex
import jax
import numpy as np
import pytest
import torch
import transformers

from jaxprobe import testing
from jaxprobe.models import dpt, load_dpt, resize
from jaxprobe.models.load import build_dpt, save_component

IMAGE, PATCH = 32, 8
BASE = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=IMAGE,
            patch_size=PATCH, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 12, 16, 20],
            fusion_hidden_size=16)
# 'project' is DPT-Large's readout. 'add' runs with add_projection, whose fixed 256->256 conv needs a 256-wide fusion;
# 'ignore' with a sparser layer selection, no qkv / residual-unit biases and the head on an earlier fusion stage.
CASES = {"project": dict(readout_type="project"),
         "add_projection": dict(readout_type="add", add_projection=True, fusion_hidden_size=256),
         "ignore": dict(readout_type="ignore", num_hidden_layers=5, backbone_out_indices=[4, 0, 2, 3], qkv_bias=False,
                        use_bias_in_fusion_residual=False, head_in_index=-2)}
TOL = 1e-4


def _torch_model(directory, case: str, seed: int = 0) -> transformers.DPTForDepthEstimation:
    """Random tiny DPT saved to `directory`. Every tensor is jittered (zero-init biases, norms, the class token and
    position embeddings too); weights by 0.5/sqrt(fan-in), so that depth stays O(1) and fp32 noise small."""
    torch.manual_seed(seed)
    model = transformers.DPTForDepthEstimation(transformers.DPTConfig(**{**BASE, **CASES[case]})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            weight = name.endswith(".weight") and p.ndim > 1
            p.add_((0.5 * (p.numel() // p.shape[0]) ** -0.5 if weight else 0.2) * torch.randn_like(p))
        model.head.head[4].bias.add_(0.3)  # keeps the final ReLU live (some draws are all zero otherwise)
    model.save_pretrained(str(directory))
    return model


def _pixels(height: int, width: int, seed: int = 0, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, height, width, 3)).astype(np.float32)


def _torch_depth(model, pixels: np.ndarray, *, grid: bool = False) -> np.ndarray:
    """`predicted_depth` for NHWC pixels. grid=True runs the same modules with the patch grid passed to the neck,
    which non-square inputs need (the ViT-backed forward reshapes tokens to a square)."""
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        if not grid:
            return model(pixel_values=x).predicted_depth.numpy()
        c = model.config
        hidden = model.dpt(x, output_hidden_states=True).hidden_states[1:]
        selected = [h for i, h in enumerate(hidden) if i in c.backbone_out_indices]
        fused = model.neck(selected, x.shape[2] // c.patch_size, x.shape[3] // c.patch_size)
        return model.head(fused).numpy()


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"dpt_{request.param}")
    model = _torch_model(directory, request.param)
    module, params = load_dpt(directory)
    return request.param, directory, model, module, params, jax.jit(module.apply)


# DPT-Large's 'project' at the config size, an odd 5x5 patch grid (position embeddings resized, fusion residuals
# resized to the upsampled map) and a non-square 6x4 grid; the other cases (one compile each) at one other size.
SIZES = [("project", (IMAGE, IMAGE)), ("project", (40, 40)), ("project", (48, 32)), ("add_projection", (48, 32)),
         ("ignore", (40, 40))]


@pytest.mark.parametrize("loaded,size", SIZES, indirect=["loaded"], ids=[f"{c}-{h}x{w}" for c, (h, w) in SIZES])
def test_matches_transformers(loaded, size):
    case, _, model, module, params, apply = loaded
    height, width = size
    pixels = _pixels(height, width)
    ref = _torch_depth(model, pixels, grid=height != width)
    got = np.asarray(apply({"params": params}, pixels))
    assert got.shape == ref.shape and got.dtype == np.float32
    assert (ref > 0).mean() > 0.2 and np.abs(ref).max() > 0.05  # a live head, not all ReLU zeros
    print(f"DPT {case} {height}x{width}: max abs diff {np.abs(got - ref).max():.2e} "
          f"(max |depth| {np.abs(ref).max():.3f})")
    chex.assert_trees_all_close(got, ref, atol=TOL, rtol=0)


def test_save_component_loads_in_transformers_with_same_outputs(loaded, tmp_path):
    case, _, model, module, params, apply = loaded
    save_component(tmp_path / "copy", module, params, weights_name="model.safetensors")
    reloaded, info = transformers.DPTForDepthEstimation.from_pretrained(str(tmp_path / "copy"),
                                                                        output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert reloaded.config.readout_type == model.config.readout_type
    ref, got = model.state_dict(), reloaded.eval().state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    pixels = _pixels(IMAGE, IMAGE, seed=1)
    np.testing.assert_array_equal(_torch_depth(reloaded, pixels), _torch_depth(model, pixels))
    again_module, again = load_dpt(tmp_path / "copy")
    assert again_module.config == module.config
    chex.assert_trees_all_equal(params, again)


def test_config_round_trip():
    theirs = transformers.DPTConfig(**{**BASE, **CASES["ignore"]})
    config = dpt.DPTConfig.from_dict(theirs.to_dict())
    assert (config.readout_type, config.backbone_out_indices, config.head_in_index) == ("ignore", (4, 0, 2, 3), -2)
    assert not config.fusion_residual_bias and dpt.DPTConfig().fusion_residual_bias
    written = json.loads(json.dumps(config.to_dict()))
    assert written["model_type"] == "dpt" and written["architectures"] == ["DPTForDepthEstimation"]
    assert dpt.DPTConfig.from_dict(written) == config
    assert transformers.DPTConfig.from_dict(written).neck_hidden_sizes == list(BASE["neck_hidden_sizes"])


@pytest.mark.parametrize("change,match", [
    (dict(model_type="vit"), "model_type='vit'"),
    (dict(is_hybrid=True), "is_hybrid=True"),
    (dict(backbone_config={"model_type": "dinov2"}), "backbone_config"),
    (dict(readout_type="mean"), "readout_type='mean'"),
    (dict(use_batch_norm_in_fusion_residual=True), "use_batch_norm_in_fusion_residual"),
    (dict(add_projection=True), "add_projection needs fusion_hidden_size=256"),
    (dict(backbone_out_indices=[0, 1, 2]), "backbone_out_indices"),
    (dict(image_size=[32, 48]), "image_size"),
])
def test_unsupported_configs_raise(change, match, tmp_path):
    config = {**dpt.DPTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in BASE.items()}).to_dict(),
              **change}
    with pytest.raises(ValueError, match=match):
        build_dpt(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        load_dpt(tmp_path)


def test_random_dpt_and_predict_depth(tmp_path):
    directory = testing.random_dpt(tmp_path / "dpt", seed=1, image_size=IMAGE)
    module, params = load_dpt(directory)
    settings = dpt.preprocessor(directory)
    assert settings["size"] == (IMAGE, IMAGE) and settings["mean"] == (0.5, 0.5, 0.5)
    images = np.random.default_rng(0).integers(0, 256, (2, 45, 30, 3), dtype=np.uint8)
    depth = np.asarray(dpt.predict_depth(module, params, images, **settings))
    assert depth.shape == (2, 45, 30) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert depth.std() > 0

    # The same steps by hand, and (patch 16, as DPT-Large: the depth map has the input's size) at the model's size
    # nothing is resized, so the result is module.apply on the normalised floats.
    resized = dpt.pixel_values(images, size=(IMAGE, IMAGE), mean=(0.0,) * 3, std=(1.0,) * 3, rescale_factor=1.0)
    floats = np.random.default_rng(1).uniform(0, 255, (2, IMAGE, IMAGE, 3)).astype(np.float32)
    apply = jax.jit(module.apply)
    want = resize.resize_bicubic(apply({"params": params}, (resized / 255 - 0.5) / 0.5)[..., None], (45, 30))[..., 0]
    np.testing.assert_allclose(depth, want, atol=1e-5, rtol=0)
    same = dpt.predict_depth(module, params, floats, **settings)
    np.testing.assert_allclose(same, apply({"params": params}, (floats / 255 - 0.5) / 0.5), atol=1e-5, rtol=0)

    # transformers loads the directory and computes the same depth (patch 16: DPT-Large's geometry), and its
    # processor's post-processing resizes it back to the image size as predict_depth does.
    model = transformers.DPTForDepthEstimation.from_pretrained(str(directory)).eval()
    pixels = (floats / 255 - 0.5) / 0.5
    np.testing.assert_allclose(apply({"params": params}, pixels), _torch_depth(model, pixels), atol=TOL, rtol=0)
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(np.array((resized / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2)))
    ref = DPTImageProcessorPil().post_process_depth_estimation(out, target_sizes=[(45, 30)] * 2)
    np.testing.assert_allclose(depth, np.stack([r["predicted_depth"].numpy() for r in ref]), atol=TOL, rtol=0)


@pytest.mark.parametrize("shape,keep,multiple", [((512, 512), False, 1), ((200, 300), True, 32), ((64, 64), False, 1)])
def test_pixel_values_are_the_processors(shape, keep, multiple):
    """Sharp images (overshooting the 0..255 range when resized): the processor's PIL resize keeps 8 bits between
    its passes, and so does pixel_values; PIL's fixed-point weights leave a grey level or two on a few pixels."""
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
    rng = np.random.default_rng(0)
    images = np.clip(rng.normal(128, 80, (2, *shape, 3)), 0, 255).astype(np.uint8)
    settings = dict(size=(384, 384), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), keep_aspect_ratio=keep,
                    ensure_multiple_of=multiple)
    processor = DPTImageProcessorPil(size={"height": 384, "width": 384}, image_mean=list(settings["mean"]),
                                     image_std=list(settings["std"]), keep_aspect_ratio=keep,
                                     ensure_multiple_of=multiple)
    ref = processor(images=list(images), return_tensors="np").pixel_values.transpose(0, 2, 3, 1)
    got = np.asarray(dpt.pixel_values(images, **settings))
    assert got.shape == ref.shape
    levels = np.abs(got - ref) * np.asarray(settings["std"]) * 255
    print(f"pixel_values {shape}: max {levels.max():.2f} grey levels, {100 * (levels > 0.5).mean():.3f} % differ")
    assert levels.max() <= 2.01 and (levels > 0.5).mean() <= 0.01


def test_predict_depth_is_the_hf_pipelines(tmp_path):
    """Processor, model and post-processing against predict_depth on smooth 96x96 images (a 64x64 random DPT)."""
    import scipy.ndimage
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
    directory = testing.random_dpt(tmp_path / "dpt", seed=1, image_size=64)
    rng = np.random.default_rng(0)
    images = np.stack([np.clip(scipy.ndimage.gaussian_filter(rng.normal(128, 400, (96, 96, 3)), (3, 3, 0)), 0, 255)
                       for _ in range(4)]).astype(np.uint8)
    processor = DPTImageProcessorPil.from_pretrained(str(directory))
    model = transformers.DPTForDepthEstimation.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        out = model(**processor(images=list(images), return_tensors="pt"))
    ref = np.stack([r["predicted_depth"].numpy()
                    for r in processor.post_process_depth_estimation(out, target_sizes=[(96, 96)] * 4)])
    got = np.asarray(dpt.predict_depth(*load_dpt(directory), images, **dpt.preprocessor(directory)))
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(f"predict_depth vs the HF pipeline: max diff {100 * err:.2f} % of max depth")
    assert err <= 0.02  # the input resize's last grey levels, amplified by a random network


def test_preprocessor_defaults_and_keep_aspect_ratio(tmp_path):
    assert dpt.preprocessor(tmp_path) == dpt.DPT_LARGE_PREPROCESSOR
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "size": {"height": 384, "width": 384}, "keep_aspect_ratio": True, "ensure_multiple_of": 32,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3}))
    settings = dpt.preprocessor(tmp_path)
    assert settings["keep_aspect_ratio"] and settings["ensure_multiple_of"] == 32 and settings["std"][0] == 0.229
    from transformers.models.dpt.image_processing_pil_dpt import get_resize_output_image_size
    for shape, keep, multiple in [((480, 640), True, 32), ((480, 640), False, 1), ((333, 250), True, 14),
                                  ((1000, 90), True, 1), ((383, 385), False, 32)]:
        want = get_resize_output_image_size(np.empty((3, *shape)), (384, 384), keep, multiple)
        assert dpt.resize_output_size(*shape, (384, 384), keep, multiple) == (want.height, want.width)
