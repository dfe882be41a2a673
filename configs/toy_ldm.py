"""The shipped toy LDM: UNet2DConditionModel with SD v1's block structure (3 cross-attention down blocks + 1 plain,
cross-attention mid block, 1 plain + 3 cross-attention up blocks; the paper's 16 attn1 layers) and a tiny
CLIPTextModel trained jointly, on the toy VAE's 16x16x4 latents. Exports a diffusers pipeline directory.

  python launch/train.py --config=configs/toy_ldm.py --config.vae_dir=runs/toy_vae/vae --workdir=runs/toy_ldm
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.model = "ldm"
    c.seed = 0
    c.vae_dir = "runs/toy_vae/vae"  # written by configs/toy_vae.py
    c.resolution = 64
    c.num_images = 8192
    c.block_out_channels = (32, 64, 64, 64)
    c.norm_num_groups = 8  # 4-8 channels a group (32 groups of 32 would be instance norm): half-run colour 31% -> 47%
    c.attention_heads = 1  # UNet heads: one head keeps the 256-token attention cheap on a CPU
    c.text_heads = 4
    c.text_width = 64
    c.text_layers = 2
    c.max_length = 20
    c.caption_dropout = 0.1
    c.snr_gamma = 5.0  # Min-SNR-gamma loss weight min(SNR, gamma) / SNR (toymodels.ldm_loss_fn); 0 = plain MSE
    c.logit_normal_timesteps = True  # t = 1000 * sigmoid(N(0, 1)): more of the middle steps, where colour is decided
    c.batch_size = 16  # at equal compute, twice the steps of half the batch: half-run colour 47% -> 59%
    c.num_steps = 3600
    c.lr = 2e-3
    c.text_lr_scale = 5.0  # the text encoder trains at lr * this
    c.weight_decay = 1e-4
    c.ema_decay = 0.995
    c.checkpoint_every = 500
    c.eval_every = 1200  # sample grid + quality every N steps and at the end; 0 = none
    c.labelers_dir = "assets/toy_labelers"  # evaluations measure generation quality with these ("" to skip)
    c.quality_images = 64
    return c
