"""tensorflow-datasets builder `jaxprobe_toyworld`: toy-world scenes (`jaxprobe.toy.world.render`) as train/test splits.

Train example k is the scene of seed k; test example k is the scene of seed `test_seed_offset + k`, so every split
can be regenerated bit for bit with `render.render_scene(seed, resolution)` (each example also stores its seed).

TensorFlow: not needed to build with `file_format="array_record"` or to read with `builder.as_data_source()` /
`tfds.data_source("jaxprobe_toyworld", ...)` (random access, numpy), because every feature is a plain
`tfds.features.Tensor`. `tfds.load` / `builder.as_dataset` return `tf.data` pipelines and need TensorFlow.

    import tensorflow_datasets as tfds
    from jaxprobe.toy.world.jaxprobe_toyworld import Builder, ToyWorldConfig
    tiny = ToyWorldConfig(name="tiny32", resolution=32, num_train=8, num_test=4)
    builder = Builder(config=tiny, data_dir="/tmp/tfds", file_format="array_record")
    builder.download_and_prepare()
    train = builder.as_data_source(split="train")   # train[0]["rgb"]: uint8 [32, 32, 3]
    # or, for a predefined config:  tfds.data_source("jaxprobe_toyworld/64px", data_dir="/tmp/tfds")

Examples are stored in tfds' shuffled key order, not by seed: use the "seed" feature to match them to scenes.
Strings (caption, object attributes) come back as bytes. A custom config's data lands in `<data_dir>/jaxprobe_toyworld/<config name>/`, so give each setting its own name.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxprobe.toy.world import render


@dataclasses.dataclass(eq=False)
class ToyWorldConfig(tfds.core.BuilderConfig):
    """Image size and split sizes of one variant."""
    resolution: int = 128
    num_train: int = 8192
    num_test: int = 512
    test_seed_offset: int = 1_000_000


class Builder(tfds.core.GeneratorBasedBuilder):
    """Procedural scenes with exact depth, salient-object mask, per-object masks/boxes and a caption."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "2.0.0": "Palette: red, yellow, green, cyan, blue, magenta (60 degrees apart) instead of orange and purple.",
    }
    BUILDER_CONFIGS = [
        ToyWorldConfig(name="128px", description="128x128 scenes", resolution=128),
        ToyWorldConfig(name="64px", description="64x64 scenes (the shipped toy models' data)", resolution=64),
    ]
    DEFAULT_CONFIG_NAME = "128px"

    def _info(self) -> tfds.core.DatasetInfo:
        r, k = self.builder_config.resolution, render.MAX_OBJECTS
        t = tfds.features.Tensor
        return self.dataset_info_from_configs(
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict({
                "seed": t(shape=(), dtype=np.int64),
                "rgb": t(shape=(r, r, 3), dtype=np.uint8),
                "depth": t(shape=(r, r), dtype=np.float32),
                "salient": t(shape=(r, r), dtype=np.bool_),
                "object_masks": t(shape=(k, r, r), dtype=np.bool_),
                "boxes": t(shape=(k, 4), dtype=np.float32),
                "num_objects": t(shape=(), dtype=np.int32),
                "caption": t(shape=(), dtype=np.str_),
                "object_shape": t(shape=(k,), dtype=np.str_),
                "object_color": t(shape=(k,), dtype=np.str_),
                "object_size": t(shape=(k,), dtype=np.str_),
                "salient_index": t(shape=(), dtype=np.int32),
                "salient_color": t(shape=(), dtype=np.str_),
                "salient_shape": t(shape=(), dtype=np.str_),
                "camera_height": t(shape=(), dtype=np.float32),
                "camera_pitch": t(shape=(), dtype=np.float32),
            }),
            homepage="https://github.com/jaxprobe/jaxprobe",
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {"train": self._generate_examples(range(c.num_train)),
                "test": self._generate_examples(range(c.test_seed_offset, c.test_seed_offset + c.num_test))}

    def _generate_examples(self, seeds):
        for seed in seeds:
            scene = render.render_scene(seed, self.builder_config.resolution)
            # tfds encodes string tensors from object arrays, not fixed-width '<U' ones
            yield seed, {"seed": seed, **{k: v.astype(object) if isinstance(v, np.ndarray) and v.dtype.kind == "U"
                                          else v for k, v in scene.items()}}
