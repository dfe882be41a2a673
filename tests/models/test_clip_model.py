"""Flax two-tower CLIPModel against transformers' PyTorch CLIPModel: features, logits, save/load both ways, configs."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxprobe.models import clip, convert
from jaxprobe.models.load import build_clip, load_clip, param_shapes, save_clip

VOCAB, MAX_LEN, IMAGE, PATCH, PROJ = 99, 16, 32, 8, 16
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=MAX_LEN)
VISION = dict(hidden_size=24, intermediate_size=40, num_attention_heads=4, num_hidden_layers=2, image_size=IMAGE,
              patch_size=PATCH)
# As in test_clip.py: "quick_gelu" pools at the first eos (pad == eos), "gelu" at argmax(ids) (legacy eos == 2, as
# openai/clip-vit-base-patch32's config.json has); the vision tower uses the same activation.
CASES = {"quick_gelu": dict(hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1),
         "gelu": dict(hidden_act="gelu", bos_token_id=1, eos_token_id=2, pad_token_id=0)}
LOGIT_SCALE = 1.3


def _torch_config(case: str) -> transformers.CLIPConfig:
    return transformers.CLIPConfig(text_config={**TEXT, **CASES[case]},
                                   vision_config={**VISION, "hidden_act": CASES[case]["hidden_act"]},
                                   projection_dim=PROJ)


def _torch_model(directory, case: str, seed: int = 0) -> transformers.CLIPModel:
    """Random tiny CLIPModel saved to `directory`; weights jittered away from the init, logit_scale moved."""
    torch.manual_seed(seed)
    model = transformers.CLIPModel(_torch_config(case)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        model.logit_scale.fill_(LOGIT_SCALE)
    model.save_pretrained(str(directory))
    return model


def _ids(case: str, seed: int = 0) -> np.ndarray:
    """int32 [3, MAX_LEN]: bos, tokens, eos then padding (row 0), eos last (row 1), tokens after an eos (row 2)."""
    c = CASES[case]
    ids = np.random.default_rng(seed).integers(3, VOCAB, (3, MAX_LEN)).astype(np.int32)
    ids[:, 0] = c["bos_token_id"]
    ids[0, 4], ids[0, 5:] = c["eos_token_id"], c["pad_token_id"]
    ids[1, -1] = c["eos_token_id"]
    ids[2, 2] = c["eos_token_id"]
    return ids


def _pixels(seed: int = 0, batch: int = 2) -> np.ndarray:
    """float32 NHWC [batch, IMAGE, IMAGE, 3], CLIP-normalised random RGB."""
    rgb = np.random.default_rng(seed).uniform(0, 1, (batch, IMAGE, IMAGE, 3))
    return ((rgb - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)).astype(np.float32)


def _torch_outputs(model, ids: np.ndarray, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' features (`get_*_features(...).pooler_output`), logits and vision outputs, for NHWC pixels."""
    ids_t, pix_t = torch.from_numpy(ids).long(), torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = model(input_ids=ids_t, pixel_values=pix_t)
        vision = model.vision_model(pixel_values=pix_t)
        return dict(image=model.get_image_features(pixel_values=pix_t).pooler_output.numpy(),
                    text=model.get_text_features(input_ids=ids_t).pooler_output.numpy(),
                    logits=out.logits_per_image.numpy(), logits_per_text=out.logits_per_text.numpy(),
                    image_embeds=out.image_embeds.numpy(), vision_hidden=vision.last_hidden_state.numpy(),
                    vision_pooled=vision.pooler_output.numpy())


