r"""The paper's setting on real data: a local CLIP ViT-B/32 labels an image pool (a folder, or a prepared tfds data
set such as imagenet2012), the top 100 / 200 random images per concept are the sets, and every module of every
torchvision MobileNetV2 checkpoint (width 1.0, 1000 classes, 224 px) is probed by the three families.

  python launch/concepts.py --config=configs/concepts/paper.py --workdir=runs/concepts_paper \
      --config.data.path=/data/images --config.clip_dir=/models/clip-vit-base-patch32 \
      --config.checkpoints_dir=/models/mobilenet_v2_checkpoints

Checkpoints: torchvision `mobilenet_v2` state dicts saved as `<anything>_<step>.safetensors` (e.g.
`safetensors.torch.save_file(model.state_dict(), f"step_{step:06d}.safetensors")`). The paper used 50,000 images;
--config.data.source=tfds --config.data.name=imagenet2012 --config.data.split=validation reads a prepared tfds set.
Machine: meant for a GPU or TPU VM. No real weights or images exist where jaxprobe is built, so its result is NOT
measured here. Its time was, on a stand-in of the real size (2026-12-07): random width-1.0 MobileNetV2 checkpoints
(1000 classes, 224 px) and a folder of 200 toy concept cards at 224 px as PNGs, labelled by the shipped toy CLIP
(random-noise PNGs under a random CLIP give every image the same concept, so no sets can be drawn):

  import pathlib, PIL.Image; from jaxprobe import testing; from jaxprobe.toy.cards import render
  testing.random_mobilenet_checkpoints("ckpts", width=1.0, num_classes=1000, steps=(0, 1000))
  pathlib.Path("cards").mkdir()
  for i, rgb in enumerate(render.render_cards(range(3_000_000, 3_000_200), 224)["rgb"]):
      PIL.Image.fromarray(rgb).save(f"cards/{i:05d}.png")

  python launch/concepts.py --config=configs/concepts/paper.py --workdir=/tmp/concepts_paper \
      --config.data.path=cards --config.data.num_images=200 --config.clip_dir=assets/toy_clip \
      --config.checkpoints_dir=ckpts --config.num_positive=20 --config.num_negative=40

On the 2-core x86_64 CPU, shared with other jobs (load average 8-11 throughout, so wall times are ~3x the CPU
times): 40 min 0 s wall, 815 s CPU, peak RSS 14.0 GB, for 7 concepts x 60 images (42 train), 190 images captured.
Per stage: pool and labels 47 s wall; checkpoint 0 22 min 54 s wall (~400 s CPU, compiles included), checkpoint 1000
15 min 43 s wall (347 s CPU); report 36 s. Of a checkpoint, the capture of 192 images takes 7.7 s CPU (15 s wall,
759 MiB of activations); the rest is the probes. A random CLIP of ViT-B/32's size (12 x 768 vision layers, patch 32,
224 px) scores 64 images in 12.6 s CPU (20 s wall). By proportion, the full size (the paper's 100 / 200 images per
concept, 210 train, ~2,100 captured of a 50,000-image pool): labels ~2.7 h CPU (0.2 s per pool image), then per
checkpoint ~84 s CPU of capture and ~28 min CPU of probes (5x the train images), and a peak RSS near 25 GB
(activations ~8 GB more): more than this machine's 23 GB. The non-gap probes dominate the cost at 224 px (features_0
alone is 112*112*32 = 401k inputs per image); drop "non_linear_non_gap" from config.families on a CPU.
"""
from pathlib import Path

import ml_collections

from jaxprobe import config_file


def get_config():
    c = config_file.load(Path(__file__).with_name("toy.py"))
    c.data = ml_collections.ConfigDict(dict(source="folder", num_images=50_000, seed_offset=0, path="",
                                            name="imagenet2012", split="validation", feature="image", tfds_dir=""))
    c.resolution = 224
    c.clip_dir = ""  # a transformers CLIPModel directory with its tokenizer, e.g. openai/clip-vit-base-patch32
    c.checkpoints_dir = ""
    c.model = ml_collections.ConfigDict(dict(width_mult=1.0, num_classes=1000))
    c.groups = ml_collections.ConfigDict({"color": ["red", "yellow", "blue", "green", "none"],
                                          "pattern": ["zigzagged", "striped", "dotted", "none"]})
    c.capture_batch_size = 64
    c.label_grid = False  # real images have no exact labels
    return c
