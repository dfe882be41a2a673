"""SDXL's model pieces against diffusers / transformers PyTorch on random tiny configs: the UNet's text_time
conditioning with mixed transformer depths, and CLIPTextModelWithProjection (projected pooled output, hidden states)."""
import json
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
import torch
import transformers

from jaxprobe import hooks
from jaxprobe.models import clip, convert, load, load_text_encoder, load_unet, save_component
from jaxprobe.models.unet import TextTimeConditioning

TOL = 1e-4
# SDXL's layout (a plain first block, then cross-attention ones) with per-layer transformer depths: the mid block
# takes the last down block's, the up blocks the explicit reverse ones (diffusers' asymmetric UNet).
UNET = dict(
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, cross_attention_dim=24, norm_num_groups=16,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(1, 4), transformer_layers_per_block=[1, [2]],
    reverse_transformer_layers_per_block=[[1, 2], [1, 1]],
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 12)
TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
            max_position_embeddings=16, projection_dim=24, hidden_act="gelu", bos_token_id=0, pad_token_id=1)


def test_text_time_unet_with_mixed_depths_matches_diffusers(tmp_path):
    import diffusers
    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(**UNET)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial weights everywhere, add_embedding included
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ref.eval().save_pretrained(tmp_path)
    module, params = load_unet(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    t = np.array([3.0, 817.5], np.float32)
    cond = TextTimeConditioning(rng.normal(size=(2, 7, 24)).astype(np.float32),
                                rng.normal(size=(2, 12)).astype(np.float32),
                                np.array([[1024, 1024, 0, 0, 1024, 1024], [768, 512, 16, 32, 64, 64]], np.float32))
    ours = jax.jit(module.apply)({"params": params}, x, t, cond)
    with torch.no_grad():
        theirs = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t),
                     torch.from_numpy(cond.encoder_hidden_states),
                     added_cond_kwargs={"text_embeds": torch.from_numpy(cond.text_embeds),
                                        "time_ids": torch.from_numpy(cond.time_ids)}).sample
    chex.assert_trees_all_close(ours, theirs.numpy().transpose(0, 2, 3, 1), atol=TOL, rtol=0)
    # diffusers' module paths, depths as configured: 2 down, 2 mid, 1 + 2 up
    attn1 = hooks.select_layers(module, "*attn1/to_out_0")
    assert len(attn1) == 7 and attn1[0] == "down_blocks_1/attentions_0/transformer_blocks_0/attn1/to_out_0"
    assert attn1[-1] == "up_blocks_0/attentions_1/transformer_blocks_1/attn1/to_out_0"
    with pytest.raises(ValueError, match="needs a TextTimeConditioning, got ndarray"):
        module.apply({"params": params}, x, t, cond.encoder_hidden_states)


def test_clip_text_model_with_projection_matches_transformers(tmp_path):
    eos = 2  # SDXL's text_encoder_2 config: transformers' legacy argmax(ids) pooling (test_clip.py has both rules)
    torch.manual_seed(0)
    ref = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**TEXT, eos_token_id=eos)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ref.save_pretrained(str(tmp_path))
    module, params = load_text_encoder(tmp_path)
    assert isinstance(module, clip.CLIPTextModelWithProjection)
    ids = np.random.default_rng(0).integers(3, 98, (3, 16)).astype(np.int32)
    ids[:, 0] = 0
    ids[0, 5], ids[1, -1], ids[2, 2] = eos, eos, eos  # eos then padding, eos last, tokens after an eos
    ids[0, 6:] = 1
    embeds, hidden = jax.jit(lambda p, i: module.apply({"params": p}, i, method="embeds_and_hidden_states"))(
        params, ids)
    with torch.no_grad():
        out = ref(torch.from_numpy(ids).long(), output_hidden_states=True)
    assert len(hidden) == len(out.hidden_states) == 4
    chex.assert_trees_all_close((embeds, hidden[-2]), (out.text_embeds.numpy(), out.hidden_states[-2].numpy()),
                                atol=TOL, rtol=0)
    save_component(tmp_path / "copy", module, params, weights_name="model.safetensors")
    again = transformers.CLIPTextModelWithProjection.from_pretrained(str(tmp_path / "copy"))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ref.state_dict().items())


@pytest.mark.slow  # traces two full-size UNets (~25 s on the loaded 2-core CPU)
@pytest.mark.parametrize("name, count, attn1", [("sd_v2_1", 865_910_724, 16), ("sdxl_base", 2_567_463_684, 70)])
def test_full_size_configs_build_diffusers_exact_parameter_sets(name, count, attn1):
    """SD 2.1's and SDXL base's UNet configs (their config.json's architecture fields, written here from the
    published values): the same parameter names and shapes as diffusers builds, and the attn1 layers the paper
    configs probe."""
    import diffusers
    config = json.loads((Path(__file__).parent / "fixtures" / f"{name}_unet_config.json").read_text())
    module = load.build_unet(config)
    template = load.param_shapes(module)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(template)) == count
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel.from_config(config)
    state = {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape)) for k, v in ref.state_dict().items()}
    convert.state_dict_to_params(state, template)  # raises on any missing/unexpected/mis-shaped name
    assert len(hooks.select_layers(module, "*attn1/to_out_0")) == attn1
