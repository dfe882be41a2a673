"""How good the toy models are: the VAE's reconstruction PSNR, and whether the LDM draws what its caption says
(the goals the shipped models are held to, measured on scenes no model trained on)."""
from __future__ import annotations

import jax
import numpy as np

from jaxprobe.diffusion import sampling
from jaxprobe.toy import data
from jaxprobe.toy.world import captions, render


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(4.0 / np.maximum(mse, 1e-12))


def reconstruct(model, params, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """VAE round trip of images in [-1, 1] through the posterior mean (what sampling decodes)."""
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    return data.map_batches(lambda b: fn(params, b), x, batch_size)


def vae_psnr(vae_model, vae_params, *, num_images: int = 256, seed_offset: int = 1_000_000,
             resolution: int = 64) -> np.ndarray:
    """Per-image reconstruction PSNR (dB) on held-out toy scenes (seeds seed_offset ..), decoded from the mean."""
    x = data.to_unit(render.render_batch(list(range(seed_offset, seed_offset + num_images)), resolution)["rgb"])
    return psnr(np.clip(reconstruct(vae_model, vae_params, x), -1, 1), x)


def generation_quality(pipe, labelers, *, num_images: int = 128, seed_offset: int = 4_000_000, batch_size: int = 32,
                       min_pixels: int = 8, num_inference_steps: int = 15,
                       guidance_scale: float | tuple[float, ...] = 7.5, scheduler: str = "lms") -> dict:
    """Does the toy LDM draw what its caption says? Captions of unseen scenes, by default 15 LMS steps and CFG 7.5
    (the goals' setting; image k sampled with seed k; `guidance_scale` may be one weight per step, see
    `sampling.guidance_schedule`; `scheduler` as in `sampling.sample`); the labelers find the salient object
    (>= min_pixels salient pixels), and its mean colour (`captions.nearest_color`) is compared with the caption's
    first (salient) object's colour word.

    Returns {'found': fraction with a salient object, 'color_match': fraction of ALL images whose salient region
    has the caption's colour, 'images', 'captions', 'salient'}.
    """
    prompts = [render.sample_scene(s).caption for s in range(seed_offset, seed_offset + num_images)]
    images = np.concatenate([
        sampling.sample(pipe, prompts[i:i + batch_size], seed=i, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, scheduler=scheduler).images
        for i in range(0, num_images, batch_size)])
    salient, _ = labelers.label(images)
    found, match = found_and_colour(images, salient, prompts, min_pixels=min_pixels)
    return {"found": float(found.mean()), "color_match": float(match.mean()), "images": images,
            "captions": prompts, "salient": salient}


def found_and_colour(images: np.ndarray, salient: np.ndarray, prompts, *, min_pixels: int = 8):
    """Per image: is there a salient object (>= min_pixels salient pixels), and is its mean colour
    (`captions.nearest_color`) the colour word of the caption's first (salient) object? -> (found, match), bool [N]
    (match is False where nothing was found)."""
    found = salient.sum(axis=(1, 2)) >= min_pixels
    match = np.zeros(len(images), bool)
    for k in np.flatnonzero(found):
        mean_rgb = images[k][salient[k]].mean(axis=0) / 255.0
        match[k] = captions.nearest_color(mean_rgb) == captions.parse(prompts[k])[0][1]
    return found, match


def image_grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """[N,H,W,3] uint8 or [-1,1] float -> one uint8 grid image (what a training run's evaluations write)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.round(np.clip(images / 2 + 0.5, 0, 1) * 255).astype(np.uint8)
    n, h, w, ch = images.shape
    rows = -(-n // cols)
    grid = np.zeros((rows * h, min(n, cols) * w, ch), np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, cols)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = im
    return grid
