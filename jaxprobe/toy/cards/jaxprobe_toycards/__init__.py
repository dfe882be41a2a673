"""The `jaxprobe_toycards` tensorflow-datasets builder; importing this package registers it with tfds."""
from jaxprobe.toy.cards.jaxprobe_toycards.jaxprobe_toycards_dataset_builder import (
    Builder,
    ToyCardsConfig,
)

__all__ = ["Builder", "ToyCardsConfig"]
