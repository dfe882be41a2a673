"""Checkpoints as they are distributed: weight variants (fp16/bf16), sharded weights, and errors that name the file."""
import copy
import json
import os
import re
import shutil

import chex
import numpy as np
import pytest
import torch
from tiny_sd import build_torch_pipeline

from jaxprobe.models import convert, load, load_pipeline, load_text_encoder, load_unet

MODELS = ("unet", "vae", "text_encoder")
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root, fp32 torch pipeline, its fp16 copy); root/plain is the saved fp32 pipeline."""
    root = tmp_path_factory.mktemp("variants")
    torch_pipe = build_torch_pipeline(root / "plain")
    return root, torch_pipe, copy.deepcopy(torch_pipe).to(torch.float16)


def _reference(model) -> dict[str, np.ndarray]:
    """The torch model's weights as float32 numpy: what loading its checkpoint must give, bit for bit."""
    return {k: v.float().numpy() for k, v in model.state_dict().items() if not k.endswith("position_ids")}


def _assert_params_equal(params, ref):
    chex.assert_trees_all_equal(convert.params_to_state_dict(params), ref)


def _q(path) -> str:
    """A path as a literal inside a pytest.raises(match=...) pattern."""
    return re.escape(str(path))


def _float32_leaves(params) -> bool:
    import jax
    return all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))


def test_fp16_variant_alone_loads_with_and_without_variant(tiny):
    root, torch_pipe, half = tiny
    half.save_pretrained(str(root / "fp16"), variant="fp16")
    assert sorted(os.listdir(root / "fp16" / "unet")) == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    assert sorted(os.listdir(root / "fp16" / "text_encoder")) == ["config.json", "model.fp16.safetensors"]
    for pipe in (load_pipeline(root / "fp16"), load_pipeline(root / "fp16", variant="fp16")):
        for name in MODELS:
            assert _float32_leaves(pipe.params[name]), name
            _assert_params_equal(pipe.params[name], _reference(getattr(half, name)))
    # the fp16 rounding really happened: these are not the fp32 weights
    fp32 = _reference(torch_pipe.unet)["conv_in.weight"]
    assert not np.array_equal(fp32, _reference(half.unet)["conv_in.weight"])
    with pytest.raises(FileNotFoundError, match=r"no bf16 variant UNet weights in .*unet \(found: fp16\)"):
        load_pipeline(root / "fp16", variant="bf16")


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_sharded_unet_equals_the_unsharded_load(tiny, variant):
    root, torch_pipe, half = tiny
    directory = root / f"sharded_{variant}"
    (half if variant else torch_pipe).unet.save_pretrained(str(directory), max_shard_size="200KB", variant=variant)
    index = "diffusion_pytorch_model.safetensors.index" + (f".{variant}" if variant else "") + ".json"
    shards = json.loads((directory / index).read_text())["weight_map"].values()
    assert len(set(shards)) > 1
    single = root / f"single_{variant}"
    (half if variant else torch_pipe).unet.save_pretrained(str(single), variant=variant)
    _, expected = load_unet(single)
    for kwargs in ({}, {"variant": variant}):
        _, params = load_unet(directory, **kwargs)
        _assert_params_equal(params, convert.params_to_state_dict(expected))
    _assert_params_equal(params, _reference((half if variant else torch_pipe).unet))


