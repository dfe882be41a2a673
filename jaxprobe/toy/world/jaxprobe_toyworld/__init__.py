"""The `jaxprobe_toyworld` tensorflow-datasets builder; importing this package registers it with tfds."""
from jaxprobe.toy.world.jaxprobe_toyworld.jaxprobe_toyworld_dataset_builder import (
    Builder,
    ToyWorldConfig,
)

__all__ = ["Builder", "ToyWorldConfig"]
