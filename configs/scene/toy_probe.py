r"""Scene probing of the shipped toy LDM (the paper's recipe on the toy world): 16 attn1 layers x 15 LMS steps,
salient-object and depth probes, randomized-weight and VAE-decoder baselines, 128 train / 192 test generated scenes.

  python launch/probe.py --config=configs/scene/toy_probe.py --workdir=runs/toy_probe

Machine: the 2-core x86_64 CPU. Time: 15 min 59 s with --config.tasks='("saliency","depth","inverse_depth")'
(2026-12-07, sharing the cores with a training job). Result (results.csv, summary.json, figures/, probes/), cells
chosen on the 32 validation images, scored on the 192 test images: saliency Dice 0.294 [0.253, 0.333] (up2.a2,
step 14; AP 0.501), depth RMSE 0.485 [0.472, 0.498] (up2.a2, step 12), inverse depth 0.648 [0.551, 0.750];
randomized weights 0.047 / 0.824; the VAE decoder on x_t (the paper's) 0.386 / 0.533, on the predicted x0
0.402 / 0.531; the prior (mean label) 0.010 / 0.494: depth is not decoded beyond the layout (+0.009
[-0.015, +0.033]). Full tables: docs/results.md.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.pipeline_dir = "assets/toy_pipeline"
    c.labelers_dir = "assets/toy_labelers"  # labels generated images as the paper does (saliency net + MiDaS)
    c.labels_dir = ""  # or the user's label files (docs/labels.md): saliency.npy or segmentation.npy, depth.npy
    c.depth_model_dir = ""  # or depth labels from a transformers DPT / MiDaS directory, run in the job
    c.stage = "all"  # or one of 'capture', 'label', 'fit', 'report' (label the images elsewhere in between)
    c.data = "generated"  # 'generated' (the model's own samples) or 'encoded' (real scenes, exact labels)
    c.prompts_file = ""  # default: captions of toy-world scenes scene_seed_offset .. + N
    c.scene_seed_offset = 2_000_000  # scenes no shipped model was trained or evaluated on
    c.resolution = 64
    c.num_train = 128  # the paper: 246 train / 371 test of 617
    c.num_test = 192
    c.num_val = 32  # the last 32 train images: probes fit on the first 96, and the reported cells are chosen on these
    c.seed = 0  # image k is sampled with seed + k, whatever its batch
    c.batch_size = 32
    c.layers = ("*attn1/to_out_0",)  # the 16 self-attention outputs before the residual add
    c.steps = ()  # empty: every step
    c.num_inference_steps = 15
    c.guidance_scale = 7.5
    c.scheduler = "lms"
    c.store_dtype = "float32"  # or bfloat16 to halve the activation store
    c.store_pool = 1  # k > 1: average-pool each layer's token grid k x k before storing (k**2 smaller store)
    c.fit_memory_gb = 0.0  # > 0: fit the layers a part at a time, each part's activations of a split <= this (GB)
    c.models = ("trained", "randomized", "vae", "vae_x0")
    c.randomized_seed = 0
    c.tasks = ("saliency", "depth")
    c.probe = ml_collections.ConfigDict(dict(kind="linear", epochs=30, batch_size=4, lr=1e-3, seed=0,
                                             label_mode="upsample", hidden=256))
    c.probe.headline_seeds = 3  # the best cell refit with 2 more probe seeds: its test value's spread (1: off)
    return c
