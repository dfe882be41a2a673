r"""The paper's setting on a local Stable Diffusion v1 directory: 617 generated images (246 train / 371 test), LMS 15
steps, CFG 7.5, 512x512, the 16 attn1 layers, bf16 store, both baselines. Labels are made between stages
(docs/labels.md): the capture writes images/ and index.csv, the label stage takes your segmentation (the salient
object is its largest instance) or masks, and depth from a local DPT-Large / MiDaS directory or your depth.npy.

  SD="--config=configs/scene/sd_v1_paper.py --config.pipeline_dir=/data/sd-v1-4 --config.prompts_file=prompts.txt"
  python launch/probe.py $SD --config.stage=capture --workdir=runs/sd_v1_paper
  cp runs/sd_v1_paper/images/index.csv labels/   # + labels/segmentation.npy (or saliency.npy) [617, H, W]
  python launch/probe.py $SD --config.stage=label --config.labels_dir=labels/ \
      --config.depth_model_dir=/data/dpt-large --workdir=runs/sd_v1_paper
  python launch/probe.py $SD --config.stage=fit --workdir=runs/sd_v1_paper   # then --config.stage=report

No SD v1 weights exist where jaxprobe is built: its time and results on real weights are NOT measured here (the
paper reports Dice ~0.85 and depth RMSE ~0.47). Measured instead, on the 2-core CPU (2026-12-05): these four
commands on `jaxprobe.testing.sd_v1_structured_pipeline` (SD v1's blocks and module paths at small widths, random
weights) at --config.resolution=64 with all 617 prompts and random label files: capture 3 min 8 s, label 11 s, fit
4 min 50 s, report 17 s. Its scores are chance by construction (depth RMSE 1.000, best saliency Dice 0.29-0.31 for
masks covering 26%); tests/scene/test_stages.py runs the same flow in the slow tier. At full width with random
weights (`python launch/bench.py rehearsal`, 2026-12-07, 23.5 GiB RAM): 256x256 capture 5.2 min a batch of 4
(11.9 GiB peak RSS), label 1.1 min, fit 4.8 min for 8 images; 512x512 capture 14.4 min for a batch of 2 (11.8 GiB
peak), so 617 images would take about 74 hours on this CPU (docs/scale-out.md#the-full-width-rehearsal).
"""
from pathlib import Path

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("toy_probe.py"))
    c.pipeline_dir = ""
    c.labelers_dir = ""
    c.labels_dir = ""
    c.prompts_file = ""
    c.resolution = 512
    c.num_train = 246
    c.num_test = 371
    c.num_val = 62  # a quarter of the train images, as toy_probe: probes fit on 184, cells chosen on these 62
    c.batch_size = 4
    c.store_dtype = "bfloat16"
    c.store_pool = 1  # 2 or 4: a 4x / 16x smaller store (docs/scale-out.md)
    c.fit_memory_gb = 24.0  # the 16 layers' test activations (128.6 GB bf16) read and fit in 7 parts of <= 24 GB
    return c
