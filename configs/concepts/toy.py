r"""Concept probing across training on the toy concept cards (the paper's recipe, embedded): the shipped tiny CLIP
labels a pool of held-out cards, the top 100 / 200 random cards per colour and pattern concept are the sets, and
every module features_0..18 of every shipped MobileNetV2 checkpoint is probed by the three families.

  python launch/concepts.py --config=configs/concepts/toy.py --workdir=runs/concepts_toy

Machine: the 2-core x86_64 CPU. Time (2026-12-07, with the 95 % intervals, the pixel baseline and the 2x2 of
config.label_grid): 51 min 38 s wall, 828 s user + 83 s system CPU, peak RSS 3.4 GB, on a CPU shared with other jobs
throughout (load average 9-11; two test runs of this change for ~30 of the 51 minutes), so the wall time is ~3.5x
its CPU time; the 12 checkpoints took 44 min 10 s, the rest (pool, CLIP labels, pixel baseline, the 2x2, report) 7
min 28 s together. Before the intervals and the 2x2 the same sweep took 10 min 20 s sharing the cores with a test
run, 7 min 24 s alone (2026-12-04).
Result: CLIP precision@100 1.00 for the colours, 0.96 / 0.71 / 0.86 for dotted / striped / zigzagged; at the last
checkpoint colour is read best at features_0 (0.92, non_linear_gap, averaged over the colours), and the raw-pixel
baseline (mean RGB) reads it at 0.91: a property of the input. Pattern (linear_gap): best modules 0.76-0.93
[intervals about +-0.08], 0.10-0.14 above the pixel baseline; shuffled controls 0.56-0.60 (docs/concepts.md). The
2x2 at step 1792 (best module per concept, linear_gap, mean over colours / patterns; pixels in brackets):
clip/others 0.85 (0.81) / 0.86 (0.74), clip/non_candidates 0.99 (0.97) / 0.89 (0.69), truth/others 0.86 (0.79) /
0.88 (0.66), truth/non_candidates 0.99 (0.94) / 0.99 (0.66). On exact labels with negatives lacking the concept
(--config.labels=truth --config.negatives=non_candidates, 7 min 24 s before the intervals): colour >= 0.98 at
features_0 at every checkpoint, pattern 0.98-0.99 at features_18 at the last one (0.50 at step 0).
"""
import ml_collections

from jaxprobe import mesh

from jaxprobe.toy.cards import render


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.data = ml_collections.ConfigDict(dict(source="toycards", num_images=2000, seed_offset=3_000_000, path="",
                                            name="", split="train", feature="image", tfds_dir=""))
    c.resolution = 64
    c.clip_dir = "assets/toy_clip"
    c.labels = "clip"  # or "truth": exact labels through the same set-making code (toy cards only)
    c.template = "This image has a concept: {}"
    c.groups = ml_collections.ConfigDict({"color": list(render.COLORS), "pattern": list(render.PATTERNS)})
    c.num_positive = 100
    c.num_negative = 200
    c.negatives = "others"  # the paper: any other image; "non_candidates": images CLIP does not give the concept
    c.test_fraction = 0.3
    # also probe the last checkpoint under the 2x2 of label source (clip, truth) x negatives (others,
    # non_candidates): needs exact labels (toy cards) and config.clip_dir
    c.label_grid = True
    c.seed = 0
    c.checkpoints_dir = "assets/toy_mobilenet_v2"
    c.checkpoint_steps = ()  # empty: every checkpoint in the directory
    c.model = ml_collections.ConfigDict(dict(width_mult=0.5, num_classes=render.NUM_CLASSES))
    c.layers = ("features_?", "features_??")  # features_0 .. features_18, not their submodules
    c.families = ("linear_gap", "non_linear_gap", "non_linear_non_gap")
    c.models = ("trained", "shuffled")
    # Adam as the post's Othello-probe recipe, at 1e-2: at its 1e-3 for 30 epochs the GAP probes underfit their
    # train split (docs/concepts.md). The flattened-map MLPs fit theirs within 10 epochs and cost ~90 % of the sweep.
    c.probe = ml_collections.ConfigDict(dict(epochs=60, non_gap_epochs=10, batch_size=32, lr=1e-2, hidden=128,
                                             seed=0))
    c.capture_batch_size = 250
    return c
