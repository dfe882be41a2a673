"""UNet and VAE parity with diffusers PyTorch on random tiny configs, and SD v1-4's exact parameter set."""
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from jaxprobe import hooks
from jaxprobe.models import convert, load, load_unet, load_vae, save_component

TOL = 1e-4
SD_V1_4_UNET = json.loads((Path(__file__).parent / "fixtures" / "sd_v1_4_unet_config.json").read_text())

UNET_CONFIGS = {
    "sd_v1_structure": dict(  # SD v1's block layout (16 attn1 layers), tiny widths
        block_out_channels=(32, 64, 64, 64), layers_per_block=2, sample_size=16, cross_attention_dim=24,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=4, norm_num_groups=16),
    "sd2_like": dict(  # linear projections, per-block heads, other sinusoid convention, 2 transformer layers
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, flip_sin_to_cos=False, freq_shift=1,
        transformer_layers_per_block=2, norm_num_groups=8, center_input_sample=True, mid_block_scale_factor=1.5),
}


def _perturb(model, seed):
    """Random non-trivial weights (norm scales and biases too), so no zero/one init hides a layout bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _nchw(x):
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", list(UNET_CONFIGS))
def test_unet_matches_diffusers(name, tmp_path):
    import diffusers
    cfg = UNET_CONFIGS[name]
    torch.manual_seed(0)
    ref = _perturb(diffusers.UNet2DConditionModel(**cfg), 1)
    ref.save_pretrained(tmp_path)
    module, params = load_unet(tmp_path)
    rng = np.random.default_rng(0)
    s = cfg["sample_size"]
    x = rng.normal(size=(2, s, s, 4)).astype(np.float32)
    t = np.array([3.0, 817.5], np.float32)  # fractional, as LMS timesteps are
    ctx = rng.normal(size=(2, 7, cfg["cross_attention_dim"])).astype(np.float32)
    ours = jax.jit(module.apply)({"params": params}, x, t, ctx)  # one compile beats op-by-op dispatch (~30%)
    with torch.no_grad():
        theirs = ref(_nchw(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample
    chex.assert_trees_all_close(ours, _nhwc(theirs), atol=TOL, rtol=0)


def test_unet_layer_names_follow_diffusers(tmp_path):
    import diffusers
    diffusers.UNet2DConditionModel(**UNET_CONFIGS["sd_v1_structure"]).save_pretrained(tmp_path)
    module, params = load_unet(tmp_path)
    attn1 = hooks.select_layers(module, "*attn1/to_out_0")
    assert len(attn1) == 16  # the paper's 16 self-attention layers: 2+2+2 down, 1 mid, 3+3+3 up
    assert attn1[0] == "down_blocks_0/attentions_0/transformer_blocks_0/attn1/to_out_0"
    assert attn1[6] == "mid_block/attentions_0/transformer_blocks_0/attn1/to_out_0"
    assert hooks.select_layers(module, "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0") == (
        "up_blocks_3/attentions_2/transformer_blocks_0/attn1/to_out_0",)


def test_sd_v1_4_config_builds_diffusers_exact_parameter_set():
    import diffusers
    module = load.build_unet(SD_V1_4_UNET)
    template = load.param_shapes(module)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(template))
    assert count == 859_520_964
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel.from_config(SD_V1_4_UNET)
    # Zero-stride views stand in for the 3.4 GB of weights: names and shapes are what is checked.
    state = {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape)) for k, v in ref.state_dict().items()}
    params = convert.state_dict_to_params(state, template)  # raises on any missing/unexpected/mis-shaped name
    assert len(traverse_util.flatten_dict(params)) == len(state) == 686


def test_vae_encode_decode_match_diffusers(tmp_path):
    import diffusers
    torch.manual_seed(0)
    ref = _perturb(diffusers.AutoencoderKL(
        block_out_channels=(16, 32, 32), layers_per_block=2, latent_channels=4, norm_num_groups=8, sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3), 2)
    ref.save_pretrained(tmp_path)
    module, params = load_vae(tmp_path)
    assert module.config.downscale == 4
    x = np.random.default_rng(1).uniform(-1, 1, size=(2, 16, 20, 3)).astype(np.float32)
    mean, logvar = module.apply({"params": params}, x, method="encode")
    with torch.no_grad():
        dist = ref.encode(_nchw(x)).latent_dist
        decoded = ref.decode(dist.mean).sample
    chex.assert_trees_all_close(
        {"mean": mean, "logvar": logvar, "decoded": module.apply({"params": params}, mean, method="decode")},
        {"mean": _nhwc(dist.mean), "logvar": _nhwc(dist.logvar), "decoded": _nhwc(decoded)}, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="multiple of the VAE factor 4"):
        module.apply({"params": params}, x[:, :15], method="encode")


def test_save_component_round_trips_through_diffusers(tmp_path):
    import diffusers
    diffusers.UNet2DConditionModel(**UNET_CONFIGS["sd2_like"]).save_pretrained(tmp_path / "a")
    module, params = load_unet(tmp_path / "a")
    save_component(tmp_path / "b", module, params)
    again = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "b")
    first = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "a")
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(again.config) == public(first.config)
    for k, v in first.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


@pytest.mark.slow  # fast tier <= 5 min on 2 cores: closeness and train-mode checks run in the slow tier
def test_bf16_unet_stays_close_to_fp32(tmp_path):
    import diffusers
    torch.manual_seed(0)
    _perturb(diffusers.UNet2DConditionModel(**UNET_CONFIGS["sd2_like"]), 3).save_pretrained(tmp_path)
    module, params = load_unet(tmp_path)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    ctx = jax.random.normal(jax.random.key(1), (2, 5, 16))
    fp32 = module.apply({"params": params}, x, jnp.array([10, 500]), ctx)
    bf16 = module.clone(dtype=jnp.bfloat16).apply({"params": params}, x, jnp.array([10, 500]), ctx)
    assert bf16.dtype == jnp.bfloat16
    rel = float(jnp.linalg.norm(bf16.astype(jnp.float32) - fp32) / jnp.linalg.norm(fp32))
    assert rel < 0.03


def test_unsupported_config_values_are_rejected(tmp_path):
    from jaxprobe.models.unet import UNetConfig
    with pytest.raises(ValueError, match="act_fn='gelu' is not supported; supported: 'silu'"):
        UNetConfig.from_dict({**SD_V1_4_UNET, "act_fn": "gelu"})
    with pytest.raises(ValueError, match="CrossAttnDownBlock2D, DownBlock2D"):
        UNetConfig.from_dict({**SD_V1_4_UNET, "down_block_types": ["SimpleCrossAttnDownBlock2D"] * 4})
