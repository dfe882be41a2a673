"""Text-to-image generation to a directory of PNGs with a `samples.json` index (what launch/sample.py runs).

Every part of a request is checked before the first image is sampled: a prompt too long for the tokenizer in the
last batch, a bad size or an unknown scheduler must fail in seconds, with nothing written, not after an hour.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tqdm import tqdm

from jaxprobe import io, mesh
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.models import Pipeline, load_pipeline


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked request: image k is prompts[k] sampled from seeds[k], in batches of batch_size."""

    prompts: list[str]
    seeds: list[int]
    height: int
    width: int
    batch_size: int


def _check_config(c) -> tuple[list[str], list[int]]:
    """The checks that need no model, so that a bad config fails before the weights load: the library's own
    (`sampling`) for what `sample` takes, and the counts only this job has. Returns the prompts, each repeated
    num_images_per_prompt times, and their seeds."""
    for field in ("num_images_per_prompt", "batch_size"):
        if c[field] < 1:
            raise ValueError(f"config.{field} must be >= 1, got {c[field]}")
    mesh.check_batch(c.batch_size, "config.batch_size")
    sampling.guidance_schedule(c.guidance_scale, c.num_inference_steps)
    sampling.check_dtype(c.dtype)
    if not c.pipeline_dir:
        raise ValueError("set --config.pipeline_dir to a diffusers Stable Diffusion directory")
    prompts = sampling.read_prompts(c.prompts, c.prompts_file) * c.num_images_per_prompt
    return prompts, sampling.image_seeds(c.seed, len(prompts))


def plan(c) -> tuple[Pipeline, Plan]:
    """Check config `c` (configs/sample/*.py) and load its pipeline (after the checks that need no model): a
    ValueError names the first problem; else (pipeline, plan)."""
    prompts, seeds = _check_config(c)
    pipe = load_pipeline(c.pipeline_dir)
    height, width = sampling.check_size(pipe, c.height, c.width)
    schedulers.get_scheduler(c.scheduler, pipe.scheduler_config).set_timesteps(c.num_inference_steps)
    pipe.tokenize(prompts)  # every prompt fits the tokenizer
    return pipe, Plan(prompts=prompts, seeds=seeds, height=height, width=width, batch_size=c.batch_size)


def generate(c, workdir) -> dict:
    """Sample every image config `c` asks for into `workdir`: `{index:05d}_seed{seed}.png` and samples.json
    (the config and, per image, file, prompt and seed), each file written atomically. Nothing is written unless
    the whole request checks out (`plan`). Returns {'images', 'height', 'width', 'seconds'} (seconds include
    compilation). Multi-host (`--distributed`): every process samples on the global mesh; process 0 writes."""
    pipe, p = plan(c)
    workdir, index, start = Path(workdir), [], time.perf_counter()
    with tqdm(total=len(p.prompts), desc="sampling", unit="img", disable=not mesh.is_main()) as bar:
        for lo in range(0, len(p.prompts), p.batch_size):
            batch, seeds = p.prompts[lo:lo + p.batch_size], p.seeds[lo:lo + p.batch_size]
            out = sampling.sample(pipe, batch, seed=seeds, num_inference_steps=c.num_inference_steps,
                                  guidance_scale=c.guidance_scale, scheduler=c.scheduler, height=p.height,
                                  width=p.width, dtype=c.dtype)
            for k, (prompt, seed, image) in enumerate(zip(batch, seeds, out.images)):
                name = f"{lo + k:05d}_seed{seed}.png"
                if mesh.is_main():
                    io.write_png(workdir / name, image)
                index.append({"file": name, "prompt": prompt, "seed": seed})
            bar.update(len(batch))
    if mesh.is_main():
        io.write_json(workdir / "samples.json", {"config": c.to_dict(), "images": index})
    mesh.barrier("samples")
    return {"images": len(index), "height": p.height, "width": p.width, "seconds": time.perf_counter() - start}
