r"""The paper's setting on a local Stable Diffusion v1 directory: 617 generated images (246 train / 371 test), LMS 15
steps, CFG 7.5, 512x512, the 16 attn1 layers, bf16 store, user-supplied labels saliency.npy / depth.npy [N, 512, 512]
(from a saliency net and MiDaS) in the order of the prompts file.

  python launch/probe.py --config=configs/scene/sd_v1_paper.py --config.pipeline_dir=/data/stable-diffusion-v1-4 \
      --config.prompts_file=prompts.txt --config.labels_dir=labels/ --workdir=runs/sd_v1_paper

No SD v1 weights exist where jaxprobe is built: its time and results on real weights are NOT measured here (the
paper reports Dice ~0.85 and depth RMSE ~0.47). Measured instead, on the 2-core CPU (2026-12-02): this config on
the tiny random pipeline of jaxprobe/testing.py with random labels at test size (--config.resolution=16, all 617
prompts, both baselines, 30 epochs) ran end to end in 2 min 50 s wall; its scores are meaningless by construction.
"""
from configs.scene import toy_probe


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
    c.store_pool = 1  # 2 or 4: a 4x / 16x smaller store (docs/scale-out.md)
    return c
