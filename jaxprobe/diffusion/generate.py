"""Text-to-image generation to a directory of PNGs with a `samples.json` index (what launch/sample.py runs).

Every part of a request is checked before the first image is sampled: a prompt too long for the tokenizer in the
last batch, a bad size, a size too big for the memory or an unknown scheduler must fail in seconds, with nothing
written, not after an hour. A killed run resumes: an image's file name is its place and seed, and the workdir holds
one config (`jobs.claim`), so an image already written is the one the run would write.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tqdm import tqdm

from jaxprobe import io, jobs, mesh, validate
from jaxprobe.diffusion import sampling, schedulers
from jaxprobe.models import Pipeline


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """A checked request: image k is prompts[k] sampled from seeds[k], in batches of batch_size."""

    prompts: list[str]
    seeds: list[int]
    height: int
    width: int
    batch_size: int


def _check_config(c, workdir) -> tuple[list[str], list[int]]:
    """The checks that need no model, so that a bad config fails before the weights load: the library's own
    (`sampling`) for what `sample` takes, and the counts only this job has. Returns the prompts, each repeated
    num_images_per_prompt times, and their seeds."""
    validate.at_least(c, {"num_images_per_prompt": 1, "batch_size": 1})
    jobs.check_workdir(workdir)
    mesh.check_batch(c.batch_size, "config.batch_size")
    sampling.guidance_schedule(c.guidance_scale, c.num_inference_steps)
    sampling.check_dtype(c.dtype)
    validate.existing_path(c, "pipeline_dir", "a diffusers Stable Diffusion directory")
    prompts = _prompts(c) * c.num_images_per_prompt
    return prompts, sampling.image_seeds(c.seed, len(prompts))


def _prompts(c) -> list[str]:
    """config.prompts_file's prompts (`jobs.read_prompts`), else config.prompts split at '|'."""
    if c.prompts_file:
        path = validate.existing_path(c, "prompts_file", "a text file with one prompt per line")
        with validate.config_key("prompts_file"):
            return jobs.read_prompts(path)
    prompts = [p.strip() for p in c.prompts.split("|") if p.strip()]
    if not prompts:
        raise ValueError("config.prompts is empty: set --config.prompts='a|b' or --config.prompts_file")
    return prompts


def check(c, workdir) -> tuple[Pipeline, SampleRequest]:
    """Check config `c` (configs/sample/*.py) and load its pipeline (after the checks that need no model): a
    ValueError names the first problem; else (pipeline, request)."""
    prompts, seeds = _check_config(c, workdir)
    pipe = jobs.load_checked_pipeline(c)
    height, width = sampling.check_size(pipe, c.height, c.width)
    schedulers.get_scheduler(c.scheduler, pipe.scheduler_config).set_timesteps(c.num_inference_steps)
    pipe.tokenize(prompts)  # every prompt fits the tokenizer
    jobs.check_memory(pipe, height, width, c.batch_size, sampling.check_dtype(c.dtype))
    return pipe, SampleRequest(prompts=prompts, seeds=seeds, height=height, width=width, batch_size=c.batch_size)


def generate(c, workdir) -> dict:
    """Sample every image config `c` asks for into `workdir`: `{index:05d}_seed{seed}.png` and samples.json
    (the config and, per image written, file, prompt and seed: rewritten as each batch finishes), each file
    written atomically. Nothing is written unless the whole request checks out (`check`); a rerun skips the
    images already written, and a workdir of another config is refused. Returns {'images', 'sampled', 'height',
    'width', 'seconds'} (seconds include compilation). Multi-host (`--distributed`): every process samples on the
    global mesh; process 0 writes."""
    pipe, p = check(c, workdir)
    workdir = jobs.claim(workdir, c.to_dict(), kind="set of samples", may_change=("mesh",))
    index = [{"file": f"{k:05d}_seed{seed}.png", "prompt": prompt, "seed": seed}
             for k, (prompt, seed) in enumerate(zip(p.prompts, p.seeds))]
    batches = [range(lo, min(lo + p.batch_size, len(index))) for lo in range(0, len(index), p.batch_size)]
    todo = [b for b in batches if not all((workdir / index[k]["file"]).exists() for k in b)]
    start, sampled = time.perf_counter(), 0
    with tqdm(total=len(index), initial=len(index) - sum(map(len, todo)), desc="sampling", unit="img",
              disable=not mesh.is_main()) as bar:
        for b in todo:
            out = sampling.sample(pipe, [p.prompts[k] for k in b], seed=[p.seeds[k] for k in b],
                                  num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                                  scheduler=c.scheduler, height=p.height, width=p.width, dtype=c.dtype)
            if mesh.is_main():
                for k, image in zip(b, out.images):
                    if not (workdir / index[k]["file"]).exists():
                        io.write_png(workdir / index[k]["file"], image)
                _write_index(workdir, c, index)
            sampled += len(b)
            bar.update(len(b))
    if mesh.is_main() and not todo:
        _write_index(workdir, c, index)
    mesh.barrier("samples")
    return {"images": len(index), "sampled": sampled, "height": p.height, "width": p.width,
            "seconds": time.perf_counter() - start}


def _write_index(workdir: Path, c, index: list[dict]) -> None:
    """samples.json: the config and the entries of `index` whose image is in `workdir`."""
    io.write_json(workdir / "samples.json", {"config": c.to_dict(),
                                             "images": [e for e in index if (workdir / e["file"]).exists()]})
