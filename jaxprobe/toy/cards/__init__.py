"""Procedural 2-D "concept cards": one object per image with exact shape, colour and pattern labels.

`render` draws the cards with numpy and needs no TensorFlow. The tensorflow-datasets builder lives in the
`jaxprobe_toycards` subpackage (imported only on demand).
"""
from jaxprobe.toy.cards import render

__all__ = ["render"]
