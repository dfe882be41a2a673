r"""The probes the toy intervention edits against: saliency probes of the shipped toy LDM fitted on real toy scenes
(exact masks), VAE-encoded and noised to each step's t_k, rather than on the model's own samples labelled by the
labelers; 256 train (64 of them validation) / 64 test scenes, trained model only, the 16 attn1 layers x 15 LMS steps.

  python launch/probe.py --config=configs/scene/toy_probe_encoded.py --workdir=runs/toy_probe_encoded

Machine: the 2-core x86_64 CPU. Time: 8 min 23 s (2026-12-07, three tasks, cores shared with other jobs; 1 min 10 s
for saliency alone on 2026-12-02). Result, cells chosen on the 64 validation scenes: saliency Dice 0.283
[0.224, 0.343] (down0.a1, step 12; prior 0.000, ceiling 0.837); depth RMSE 0.396 [0.387, 0.406] (up2.a2, step 13)
and inverse depth 0.487 [0.463, 0.512], both no better than the prior (the mean depth map: 0.362 and 0.400;
trained - prior paired: -0.034 [-0.069, +0.002] and -0.087 [-0.130, -0.043]). In the 9 up-block layers at steps
0-4, where the intervention edits, test Dice is at most 0.026, yet editing along these probes moves the object
(docs/intervention.md).
"""
from pathlib import Path

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("toy_probe.py"))
    c.data = "encoded"
    c.models = ("trained",)
    c.tasks = ("saliency", "depth", "inverse_depth")
    c.num_train, c.num_test = 256, 64
    c.num_val = 64  # a quarter of the train scenes, as toy_probe: probes fit on 192, cells chosen on these 64
    c.store_pool = 1  # no pooling: the intervention edits full-resolution activations against these probes
    return c
