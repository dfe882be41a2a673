r"""The probed model of the concept study: torchvision's MobileNetV2 at width 0.5, trained on the toy concept cards'
16-way shape x pattern task (colour is irrelevant to it), with checkpoints along training.

  python launch/train.py --config=configs/toy/mobilenet_v2.py --workdir=runs/toy_mobilenet_v2

Machine: the 2-core x86_64 CPU, data parallel. Time: 14 min 39 s (2026-12-04; its first 5 min shared the CPU with
tests). Result: 96.35 % test accuracy on 2000 held-out cards at step 1792 (6.05 % at step 0), 12 checkpoints.
Writes runs/toy_mobilenet_v2/checkpoints_torchvision/step_*.safetensors (torchvision state dicts, float16) and the
shipped copy assets/toy_mobilenet_v2/. Resumable: rerun the same command after a kill.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.model = "mobilenet_v2"
    c.seed = 0
    c.resolution = 64
    c.width_mult = 0.5
    c.dropout = 0.2
    c.num_train = 16384  # card seeds 0..N-1; held-out cards start at render.TEST_SEED_OFFSET
    c.num_test = 2000
    c.batch_size = 64
    c.epochs = 7
    c.early_checkpoints = 4  # log-spaced steps inside the first epoch, besides step 0 and every epoch end
    c.lr = 4e-3
    c.warmup_steps = 200
    c.weight_decay = 4e-5
    c.bn_images = 1024  # one train-mode pass over these gives each checkpoint's batch-norm statistics
    c.checkpoint_every = 256  # orbax training state, for resume
    c.export_dir = "assets/toy_mobilenet_v2"  # the shipped copy; "" to skip
    return c
