r"""The paper's protocol (configs/scene/sd_v1_paper.py: 617 images, LMS 15 steps, CFG 7.5, every attn1 layer, bf16
store, both baselines) on a local Stable Diffusion 2.x directory at its native 768x768 (SD 2.1: v-prediction,
linear projections, upcast attention; docs/models.md), staged the same way:

  SD="--config=configs/scene/sd_v2_paper.py --config.pipeline_dir=/data/sd-2-1 --config.prompts_file=prompts.txt"
  python launch/probe.py $SD --config.stage=capture --workdir=runs/sd_v2_paper   # then label, fit, report

Its 16 attn1 layers at 768^2 store 0.78 GB per image (15 steps, bf16) and 289 GB for the 371 test images
(docs/models.md). No SD 2.x weights exist where jaxprobe is built: time and results on real weights are NOT measured
here. Measured instead, on the 2-core CPU shared with other jobs (2026-12-07): the capture stage of this config on
`jaxprobe.testing.sd_v2_structured_pipeline` (SD 2.1's blocks and options at small widths, random weights) at its
native --config.resolution=64 with 16 prompts (--config.num_train=8 --config.num_test=8 --config.num_val=2)
took 50 s wall at load average ~4.5 (16 images, 16 layers x 15 steps, both baselines and the randomized UNet;
compiling included); its scores are chance by construction. tests/diffusion/test_pipeline_families.py checks an SD
2.1-structured v-prediction pipeline against diffusers end to end (images within 2/255).
"""
from pathlib import Path

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("sd_v1_paper.py"))
    c.resolution = 768
    c.batch_size = 2
    c.fit_memory_gb = 24.0  # 289 GB of test activations read and fit in parts of <= 24 GB
    return c
