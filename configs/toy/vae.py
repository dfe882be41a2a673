r"""The shipped toy VAE: AutoencoderKL (16, 32, 64), 64x64 toy-world images -> 16x16x4 latents (x4, like SD's x8 at
512): 1600 steps on random 32x32 crops, then 600 steps of the decoder alone (encoder frozen: latents do not change).

  python launch/train.py --config=configs/toy/vae.py --workdir=runs/toy_vae   # -> runs/toy_vae/vae/

Machine: the 2-core x86_64 CPU, data parallel over its two cores. Time: 12:00 with the decoder phase (2026-12-07,
beside `nice 19` test runs), 8.1 + 2.7 min (2026-12-01); the first phase took 7:01 on an idle machine (2026-11-25,
the previous palette). The 2026-12-07 rerun reproduced both PSNRs below to the hundredth. Result: PSNR 24.67 dB on 256 held-out scenes after the first phase, 25.19 dB after the decoder
phase (goal >= 25 dB); this is assets/toy_pipeline/vae. Resumable: rerun the same command after a kill. Recipe:
docs/toy_models.md.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.model = "vae"
    c.seed = 0
    c.resolution = 64
    c.num_images = 8192  # toy-world seeds 0..N-1 (train); held-out scenes start at eval_seed_offset
    c.num_eval = 256
    c.eval_seed_offset = 1_000_000
    c.block_out_channels = (16, 32, 64)
    c.layers_per_block = 1
    c.norm_num_groups = 8
    c.crop_size = 32  # train on random 32x32 crops (4x cheaper per image; the VAE is convolutional); 0 = whole images
    c.batch_size = 32
    c.num_steps = 1600
    c.lr = 1e-3
    c.weight_decay = 1e-4
    c.kl_weight = 1e-6
    c.ema_decay = 0.998
    c.checkpoint_every = 200
    c.eval_every = 400
    # Then the decoder alone (encoder frozen, so the LDM's latents do not change) on posterior means: 24.7 -> 25.2 dB.
    c.decoder_steps = 600
    c.decoder_lr = 3e-4
    return c
