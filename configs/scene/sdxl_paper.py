r"""The paper's protocol (configs/scene/sd_v1_paper.py: 617 images, LMS 15 steps, CFG 7.5, every attn1 layer, bf16
store, both baselines) on a local SDXL base directory (`StableDiffusionXLPipeline.save_pretrained`) at its native
1024x1024, staged the same way:

  SD="--config=configs/scene/sdxl_paper.py --config.pipeline_dir=/data/sdxl-base --config.prompts_file=prompts.txt"
  python launch/probe.py $SD --config.stage=capture --workdir=runs/sdxl_paper   # then label, fit, report

SDXL has 70 attn1 layers (2 transformer blocks per attention at 64^2 tokens, 10 at 32^2): at 1024^2 they store
3.15 GB per image (15 steps, bf16) and 1.17 TB for the 371 test images (docs/models.md); --config.store_pool=2
makes that 4x smaller, or select fewer layers (e.g. --config.layers='("*transformer_blocks_0/attn1/to_out_0",)': 22
layers). No SDXL weights exist where jaxprobe is built: time and results on real weights are NOT measured here.
Measured instead, on the 2-core CPU shared with other jobs (2026-12-07): the capture stage of this config on
`jaxprobe.testing.sdxl_structured_pipeline` (SDXL's blocks and module paths at small widths, random weights; 22
attn1 layers) at its native --config.resolution=64 with 16 prompts (--config.num_train=8 --config.num_test=8
--config.num_val=2) took 61 s wall at load average ~4 (16 images, 22 layers x 15 steps, both baselines and the
randomized UNet; compiling ~38 s of it); tests/scene/test_sdxl_scene.py runs it through label, fit, report and an
intervention in the slow tier. Its scores are chance by construction.
"""
from pathlib import Path

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("sd_v1_paper.py"))
    c.resolution = 1024
    c.batch_size = 1
    c.fit_memory_gb = 24.0  # 1.17 TB of test activations read and fit in parts of <= 24 GB
    return c
