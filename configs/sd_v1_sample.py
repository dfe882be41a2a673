"""Sample from a local Stable Diffusion v1 diffusers directory with the paper's settings (LMS, 15 steps, CFG 7.5).

  python launch/sample.py --config=configs/sd_v1_sample.py --config.pipeline_dir=/path/to/stable-diffusion-v1-4 \
      --config.prompts="a photo of a red car|a cat on a sofa" --workdir=runs/sd_samples
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
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
