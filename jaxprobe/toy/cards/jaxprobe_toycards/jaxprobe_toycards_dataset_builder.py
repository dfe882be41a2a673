"""tensorflow-datasets builder `jaxprobe_toycards`: concept cards (`jaxprobe.toy.cards.render`) as train/test splits.

Train example k is the card of seed k; test example k is the card of seed `test_seed_offset + k`, so every split can
be regenerated bit for bit with `render.render_card(seed, resolution)` (each example also stores its seed). `label`
is the 16-way shape x pattern class (`render.CLASS_NAMES`); shape, color and pattern are the exact concept labels and
`mask` the object's footprint.

TensorFlow: not needed to build with `file_format="array_record"` or to read with `builder.as_data_source()` /
`tfds.data_source("jaxprobe_toycards", ...)` (random access, numpy), because every feature is a plain
`tfds.features.Tensor`. `tfds.load` / `builder.as_dataset` return `tf.data` pipelines and need TensorFlow.

    import tensorflow_datasets as tfds
    from jaxprobe.toy.cards.jaxprobe_toycards import Builder, ToyCardsConfig
    tiny = ToyCardsConfig(name="tiny32", resolution=32, num_train=8, num_test=4)
    builder = Builder(config=tiny, data_dir="/tmp/tfds", file_format="array_record")
    builder.download_and_prepare()
    train = builder.as_data_source(split="train")   # train[0]["rgb"]: uint8 [32, 32, 3]; train[0]["label"]: int32
    # or, for a predefined config:  tfds.data_source("jaxprobe_toycards/64px", data_dir="/tmp/tfds")

Examples are stored in tfds' shuffled key order, not by seed: use the "seed" feature to match them to cards.
Strings (shape, color, pattern) come back as bytes. A custom config's data lands in
`<data_dir>/jaxprobe_toycards/<config name>/`, so give each setting its own name.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxprobe.toy.cards import render


@dataclasses.dataclass(eq=False)
class ToyCardsConfig(tfds.core.BuilderConfig):
    """Image size and split sizes of one variant."""
    resolution: int = 64
    num_train: int = 20_000
    num_test: int = 2_000
    test_seed_offset: int = render.TEST_SEED_OFFSET


class Builder(tfds.core.GeneratorBasedBuilder):
    """Procedural cards, one object each, with exact shape, colour and pattern labels and the object's mask."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ToyCardsConfig(name="64px", description="64x64 cards", resolution=64),
        ToyCardsConfig(name="32px", description="32x32 cards (the 64px cards' seeds, drawn at half the size)",
                       resolution=32),
    ]
    DEFAULT_CONFIG_NAME = "64px"

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        t = tfds.features.Tensor
        return self.dataset_info_from_configs(
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict({
                "seed": t(shape=(), dtype=np.int64),
                "rgb": t(shape=(r, r, 3), dtype=np.uint8),
                "mask": t(shape=(r, r), dtype=np.bool_),
                "shape": t(shape=(), dtype=np.str_),
                "color": t(shape=(), dtype=np.str_),
                "pattern": t(shape=(), dtype=np.str_),
                "label": t(shape=(), dtype=np.int32),
            }),
            supervised_keys=("rgb", "label"),
            homepage="https://github.com/jaxprobe/jaxprobe",
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {"train": self._generate_examples(range(c.num_train)),
                "test": self._generate_examples(range(c.test_seed_offset, c.test_seed_offset + c.num_test))}

    def _generate_examples(self, seeds):
        for seed in seeds:
            card = render.render_card(seed, self.builder_config.resolution)
            yield seed, {"seed": seed, **card, "label": np.int32(card["label"])}
