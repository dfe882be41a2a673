"""A tiny random Stable Diffusion pipeline built with diffusers/transformers PyTorch (the parity reference)."""
from pathlib import Path

from jaxprobe import io
from jaxprobe.scene import image_index
from jaxprobe.testing import write_char_tokenizer

PROMPTS = ["a red ball", "blue cube", "a green cone", "two cubes", "a sphere", "red cone", "big ball", "a cube"]


def write_index(directory, prompts, seed: int = 0):
    """The images/index.csv a sweep with these prompts and config.seed writes, as a user copies it beside labels."""
    io.write_csv(Path(directory) / image_index.INDEX, image_index.rows(prompts, range(seed, seed + len(prompts)), 0),
                 image_index.COLUMNS)


def _vae(**config):
    """The tiny AutoencoderKL (factor 2: 16x16 images from 8x8 latents)."""
    import diffusers
    return diffusers.AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, **config).eval()


def _text_config(vocab_size: int, **config):
    """The tiny CLIPTextConfig (width 32, 3 layers, 32 tokens) over `write_char_tokenizer`'s vocabulary."""
    from transformers import CLIPTextConfig
    return CLIPTextConfig(**{**dict(
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, hidden_size=32,
        intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=3,
        max_position_embeddings=32, vocab_size=vocab_size), **config})


def _tokenizer(directory, **kwargs):
    from transformers import CLIPTokenizer
    write_char_tokenizer(directory, **kwargs)
    return CLIPTokenizer.from_pretrained(str(directory))


def build_torch_pipeline(directory, *, seed: int = 0, scheduler: str = "LMSDiscreteScheduler"):
    """Save a random tiny StableDiffusionPipeline to `directory`; returns the PyTorch pipeline."""
    import diffusers
    import torch
    from transformers import CLIPTextModel

    directory = Path(directory)
    tokenizer = _tokenizer(directory / "tokenizer")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=4)
    vae = _vae()
    text = CLIPTextModel(_text_config(len(tokenizer)))
    sched = getattr(diffusers, scheduler)(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = diffusers.StableDiffusionPipeline(
        unet=unet.eval(), vae=vae, text_encoder=text.eval(), tokenizer=tokenizer, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(directory))
    return pipe


SDXL_UNET = dict(  # SDXL's layout: a plain first block, text_time conditioning, deeper transformers further down
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, norm_num_groups=32, attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 16)


def build_torch_sdxl_pipeline(directory, *, seed: int = 0, max_shard_size: str | None = None):
    """Save a random tiny StableDiffusionXLPipeline (VAE factor 2, 16x16 images, two 32-wide text encoders, the
    second with a 16-wide projection, GELU and legacy argmax pooling (eos_token_id 2) as SDXL's, tokenizer_2
    padding with "!") to `directory`, its weights in shards of `max_shard_size`; returns it."""
    import diffusers
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    directory = Path(directory)
    tokenizer, tokenizer_2 = _tokenizer(directory / "tokenizer"), _tokenizer(directory / "tokenizer_2", pad_token="!")
    torch.manual_seed(seed)
    pipe = diffusers.StableDiffusionXLPipeline(
        unet=diffusers.UNet2DConditionModel(**SDXL_UNET).eval(), vae=_vae(scaling_factor=0.13025),
        text_encoder=CLIPTextModel(_text_config(len(tokenizer))).eval(),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(
            len(tokenizer), eos_token_id=2, hidden_act="gelu", projection_dim=16)).eval(),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        scheduler=diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                   steps_offset=1, timestep_spacing="leading"))
    pipe.save_pretrained(str(directory), max_shard_size=max_shard_size)
    return pipe


def build_torch_sd2_pipeline(directory, *, seed: int = 0):
    """Save a random tiny SD 2.1-structured StableDiffusionPipeline to `directory` (v-prediction DDIM, linear
    projections, upcast attention, per-block heads, GELU text encoder); returns it."""
    import diffusers
    import torch
    from transformers import CLIPTextModel

    directory = Path(directory)
    tokenizer = _tokenizer(directory / "tokenizer")
    torch.manual_seed(seed)
    pipe = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, norm_num_groups=32,
            attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True).eval(),
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(len(tokenizer), hidden_act="gelu")).eval(),
        tokenizer=tokenizer,
        scheduler=diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                          clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                          prediction_type="v_prediction"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(directory))
    return pipe
