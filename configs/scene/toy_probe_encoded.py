r"""The probes the toy intervention edits against: saliency probes of the shipped toy LDM fitted on real toy scenes
(exact masks), VAE-encoded and noised to each step's t_k, rather than on the model's own samples labelled by the
labelers; 256 train / 64 test scenes, trained model only, the 16 attn1 layers x 15 LMS steps.

  python launch/probe.py --config=configs/scene/toy_probe_encoded.py --workdir=runs/toy_probe_encoded

Machine: the 2-core x86_64 CPU. Time: 1 min 10 s (2026-12-02). Result: best saliency Dice 0.347 [0.284, 0.410]
(down0.a1, step 12); in the 9 up-block layers at steps 0-4, where the intervention edits, test Dice is at most 0.011,
yet editing along these probes moves the object (docs/intervention.md).
"""
from pathlib import Path

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("toy_probe.py"))
    c.data = "encoded"
    c.models = ("trained", "vae", "vae_x0")
    c.tasks = ("saliency",)
    c.num_train, c.num_test = 256, 64
    c.store_pool = 1  # no pooling: the intervention edits full-resolution activations against these probes
    return c
