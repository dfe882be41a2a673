"""Flax CLIPTextModel against transformers' PyTorch CLIPTextModel: outputs, EOS pooling rules, save round trip, bf16."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxprobe.models import clip, convert, load_text_encoder, save_component

VOCAB, MAX_LEN = 99, 16
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
             max_position_embeddings=MAX_LEN, layer_norm_eps=1e-5)
# Specials sit below the ordinary ids (3..98), so argmax(ids) and "first eos" pick different positions: "gelu" uses
# transformers' legacy argmax rule (eos_token_id == 2), "quick_gelu" the first-eos rule with pad == eos.
CASES = {"quick_gelu": dict(hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1),
         "gelu": dict(hidden_act="gelu", bos_token_id=1, eos_token_id=2, pad_token_id=0)}


def _torch_model(directory, case: str, seed: int = 0) -> transformers.CLIPTextModel:
    """Random tiny model, saved to `directory`; weights jittered away from the init so attention is far from uniform."""
    torch.manual_seed(seed)
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SHAPE, **CASES[case])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(str(directory))
    return model


def _ids(case: str, length: int, seed: int = 0) -> np.ndarray:
    """int32 [3, length]: bos, tokens, eos then padding (row 0), eos last (row 1), tokens after an eos (row 2)."""
    c = CASES[case]
    ids = np.random.default_rng(seed).integers(3, VOCAB, (3, length)).astype(np.int32)
    ids[:, 0] = c["bos_token_id"]
    ids[0, 4], ids[0, 5:] = c["eos_token_id"], c["pad_token_id"]
    ids[1, -1] = c["eos_token_id"]
    ids[2, 2] = c["eos_token_id"]
    return ids


def _torch_outputs(model, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long())
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    model = _torch_model(directory, request.param)
    return request.param, model, *load_text_encoder(directory)


@pytest.mark.parametrize("length", [MAX_LEN, 9])
def test_matches_transformers(loaded, length):
    case, model, module, params = loaded
    ids = _ids(case, length)
    hidden = jax.jit(module.apply)({"params": params}, ids)
    pooled = jax.jit(lambda p, x: module.apply({"params": p}, x, method="pooled"))(params, ids)
    ref_hidden, ref_pooled = _torch_outputs(model, ids)
    assert hidden.shape == (3, length, 32) and pooled.shape == (3, 32)
    chex.assert_trees_all_close((hidden, pooled), (ref_hidden, ref_pooled), atol=1e-4, rtol=0)


def test_save_component_round_trip_loads_in_transformers(loaded, tmp_path):
    case, model, module, params = loaded
    save_component(tmp_path / "copy", module, params, weights_name="model.safetensors")
    reloaded = transformers.CLIPTextModel.from_pretrained(str(tmp_path / "copy")).eval()
    assert reloaded.config.hidden_act == case and reloaded.config.eos_token_id == CASES[case]["eos_token_id"]
    ref, got = model.state_dict(), reloaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    ids = _ids(case, MAX_LEN, seed=1)
    for a, b in zip(_torch_outputs(model, ids), _torch_outputs(reloaded, ids)):
        np.testing.assert_array_equal(a, b)
    _, again = load_text_encoder(tmp_path / "copy")
    chex.assert_trees_all_equal(params, again)


def test_init_matches_transformers_init_statistics():
    """Training from scratch (the toy models) starts from transformers' CLIP init: same tensors, means and stds."""
    config = transformers.CLIPTextConfig(**SHAPE, **CASES["quick_gelu"])
    torch.manual_seed(0)
    ref = transformers.CLIPTextModel(config).state_dict()
    module = clip.CLIPTextModel(clip.CLIPTextConfig.from_dict(config.to_dict()))
    ours = convert.params_to_state_dict(module.init(jax.random.key(0), *module.dummy_inputs())["params"])
    assert set(ours) == {k for k in ref if not k.endswith("position_ids")}
    for key, value in ours.items():
        want = ref[key].numpy()
        assert value.shape == want.shape, key
        tol = 0.15 * want.std() + 1e-6
        assert abs(value.std() - want.std()) <= tol and abs(value.mean() - want.mean()) <= tol + 0.01, key


@pytest.mark.slow  # fast tier <= 5 min on 2 cores: closeness and train-mode checks run in the slow tier
def test_bf16_compute_stays_close_to_fp32(loaded):
    case, _, module, params = loaded
    bf16 = module.clone(dtype=jnp.bfloat16)
    ids = _ids(case, MAX_LEN)
    fp32_out = module.apply({"params": params}, ids)
    bf16_out = bf16.apply({"params": params}, ids)
    assert bf16_out.dtype == jnp.bfloat16
    shapes = jax.eval_shape(bf16.init, jax.random.key(0), *bf16.dummy_inputs())["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    scale = float(jnp.abs(fp32_out).max())
    assert float(jnp.abs(fp32_out - bf16_out.astype(jnp.float32)).max()) < 0.05 * scale


def test_bad_configs_and_inputs_raise_clear_errors(loaded, tmp_path):
    _, model, module, params = loaded
    with pytest.raises(ValueError, match="hidden_act='gelu_new' is not supported; supported: 'quick_gelu', 'gelu'"):
        clip.CLIPTextConfig.from_dict({"hidden_act": "gelu_new"})
    model.save_pretrained(str(tmp_path / "relu"))
    config_path = tmp_path / "relu" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="hidden_act='relu' is not supported"):
        load_text_encoder(tmp_path / "relu")
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads=5"):
        clip.CLIPTextConfig(hidden_size=32, num_attention_heads=5)
    with pytest.raises(ValueError, match="17 tokens, more than max_position_embeddings=16"):
        module.apply({"params": params}, np.zeros((1, MAX_LEN + 1), np.int32))


def test_transformers4_text_model_prefix_loads(loaded, tmp_path):
    """SD v1-4's text_encoder/ was written by transformers 4, with every key under `text_model.`."""
    import safetensors.numpy
    _, model, module, params = loaded
    state = {f"text_model.{k}": v.numpy() for k, v in model.state_dict().items()}
    tmp_path.joinpath("config.json").write_text(json.dumps(module.config.to_dict()))
    safetensors.numpy.save_file(state, tmp_path / "model.safetensors")
    _, again = load_text_encoder(tmp_path)
    chex.assert_trees_all_equal(params, again)
