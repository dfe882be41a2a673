r"""What moves the object: the toy intervention (configs/scene/toy_intervene.py) once per setting, 64 edits each
(32 images x 2 shifts, the edit only), varying one thing at a time from the best setting (the paper's lr 5e-3, the
9 up-block attn1 layers, steps 0-4, LMS, SGD probes fitted on encoded scenes): the strength (lr), the layer set, the
step window, the scheduler, and the probes (fitted on generated images, SGD vs ridge).

  python launch/probe.py --config=configs/scene/toy_probe_encoded.py --workdir=runs/toy_probe_encoded
  python launch/probe.py --config=configs/scene/toy_probe.py --config.models='("trained",)' --workdir=runs/toy_probe
  python launch/probe.py --config=configs/scene/toy_probe.py --config.models='("trained",)' \
      --config.probe.kind=ridge --workdir=runs/toy_probe_ridge
  python launch/intervene.py --config=configs/scene/toy_intervene_ablation.py \
      --config.probes=runs/toy_probe_encoded --workdir=runs/toy_intervene_ablation

Writes ablation.csv and figures/ablation.png (each setting's run in its own subdirectory).
Machine: the 2-core x86_64 CPU. Time: 6 min (2026-12-02). Result: transfer +0.518 at the best setting (colour kept
78%); stronger edits move more and break the scene (lr 2e-2: +0.727, colour 41%); the 16x16 up-block layers do the
moving (the 3 best-reading layers: -0.034; up_blocks_1-2: -0.015); steps 3-7 +0.355, 5-9 +0.128; Euler +0.534;
probes fitted on generated images +0.460, ridge ones +0.093. Table and reading: docs/intervention.md.
"""
from pathlib import Path

import ml_collections

from jaxprobe import config_file

GENERATED_PROBES = "runs/toy_probe"  # the second command above
RIDGE_PROBES = "runs/toy_probe_ridge"  # the third


def get_config():
    c = config_file.load(Path(__file__).with_name("toy_intervene.py"))
    c.num_images, c.shifts_per_image, c.controls = 32, 2, ()
    c.lr, c.hold_background = 5e-3, False  # the paper's edit, as measured (toy_intervene.py now holds the background)
    # {name: overrides}, run and shown in name order; names are Python names, so that an override can address one:
    # --config.ablation.s02_lr_1e_2.lr=3e-2
    c.ablation = ml_collections.ConfigDict({
        "s01_best": {},
        "s02_lr_1e_2": {"lr": 1e-2},
        "s03_lr_2e_2": {"lr": 2e-2},
        "s04_lr_5e_2": {"lr": 5e-2},
        "s05_layers_best3": {"layers": ("best:3",)},  # the 3 layers whose probes read saliency best at steps 0-4
        "s06_layers_all16": {"layers": ("*attn1/to_out_0",)},
        "s07_layers_up1_2": {"layers": ("up_blocks_[12]*attn1/to_out_0",)},  # the 9 less the 16x16 ones
        "s08_steps_3_7": {"steps": (3, 4, 5, 6, 7)},
        "s09_steps_5_9": {"steps": (5, 6, 7, 8, 9)},
        "s10_euler": {"scheduler": "euler"},
        "s11_probes_generated": {"probes": GENERATED_PROBES},
        "s12_probes_generated_ridge": {"probes": RIDGE_PROBES},
        "s13_probes_generated_lr_2e_2": {"probes": GENERATED_PROBES, "lr": 2e-2},
    })
    return c
