"""Flax models with diffusers/transformers parameter names, and their loaders."""
from jaxprobe.models.load import load_text_encoder, load_unet, load_vae, save_component  # noqa: F401
from jaxprobe.models.pipeline import Pipeline, load_pipeline, save_pipeline  # noqa: F401
