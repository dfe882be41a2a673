"""Flax models with diffusers/transformers/torchvision parameter names, and their loaders."""
from jaxprobe.models.load import (  # noqa: F401
    load_clip,
    load_dpt,
    load_mobilenet_v2,
    load_text_encoder,
    load_unet,
    load_vae,
    save_clip,
    save_component,
    save_mobilenet_v2,
)
from jaxprobe.models.pipeline import Pipeline, load_pipeline, save_pipeline  # noqa: F401
