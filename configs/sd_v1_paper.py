r"""The paper's setting on a local Stable Diffusion v1 directory: 617 generated images (246 train / 371 test),
LMS 15 steps, CFG 7.5, 512x512, the 16 attn1 layers, user-supplied labels (saliency from a saliency net, depth from
MiDaS) as saliency.npy / depth.npy [N, 512, 512] in the same order as the prompts file.

  python launch/probe.py --config=configs/sd_v1_paper.py --config.pipeline_dir=/data/stable-diffusion-v1-4 \
      --config.prompts_file=prompts.txt --config.labels_dir=labels/ --workdir=runs/sd_v1_paper
"""
from configs import toy_probe


def get_config():
    c = toy_probe.get_config()
    c.pipeline_dir = ""
    c.labelers_dir = ""
    c.labels_dir = ""
    c.prompts_file = ""
    c.resolution = 512
    c.num_train = 246
    c.num_test = 371
    c.batch_size = 4
    c.store_dtype = "bfloat16"
    return c
