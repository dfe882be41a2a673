r"""The paper's intervention on a local Stable Diffusion v1 directory, with the probes of configs/scene/sd_v1_paper.py:
saliency on the 9 up-block attn1 layers at steps 0-4 (cross-entropy), or (':depth') depth on all 16 attn1 layers at
steps 0-2 (Huber, the shifted depth rescaled to [-9, 9]); Adam lr 5e-3, 128 iterations; 5 shifts per image.

  python launch/intervene.py --config=configs/scene/sd_v1_intervene.py \
      --config.pipeline_dir=/data/stable-diffusion-v1-4 --config.probes=runs/sd_v1_paper \
      --config.prompts_file=prompts.txt --config.labels_dir=labels/ --workdir=runs/sd_v1_intervene
  python launch/intervene.py --config=configs/scene/sd_v1_intervene.py:depth ...

The targets move the plain samples' labels: give the labels the sweep was given (saliency.npy, depth.npy in the
order of the prompts file, which the sweep sampled with the same seeds, so its image i is this run's plain sample
i). Without labelers for real images the run writes the images and edits.csv only, as the paper's code does.
No SD v1 weights exist where jaxprobe is built: time and results on real weights are NOT measured here. Measured
instead, on the 2-core CPU (2026-12-02): this config on the tiny random pipeline of tests/tiny_sd.py (its 3 up-block
attn1 layers) with random saved probes and labels at --config.resolution=16, 8 prompts x 5 shifts = 40 edits with
all controls, ran end to end in 15 s (images, edits.csv, summary.json); its edits are meaningless by construction.
"""
from pathlib import Path

from jaxprobe import config_file


def get_config(arg: str = "saliency"):
    c = config_file.load(Path(__file__).with_name("toy_intervene.py"))
    c.task = arg
    c.lr = 5e-3  # the paper's: Adam on every token for 128 iterations. Options (configs/scene/toy_intervene.py):
    # --config.local=True, --config.relative=True, --config.stop_loss=<loss>, --config.mode=min_norm,
    # --config.hold_background=True, --config.uncond_too=True
    c.mode, c.relative, c.local, c.hold_background, c.uncond_too = "adam", False, False, False, False
    c.region_radius = 32  # label pixels at 512^2: the toy's 4 at 64^2
    c.pipeline_dir = c.labelers_dir = ""
    c.layers = ("up_blocks*attn1/to_out_0",) if arg == "saliency" else ("*attn1/to_out_0",)
    c.steps = (0, 1, 2, 3, 4) if arg == "saliency" else (0, 1, 2)
    c.resolution = 512
    c.num_images = 371  # the paper's test split
    c.shifts_per_image = 5
    c.batch_size = 2
    return c
