r"""The shipped toy labelers (jaxprobe/toy/labelers.py): one small Flax U-Net (173k params) with a salient-object head
and a depth head, trained on the toy world's exact labels, standing in for the paper's saliency network and MiDaS.

  python launch/train.py --config=configs/toy/labelers.py --workdir=runs/toy_labelers

Machine: the 2-core x86_64 CPU, data parallel. Time: 3:55 (2026-12-07, beside `nice 19` test runs; IoU 0.951),
3.9 min (2026-12-01); 2:51 on an idle machine (2026-11-25, the previous palette). Result: runs/toy_labelers/labelers/ and the shipped copy
assets/toy_labelers/ (config.json, model.safetensors, metrics.json); on 256 held-out scenes saliency IoU 0.950 (goal
>= 0.9), depth RMSE 0.098 (z-scored), Spearman 0.957. Resumable: rerun the same command after a kill.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.model = "labelers"
    c.seed = 0
    c.resolution = 64
    c.num_images = 8192  # toy-world seeds 0..N-1 (train); held-out scenes start at eval_seed_offset
    c.num_eval = 256
    c.eval_seed_offset = 1_000_000
    c.channels = (16, 32, 48, 48)  # encoder widths at 32, 16, 8, 4 px (input folded 2x2); ~0.17 M params
    c.batch_size = 32
    c.num_steps = 1500
    c.lr = 2e-3
    c.weight_decay = 1e-4
    c.huber_delta = 1.0  # depth: Huber on z-scored depth
    c.dice_weight = 1.0  # saliency: pixel BCE + this * per-image soft Dice loss
    c.flip = True  # random left-right mirroring
    c.ema_decay = 0.995
    c.checkpoint_every = 500
    c.export_dir = "assets/toy_labelers"  # the shipped copy; "" to skip
    return c
