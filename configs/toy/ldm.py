r"""The shipped toy LDM: UNet2DConditionModel with SD v1's block structure (the paper's 16 attn1 layers) and a tiny
CLIPTextModel trained jointly on the toy VAE's 16x16x4 latents; logit-normal timesteps, Min-SNR-5, 3600 x 16.

  python launch/train.py --config=configs/toy/ldm.py --config.vae_dir=runs/toy_vae/vae --workdir=runs/toy_ldm

Machine: the 2-core x86_64 CPU, data parallel. Time: 34:51 on an idle machine (2026-12-07, 0.52 s/step, three
quality evaluations 75 s; the end monitor 96.9% found, 82.8% colour on 64 captions), 33.9 min (2026-12-01); 26:37
(2026-11-25, 0.341 s/step, the previous palette): the machine's step time moves 1.5x between days.
Result: runs/toy_ldm/pipeline (= assets/toy_pipeline); on 128 unseen captions (LMS 15, CFG 7.5) the labelers find a
salient object in 99.2% and the caption's colour in 85.9% (goals 90% / 80%); Euler 95.3%. Train the VAE and the
labelers first (configs/toy/vae.py, labelers.py). Resumable. A rerun builds its own tokenizer, so compare its
quality, not its bits. Details: docs/toy_models.md.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.model = "ldm"
    c.seed = 0
    c.vae_dir = "runs/toy_vae/vae"  # written by configs/toy/vae.py
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
    c.snr_gamma = 5.0  # Min-SNR-gamma loss weight min(SNR, gamma) / SNR (recipes.ldm_loss_fn); 0 = plain MSE
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
