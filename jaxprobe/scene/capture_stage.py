"""The sweep's capture stage: one `capture.CaptureRequest` per job, then the activation store filled batch by batch
(a rerun skips the chunks already written), and the images a user labels exported with their index."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from tqdm import tqdm

from jaxprobe import mesh
from jaxprobe.diffusion import sampling
from jaxprobe.probing import store
from jaxprobe.scene import baselines, capture, image_index
from jaxprobe.scene.sweep_data import Dataset, expected_index


def capture_request(c, layers: Sequence[str], steps: Sequence[int]) -> capture.CaptureRequest:
    """What every batch of the sweep captures (`layers` and `steps` as `check_config` resolved them)."""
    return capture.CaptureRequest(
        sampler=sampling.Settings(num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                                  scheduler=c.scheduler, height=c.resolution, width=c.resolution,
                                  batch_size=c.batch_size),
        layers=tuple(layers), steps=tuple(steps), store_dtype=None if c.store_dtype == "float32" else
        jnp.dtype(c.store_dtype), store_pool=c.store_pool,
        randomized_seed=c.randomized_seed if "randomized" in c.models else None,
        vae_baselines=baselines.vae_models(c.models))


def capture_holds(pipe, request: capture.CaptureRequest) -> Callable[[int], dict[str, int]]:
    """What a batch of the capture holds besides the pipeline's params (`jobs.check_memory`'s `holds`): the
    randomized UNet's params at the compute dtype and the batch's captured activations."""
    unet = sum(p.size * jnp.dtype(request.sampler.dtype).itemsize for p in jax.tree.leaves(pipe.params["unet"]))

    def holds(images: int) -> dict[str, int]:
        return {**({"randomized UNet": unet} if request.randomized_seed is not None else {}),
                "a batch's activations": capture.kept_bytes(pipe, request, images)}

    return holds


def capture_all(c, pipe, request: capture.CaptureRequest, data: Dataset, act_store: store.ProcessStores) -> None:
    """Fill the store batch by batch (chunk k holds images k*B .. k*B+B-1); finished chunks are skipped. Each
    process stores the rows its devices computed."""
    n, b = len(data.prompts), c.batch_size
    chunks = range(math.ceil(n / b))
    todo = [k for k in chunks if not act_store.has_chunk(k)]
    # The first batch compiles the sampling program (tens of seconds at full width): say so while the bar sits at 0.
    bar = tqdm(todo, desc="capture", unit="batch", initial=len(chunks) - len(todo), total=len(chunks),
               postfix="compiling…" if todo else None)
    for k in bar:
        lo, hi = k * b, min(n, k * b + b)
        seeds = [c.seed + i for i in range(lo, hi)]
        if c.data == "generated":
            out = capture.capture_sweep(pipe, data.prompts[lo:hi], request, seed=seeds)
            arrays = {"images": out.images}
        else:
            out = capture.encode_and_capture(pipe, data.images[lo:hi], data.prompts[lo:hi], request, seed=seeds)
            arrays = {}
        groups = {"trained": out.acts, "randomized": out.randomized, "vae": out.vae, "vae_x0": out.vae_x0}
        rows = {}
        for model, acts in groups.items():
            if model in c.models:
                rows.update({f"{model}/{layer}": mesh.local_rows(a) for layer, a in acts.items()})
        row_from = min(start for start, _ in rows.values())
        arrays = {k: a[row_from:row_from + len(next(iter(rows.values()))[1])] for k, a in arrays.items()}
        arrays.update({name: a for name, (_, a) in rows.items()})
        act_store.write_chunk(k, arrays, {"prompts": data.prompts[lo:hi], "seeds": seeds}, row_from=row_from)
        bar.set_postfix_str("", refresh=False)


def export_images(c, workdir: Path, data: Dataset, act_store: store.ProcessStores) -> None:
    """images/<row>.png and images/index.csv (process 0): what a user labels between the capture and label stages."""
    directory = workdir / "images"
    if mesh.is_main() and not (directory / image_index.INDEX).exists():
        images = data.images if data.images is not None else act_store.read("images")
        image_index.write(directory, images, expected_index(c))
    mesh.barrier("images")
