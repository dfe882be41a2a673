r"""The paper's setting on real data: a local CLIP ViT-B/32 labels an image pool (a folder, or a prepared tfds data
set such as imagenet2012), the top 100 / 200 random images per concept are the sets, and every module of every
torchvision MobileNetV2 checkpoint (width 1.0, 1000 classes, 224 px) is probed by the three families.

  python launch/concepts.py --config=configs/concepts/paper.py --workdir=runs/concepts_paper \
      --config.data.path=/data/images --config.clip_dir=/models/clip-vit-base-patch32 \
      --config.checkpoints_dir=/models/mobilenet_v2_checkpoints

Checkpoints: torchvision `mobilenet_v2` state dicts saved as `<anything>_<step>.safetensors` (e.g.
`safetensors.torch.save_file(model.state_dict(), f"step_{step:06d}.safetensors")`). The paper used 50,000 images;
--config.data.source=tfds --config.data.name=imagenet2012 --config.data.split=validation reads a prepared tfds set.
Machine: meant for a GPU or TPU VM. Time and result: not measured; this project's workplace has no real weights
or data to run it on (its toy twin, configs/concepts/toy.py, is measured).
The non-gap probes dominate the cost at 224 px (features_0 alone is 112*112*32 = 401k inputs per image); drop
"non_linear_non_gap" from config.families on a CPU.
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
    return c
