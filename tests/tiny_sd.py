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


def build_torch_pipeline(directory, *, seed: int = 0, scheduler: str = "LMSDiscreteScheduler"):
    """Save a random tiny StableDiffusionPipeline to `directory`; returns the PyTorch pipeline."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory = Path(directory)
    vocab_size = write_char_tokenizer(directory / "tokenizer")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=4)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, hidden_size=32,
        intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=3,
        max_position_embeddings=32, vocab_size=vocab_size))
    sched = getattr(diffusers, scheduler)(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = diffusers.StableDiffusionPipeline(
        unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(str(directory / "tokenizer")), scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(directory))
    return pipe
