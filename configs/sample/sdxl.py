r"""Sample from a local SDXL base diffusers directory (`StableDiffusionXLPipeline.save_pretrained`: two text
encoders and tokenizers) with the paper's settings: LMS, 15 steps, CFG 7.5, at SDXL's native 1024x1024.

  python launch/sample.py --config=configs/sample/sdxl.py --config.pipeline_dir=/data/sdxl-base \
      --config.prompts="a photo of a red car|a cat on a sofa" --config.dtype=bfloat16 --workdir=runs/sdxl_samples

As configs/sample/sd_v1.py: resumable, refused before compiling if it cannot fit the device. An empty negative
prompt gives zero unconditional embeddings (SDXL's force_zeros_for_empty_prompt); the VAE decodes in fp32
(force_upcast). No SDXL weights exist where jaxprobe is built, so its time and images on real weights are NOT
measured here. Measured instead, on the 2-core CPU shared with other jobs (2026-12-07): this config on
`jaxprobe.testing.sdxl_structured_pipeline` at its native size (--config.height=64 --config.width=64, 2 prompts)
took 31 s wall at load average ~4 (loading and compiling included). The code path is the one
tests/diffusion/test_pipeline_families.py checks against diffusers' StableDiffusionXLPipeline (Euler, DDIM):
images within 2/255.
"""
from pathlib import Path

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("sd_v1.py"))
    c.height = c.width = 1024
    c.batch_size = 1
    return c
