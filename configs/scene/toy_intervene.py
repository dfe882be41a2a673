r"""Move the salient object in the shipped toy LDM's samples by editing activations against a sweep's frozen
saliency probes (the paper's intervention), and measure that it moved, against no edit, a null edit, a
random-direction edit of equal norm and the opposite translation, all with the same seeds and prompts.

  python launch/probe.py --config=configs/scene/toy_probe.py --workdir=runs/toy_probe   # the probes
  python launch/intervene.py --config=configs/scene/toy_intervene.py --config.probes=runs/toy_probe \
      --workdir=runs/toy_intervene

Machine: the 2-core x86_64 CPU. Time and result: see docs/intervention.md (measured, with the ablation).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.pipeline_dir = "assets/toy_pipeline"
    c.labelers_dir = "assets/toy_labelers"  # labels the samples (targets and measures); "" = images only
    c.labels_dir = ""  # or the plain samples' saliency.npy / depth.npy (targets only; no labelers, no measures)
    c.probes = ""  # a sweep workdir (launch/probe.py --workdir) fitted on this pipeline
    c.probe_model = "trained"
    c.task = "saliency"  # or "depth": the depth probes, a shifted depth map rescaled to depth_range
    c.layers = ("up_blocks*attn1/to_out_0",)  # the paper's: the up blocks' self-attention outputs
    c.steps = (0, 1, 2, 3, 4)  # the paper's saliency window (depth: 0-2)
    c.lr = 1e-2  # Adam on the activation; the paper: 5e-3 (weaker here, see the ablation)
    c.iterations = 128
    c.depth_range = (-9.0, 9.0)  # the shifted depth target's min-max rescale (a strength knob)
    c.shift_fraction = (90 / 512, 120 / 512)  # each axis' shift: +-[90, 120) px at 512^2, the same fraction here
    c.target_file = ""  # a user's target (.npy mask or depth, .png mask) for every edit instead of a translation
    c.prompts_file = ""  # default: toy-world captions of scenes scene_seed_offset ..
    c.scene_seed_offset = 5_000_000  # scenes no shipped model trained on, and no sweep probed
    c.num_images = 64
    c.shifts_per_image = 4  # 256 edits
    c.seed = 0  # image i is sampled with seed + i, in every run
    c.batch_size = 32
    c.resolution = 64
    c.num_inference_steps = 15  # must be the sweep's: a probe belongs to one step
    c.guidance_scale = 7.5
    c.scheduler = "lms"
    c.controls = ("null", "random", "opposite")
    c.min_pixels = 8  # a salient object is found with at least this many pixels
    return c
