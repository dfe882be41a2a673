r"""Move the salient object in the shipped toy LDM's samples by editing activations against a sweep's frozen
saliency probes (the paper's intervention), and measure that it moved, against no edit, a null edit, a
random-direction edit of equal norm and the opposite translation, all with the same seeds and prompts.

  python launch/probe.py --config=configs/scene/toy_probe_encoded.py --workdir=runs/toy_probe_encoded  # 1 min
  python launch/intervene.py --config=configs/scene/toy_intervene.py --config.probes=runs/toy_probe_encoded \
      --workdir=runs/toy_intervene

Machine: the 2-core x86_64 CPU. Time: 26 min with the five controls (--config.controls='("null","random",
"opposite","roll","shuffled")'), 2026-12-07, cores shared with two other jobs. Result (the default: Adam lr 1e-2 with
the background held to the plain sample's latents, the setting that kept the scene best at transfer >= 0.5 on the
tuning images of toy_intervene_modes.py; 256 held-out edits, 95% intervals clustered by image): transfer +0.291
[+0.192, +0.387] (paired over the random-direction control +0.275 [+0.178, +0.373]), found 98%, colour kept 73%
(unedited 87%), background change 0.070 (random direction 0.038); shuffled-label probes move it as far (+0.323).
The paper's setting (--config.lr=5e-3 --config.hold_background=False, 9 min 19 s with three controls): transfer
+0.270 [+0.170, +0.367], colour 84%, background change 0.128. The issue-34 goal (transfer >= 0.5 with the scene kept)
is not met by any setting; docs/intervention.md#edit-modes has the tables and the reasons.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.pipeline_dir = "assets/toy_pipeline"
    c.labelers_dir = "assets/toy_labelers"  # labels the samples (targets and measures); "" = images only
    c.labels_dir = ""  # or the plain samples' saliency.npy / depth.npy (targets only; no labelers, no measures)
    c.probes = ""  # a sweep workdir (launch/probe.py --workdir) fitted on this pipeline
    c.probe_model = "trained"
    c.task = "saliency"  # or "depth": the depth probes, a shifted depth map rescaled to depth_range
    c.layers = ("up_blocks*attn1/to_out_0",)  # the paper's: the up blocks' self-attention outputs
    c.steps = (0, 1, 2, 3, 4)  # the paper's saliency window (depth: 0-2)
    c.lr = 1e-2  # Adam on the activation (the paper's 5e-3); stronger edits move more and lose the object's colour
    c.iterations = 128
    # The edit's mode (jaxprobe/scene/intervene.py EditHook): "adam" (the paper's) or "min_norm" (per token, the
    # smallest change along the probe's direction that reads the target with `margin`; no iterations).
    c.mode = "adam"
    c.relative = False  # Adam's step times each image's activation RMS at the layer: lr is a relative strength
    c.stop_loss = ml_collections.config_dict.placeholder(float)  # an image stops once its probe loss is <= this
    c.local = False  # change only tokens in the region: the plain object and its target, dilated by region_radius
    c.margin = 1.0  # min_norm: the logit margin the edited tokens get
    # After every step, latents outside the region are the plain sample's (blended sampling). With lr 1e-2, the
    # setting that kept the scene best at transfer >= 0.5 on the tuning images (configs/scene/toy_intervene_modes.py).
    c.hold_background = True
    c.uncond_too = False  # add the edit to the unconditional half too: CFG does not multiply it by guidance_scale
    c.region_radius = 4  # label pixels
    c.depth_range = (-9.0, 9.0)  # the shifted depth target's min-max rescale (a strength knob)
    c.shift_fraction = (90 / 512, 120 / 512)  # each axis' shift: +-[90, 120) px at 512^2, the same fraction here
    c.target_file = ""  # a user's target (.npy mask or depth, .png mask) for every edit instead of a translation
    c.prompts_file = ""  # default: toy-world captions of scenes scene_seed_offset ..
    c.scene_seed_offset = 5_000_000  # scenes no shipped model trained on, and no sweep probed
    c.num_images = 128
    c.shifts_per_image = 2  # 256 edits (the paper: 5 per image; more images, fewer shifts: tighter intervals)
    c.seed = 0  # image i is sampled with seed + i, in every run
    c.batch_size = 32
    c.resolution = 64
    c.num_inference_steps = 15  # must be the sweep's: a probe belongs to one step
    c.guidance_scale = 7.5
    c.scheduler = "lms"
    c.controls = ("null", "random", "opposite")
    c.random_scale = 1.0  # the random control's norm over the edit's (> 1: to match its damage instead)
    c.min_pixels = 8  # a salient object is found with at least this many pixels
    return c
