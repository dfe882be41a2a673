r"""The concept study's labeller: a tiny CLIP (transformers CLIPModel format, vision + text towers) trained
contrastively on toy concept card captions, including the probe template "This image has a concept: <c>".

  python launch/train.py --config=configs/toy/clip.py --workdir=runs/toy_clip

Machine: the 2-core x86_64 CPU, data parallel. Time: 5 min 0 s (2026-12-04). Result: zero-shot accuracy with the
template prompts on 2000 held-out cards: colour 99.95 %, pattern 64.0 %; as the concept study's labeller
precision@100 1.00 for the colours, 0.96 / 0.71 / 0.86 for dotted / striped / zigzagged.
Writes runs/toy_clip/clip/ (config.json, model.safetensors, tokenizer files, metrics.json) and the shipped copy
assets/toy_clip/. Resumable: rerun the same command after a kill.
"""
import ml_collections

from jaxprobe import mesh


def get_config():
    c = ml_collections.ConfigDict()
    c.mesh = mesh.config()  # devices along the data and probe axes (jaxprobe.mesh); -1: the rest
    c.model = "clip"
    c.seed = 0
    c.resolution = 64  # cards at the probed model's size
    c.image_size = 64
    c.patch_size = 8
    c.width = 64
    c.heads = 4
    c.vision_layers = 3
    c.text_layers = 2
    c.projection_dim = 64
    c.max_length = 16
    c.template = "This image has a concept: {}"
    c.num_train = 16384
    c.num_test = 2000
    c.batch_size = 256
    c.num_steps = 500
    c.lr = 3e-3
    c.warmup_steps = 50
    c.weight_decay = 1e-4
    c.checkpoint_every = 100
    c.export_dir = "assets/toy_clip"  # the shipped copy; "" to skip
    return c