def _flax_outputs(module, params, ids: np.ndarray, pixels: np.ndarray) -> dict[str, np.ndarray]:
    variables = {"params": params}

    @jax.jit
    def run(variables, ids, pixels):
        return dict(image=module.apply(variables, pixels, method="get_image_features"),
                    text=module.apply(variables, ids, method="get_text_features"),
                    logits=module.apply(variables, ids, pixels))

    out = {k: np.asarray(v) for k, v in run(variables, ids, pixels).items()}
    vision = clip.CLIPVisionTransformer(module.config.vision_config)
    hidden, pooled = jax.jit(vision.apply)({"params": params["vision_model"]}, pixels)
    return {**out, "vision_hidden": np.asarray(hidden), "vision_pooled": np.asarray(pooled)}


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"clip_{request.param}")
    model = _torch_model(directory, request.param)
    return request.param, model, *load_clip(directory)


def test_matches_transformers(loaded):
    case, model, module, params = loaded
    ids, pixels = _ids(case), _pixels()
    ref, got = _torch_outputs(model, ids, pixels), _flax_outputs(module, params, ids, pixels)
    assert got["image"].shape == (2, PROJ) and got["text"].shape == (3, PROJ) and got["logits"].shape == (2, 3)
    assert got["vision_hidden"].shape == (2, (IMAGE // PATCH) ** 2 + 1, VISION["hidden_size"])
    chex.assert_trees_all_close(got, {key: ref[key] for key in got}, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["logits"].T, ref["logits_per_text"], atol=1e-4, rtol=0)
    # transformers 5's get_*_features are the *unnormalised* projections; only the forward pass normalises.
    assert not np.allclose(np.linalg.norm(ref["image"], axis=-1), 1.0)
    np.testing.assert_allclose(ref["image"] / np.linalg.norm(ref["image"], axis=-1, keepdims=True),
                               ref["image_embeds"], atol=1e-6)
    assert float(params["logit_scale"]) == pytest.approx(LOGIT_SCALE) and params["logit_scale"].shape == ()


def test_save_clip_loads_in_transformers_with_same_weights_and_outputs(loaded, tmp_path):
    case, model, module, params = loaded
    save_clip(tmp_path / "copy", module, params)
    reloaded, info = transformers.CLIPModel.from_pretrained(str(tmp_path / "copy"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert reloaded.config.projection_dim == PROJ and reloaded.config.vision_config.patch_size == PATCH
    assert reloaded.config.text_config.eos_token_id == CASES[case]["eos_token_id"]
    ref, got = model.state_dict(), reloaded.eval().state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    ids, pixels = _ids(case, seed=1), _pixels(seed=1)
    want, have = _torch_outputs(model, ids, pixels), _torch_outputs(reloaded, ids, pixels)
    chex.assert_trees_all_close({key: have[key] for key in ("image", "text", "logits")},
                                {key: want[key] for key in ("image", "text", "logits")}, atol=1e-4, rtol=0)
    again_module, again = load_clip(tmp_path / "copy")
    assert again_module.config == module.config
    chex.assert_trees_all_equal(params, again)


def test_config_round_trip_and_transformers_config():
    config = clip.CLIPConfig.from_dict(_torch_config("gelu").to_dict())
    assert config.text_config.hidden_size == 32 and config.vision_config.hidden_size == 24
    assert config.vision_config.hidden_act == "gelu" and config.projection_dim == PROJ
    assert config.logit_scale_init_value == pytest.approx(2.6592)
    written = config.to_dict()
    assert written["model_type"] == "clip" and written["architectures"] == ["CLIPModel"]
    assert written["text_config"]["model_type"] == "clip_text_model"
    assert written["vision_config"]["model_type"] == "clip_vision_model"
    assert clip.CLIPConfig.from_dict(json.loads(json.dumps(written))) == config
    theirs = transformers.CLIPConfig.from_dict(written)
    assert theirs.vision_config.image_size == IMAGE and theirs.text_config.eos_token_id == 2


def _openai_config() -> dict:
    """The shape of openai/clip-vit-base-patch32's config.json (transformers 4.16 era, with its extra keys)."""
    common = {"_name_or_path": "", "add_cross_attention": False, "architectures": None, "attention_dropout": 0.0,
              "bad_words_ids": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
              "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "dropout": 0.0,
              "early_stopping": False, "encoder_no_repeat_ngram_size": 0, "finetuning_task": None,
              "forced_bos_token_id": None, "forced_eos_token_id": None, "hidden_act": "quick_gelu",
              "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "initializer_factor": 1.0, "initializer_range": 0.02,
              "is_decoder": False, "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
              "layer_norm_eps": 1e-05, "length_penalty": 1.0, "max_length": 20, "min_length": 0,
              "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_hidden_layers": 12,
              "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
              "output_scores": False, "prefix": None, "projection_dim": 512, "problem_type": None,
              "pruned_heads": {}, "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
              "return_dict_in_generate": False, "sep_token_id": None, "task_specific_params": None,
              "temperature": 1.0, "tie_encoder_decoder": False, "tie_word_embeddings": True,
              "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
              "transformers_version": "4.16.0.dev0", "use_bfloat16": False}
    text = {**common, "bos_token_id": 0, "eos_token_id": 2, "hidden_size": 512, "intermediate_size": 2048,
            "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 8,
            "pad_token_id": 1, "vocab_size": 49408}
    vision = {**common, "bos_token_id": None, "eos_token_id": None, "hidden_size": 768, "image_size": 224,
              "intermediate_size": 3072, "model_type": "clip_vision_model", "num_attention_heads": 12,
              "pad_token_id": None, "patch_size": 32}
    return {"_name_or_path": "openai/clip-vit-base-patch32", "architectures": ["CLIPModel"],
            "initializer_factor": 1.0, "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": 512,
            "text_config": text, "text_config_dict": None, "transformers_version": None, "vision_config": vision,
            "vision_config_dict": None}


def test_openai_clip_vit_base_patch32_config_fits_transformers_state_dict():
    """Real-sized config: our parameter tree (eval_shape, nothing allocated) holds exactly transformers' keys/shapes."""
    raw = _openai_config()
    module = build_clip(raw)
    c = module.config
    assert (c.text_config.hidden_size, c.text_config.num_attention_heads, c.text_config.eos_token_id) == (512, 8, 2)
    assert (c.vision_config.hidden_size, c.vision_config.patch_size, c.vision_config.num_positions) == (768, 32, 50)
    assert c.projection_dim == 512 and c.vision_config.intermediate_size == 3072
    shapes = param_shapes(module)
    assert shapes["vision_model"]["embeddings"]["patch_embedding"]["kernel"].shape == (32, 32, 3, 768)
    assert shapes["visual_projection"]["kernel"].shape == (768, 512) and shapes["logit_scale"].shape == ()
    with torch.device("meta"):
        ref = transformers.CLIPModel(transformers.CLIPConfig.from_dict(raw))
    # Zero-stride numpy views of the right shapes: the converter checks every key and shape, allocating nothing.
    state = {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in ref.state_dict().items()}
    converted = convert.state_dict_to_params(state, shapes)
    assert sum(x.size for x in jax.tree.leaves(converted)) == sum(p.numel() for p in ref.parameters()) == 151277313


def test_old_and_partial_configs_fall_back_to_defaults():
    raw = _openai_config()
    # Old files: the towers in *_config_dict (which transformers lets replace *_config), text_config null.
    old = {**raw, "text_config": None, "text_config_dict": {"hidden_size": 64, "num_attention_heads": 4},
           "vision_config_dict": {"patch_size": 16}}
    c = clip.CLIPConfig.from_dict(old)
    assert c.text_config == clip.CLIPTextConfig(hidden_size=64, num_attention_heads=4)
    assert c.vision_config == clip.CLIPVisionConfig(patch_size=16) and c.vision_config.num_positions == 197
    partial = {"model_type": "clip", "projection_dim": None, "vision_config": {**raw["vision_config"]},
               "text_config": {"hidden_size": 256, "layer_norm_eps": None, "eos_token_id": None}}
    c = clip.CLIPConfig.from_dict(partial)
    assert c.projection_dim == 512 and c.text_config.hidden_size == 256
    assert c.text_config.layer_norm_eps == 1e-5 and c.text_config.eos_token_id == 49407
    assert clip.CLIPConfig.from_dict({"model_type": "clip"}) == clip.CLIPConfig()


def test_bad_directories_configs_and_inputs_raise_clear_errors(loaded, tmp_path):
    case, model, module, params = loaded
    model.text_model.save_pretrained(str(tmp_path / "text_only"))
    with pytest.raises(ValueError, match=r"not a transformers CLIPModel config: model_type='clip_text_model'.*"
                                         r"load_text_encoder"):
        load_clip(tmp_path / "text_only")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip(tmp_path / "nowhere")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text(json.dumps(module.config.to_dict()))
    with pytest.raises(FileNotFoundError, match="no CLIP model weights"):
        load_clip(tmp_path / "no_weights")
    wrong = _torch_config(case).to_dict()
    wrong["vision_config"]["patch_size"] = 16
    model.save_pretrained(str(tmp_path / "wrong"))
    (tmp_path / "wrong" / "config.json").write_text(json.dumps(wrong))
    with pytest.raises(convert.WeightMismatchError, match=r"^weights in .*wrong do not fit the CLIP model built from "
                       r"its config.json \(0 missing, 0 unexpected, [1-9]\d* mis-shaped\):") as err:
        load_clip(tmp_path / "wrong")  # the wording every loader shares (MobileNetV2 and the labelers too)
    assert "vision_model.embeddings.patch_embedding.weight: checkpoint (" in str(err.value)
    with pytest.raises(ValueError, match="CLIPVisionConfig: hidden_act='relu' is not supported"):
        clip.CLIPConfig.from_dict({"vision_config": {"hidden_act": "relu"}})
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads=5"):
        clip.CLIPVisionConfig(hidden_size=32, num_attention_heads=5)
    with pytest.raises(ValueError, match=r"pixel_values must be NHWC \[B, 32, 32, 3\]"):
        module.apply({"params": params}, _pixels().transpose(0, 3, 1, 2), method="get_image_features")
    with pytest.raises(TypeError, match="save_clip needs a jaxprobe CLIPModel"):
        save_clip(tmp_path / "x", clip.CLIPTextModel(module.config.text_config), params["text_model"])


def test_preprocess_normalises_and_resizes():
    rgb = np.random.default_rng(0).integers(0, 256, (2, IMAGE, IMAGE, 3), dtype=np.uint8)
    want = (rgb / 255.0 - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)
    np.testing.assert_allclose(np.asarray(clip.preprocess(rgb, IMAGE)), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(clip.preprocess(rgb / 255.0, IMAGE)), want, atol=1e-5)
    flat = np.full((1, 48, 40, 3), 128, np.uint8)
    out = np.asarray(clip.preprocess(flat, IMAGE))
    assert out.shape == (1, IMAGE, IMAGE, 3) and out.dtype == np.float32
    grey = (128 / 255 - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)
    np.testing.assert_allclose(out, np.broadcast_to(grey, out.shape), atol=1e-5)  # a flat image stays flat


@pytest.mark.slow  # fast tier <= 5 min on 2 cores: closeness and train-mode checks run in the slow tier
def test_bf16_compute_stays_close_to_fp32(loaded):
    case, _, module, params = loaded
    ids, pixels = _ids(case), _pixels()
    fp32 = jax.jit(module.apply)({"params": params}, ids, pixels)
    bf16 = jax.jit(module.clone(dtype=jnp.bfloat16).apply)({"params": params}, ids, pixels)
    assert bf16.dtype == jnp.float32
    assert float(jnp.abs(fp32 - bf16).max()) < 0.05 * float(jnp.abs(fp32).max())