def test_sharded_transformers_variant_and_the_older_index_name(tiny, tmp_path):
    half = tiny[2]
    half.text_encoder.save_pretrained(str(tmp_path), max_shard_size="20KB", variant="fp16")
    assert (tmp_path / "model.safetensors.index.fp16.json").is_file()  # transformers' _add_variant
    _, params = load_text_encoder(tmp_path)
    _assert_params_equal(params, _reference(half.text_encoder))
    # some hub uploads name a variant's index <name>.<variant>.safetensors.index.json
    (tmp_path / "model.safetensors.index.fp16.json").rename(tmp_path / "model.fp16.safetensors.index.json")
    _, params = load_text_encoder(tmp_path, variant="fp16")
    _assert_params_equal(params, _reference(half.text_encoder))
    shard = sorted(tmp_path.glob("model.fp16-*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"text encoder weight shard {_q(shard)} listed in .* is missing"):
        load_text_encoder(tmp_path)


def test_several_variants_need_variant_and_bf16_is_cast_to_float32(tiny, tmp_path):
    _, torch_pipe, half = tiny
    half.unet.save_pretrained(str(tmp_path), variant="fp16")
    bf16 = copy.deepcopy(torch_pipe.unet).to(torch.bfloat16)
    bf16.save_pretrained(str(tmp_path), variant="bf16")
    assert not (tmp_path / WEIGHTS).exists()
    with pytest.raises(ValueError, match=r"no plain weights but several variants \(bf16, fp16\): pass variant="):
        load_unet(tmp_path)
    _, params = load_unet(tmp_path, variant="bf16")
    assert _float32_leaves(params)
    _assert_params_equal(params, _reference(bf16))
    _, params = load_unet(tmp_path, variant="fp16")
    _assert_params_equal(params, _reference(half.unet))
    torch_pipe.unet.save_pretrained(str(tmp_path))  # with plain weights present, they are the default
    _, params = load_unet(tmp_path)
    _assert_params_equal(params, _reference(torch_pipe.unet))


def test_broken_files_are_named_in_the_error(tiny, tmp_path):
    plain = tiny[0] / "plain"
    broken = tmp_path / "broken"
    shutil.copytree(plain, broken)
    weights = broken / "unet" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"UNet weights {_q(weights)} are unreadable \\(truncated or not safetensors"):
        load_pipeline(broken)
    shutil.copy(plain / "unet" / WEIGHTS, weights)
    config = broken / "vae" / "config.json"
    config.write_text(config.read_text()[:-20])
    with pytest.raises(ValueError, match=f"VAE config {_q(config)} is not valid JSON"):
        load_pipeline(broken)
    shutil.copy(plain / "vae" / "config.json", config)
    (broken / "scheduler" / "scheduler_config.json").write_text("{")
    with pytest.raises(ValueError, match="scheduler config .*scheduler_config.json is not valid JSON"):
        load_pipeline(broken)


def test_a_missing_pipeline_directory_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"pipeline directory {_q(nowhere)} does not exist") as e:
        load_pipeline("nowhere")
    assert "unet/" not in str(e.value)  # not "missing unet/, vae/, ..."
    with pytest.raises(FileNotFoundError, match=f"UNet directory {_q(nowhere)} does not exist"):
        load_unet("nowhere")
    assert load.weight_variants(tmp_path) == {}


def test_a_pipeline_without_weights_has_the_loaded_ones_shapes_and_reads_no_weight_file(tiny, tmp_path):
    """`weights=False` (a sweep's label, fit and report stages): the same modules and tokenizer, params as shapes;
    a directory whose weight files are gone still loads."""
    import jax

    root, _, _ = tiny
    loaded = load_pipeline(root / "plain")
    shutil.copytree(root / "plain", tmp_path / "configs", ignore=shutil.ignore_patterns("*.safetensors"))
    shapes = load_pipeline(tmp_path / "configs", weights=False)
    assert shapes.unet == loaded.unet and shapes.vae == loaded.vae and shapes.text_encoder == loaded.text_encoder
    assert jax.tree.structure(shapes.params) == jax.tree.structure(loaded.params)
    assert all(isinstance(s, jax.ShapeDtypeStruct) and (s.shape, s.dtype) == (p.shape, p.dtype)
               for s, p in zip(jax.tree.leaves(shapes.params), jax.tree.leaves(loaded.params)))
    assert shapes.tokenize(["a red sphere"]).tolist() == loaded.tokenize(["a red sphere"]).tolist()
