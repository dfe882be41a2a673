"""Procedural toy 3-D world with exact labels (depth, salient-object mask, object masks/boxes, caption).

`render` ray casts scenes with numpy and `captions` holds the caption vocabulary; neither needs TensorFlow.
The tensorflow-datasets builder lives in the `jaxprobe_toyworld` subpackage (imported only on demand).
"""
from jaxprobe.toy.world import captions, render

__all__ = ["captions", "render"]
