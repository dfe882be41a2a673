r"""Sample from a local Stable Diffusion v1 diffusers directory with the paper's settings: LMS, 15 steps, CFG 7.5,
512x512.

  python launch/sample.py --config=configs/sample/sd_v1.py --config.pipeline_dir=/data/stable-diffusion-v1-4 \
      --config.prompts="a photo of a red car|a cat on a sofa" --config.dtype=bfloat16 --workdir=runs/sd_samples

Writes 00000_seed0.png, ... and samples.json; a rerun of the same command keeps the images already written
(resume), and a size or batch that cannot fit the device's memory is refused before compiling. No SD v1 weights
exist where jaxprobe is built, so its time and images on real weights are NOT measured here (it needs a GPU/TPU in
practice). Measured instead, on the 2-core CPU
(2026-12-02): this config on the tiny random pipeline of jaxprobe/testing.py at test size
(--config.pipeline_dir=<tiny_pipeline dir> --config.height=16 --config.width=16, 2 prompts) took 14.5 s wall.
The code path is the one tests/diffusion/test_pipeline.py checks against diffusers: latents within 1e-3 after
10 steps (LMS, DDIM, Euler), images within 1/255.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.pipeline_dir = ""  # required: a diffusers StableDiffusionPipeline directory (unet/, vae/, text_encoder/, ...)
    c.prompts = "a photograph of an astronaut riding a horse"  # several prompts separated by '|'
    c.prompts_file = ""  # or one prompt per line
    c.num_images_per_prompt = 1
    c.scheduler = "lms"
    c.num_inference_steps = 15
    c.guidance_scale = 7.5
    c.seed = 0  # image k gets seed + k
    c.height = 512
    c.width = 512
    c.batch_size = 2
    c.dtype = "float32"  # or bfloat16 (params cast once; scheduler in fp32)
    return c
