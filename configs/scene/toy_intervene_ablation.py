r"""What moves the object: the toy intervention (configs/scene/toy_intervene.py) once per setting, 64 edits each
(32 images x 2 shifts, the edit only), varying one thing at a time from the best setting: the layer set, the step
window, the edit strength (lr), the scheduler, and SGD vs ridge probes.

  python launch/probe.py --config=configs/scene/toy_probe.py --workdir=runs/toy_probe
  python launch/probe.py --config=configs/scene/toy_probe.py --config.probe.kind=ridge \
      --config.models='("trained",)' --workdir=runs/toy_probe_ridge
  python launch/intervene.py --config=configs/scene/toy_intervene_ablation.py --config.probes=runs/toy_probe \
      --workdir=runs/toy_intervene_ablation

Writes ablation.csv and figures/ablation.png (each setting's run in its own subdirectory). Machine, time and the
table: docs/intervention.md.
"""
import ml_collections

from configs.scene import toy_intervene

RIDGE_PROBES = "runs/toy_probe_ridge"  # the second command above


def get_config():
    c = toy_intervene.get_config()
    c.num_images, c.shifts_per_image, c.controls = 32, 2, ()
    c.ablation = ml_collections.ConfigDict({  # {name: overrides}; run and shown in name order
        "01_best": {},  # lr 1e-2, the 9 up-block attn1 layers, steps 0-4, LMS, SGD probes
        "02_lr_5e-3_paper": {"lr": 5e-3},
        "03_lr_2e-2": {"lr": 2e-2},
        "04_lr_5e-2": {"lr": 5e-2},
        "05_layers_best3": {"layers": ("best:3",)},  # the 3 layers whose probes read saliency best at steps 0-4
        "06_layers_all16": {"layers": ("*attn1/to_out_0",)},
        "07_steps_3-7": {"steps": (3, 4, 5, 6, 7)},
        "08_steps_5-9": {"steps": (5, 6, 7, 8, 9)},
        "09_euler": {"scheduler": "euler"},
        "10_ridge_probes": {"probes": RIDGE_PROBES},
    })
    return c
