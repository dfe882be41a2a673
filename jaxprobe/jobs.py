"""The job layer every study's job shares: the checked pipeline load, the weights fingerprint, the workdir claim,
prompts, and the sampling steps a config selects. One place, so every job speaks one error vocabulary and no study
borrows these from another."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from jaxprobe import io, mesh, validate
from jaxprobe.diffusion import sampling
from jaxprobe.models import Pipeline, load_pipeline
from jaxprobe.models.pipeline import COMPONENTS


def load_checked_pipeline(c, key: str = "pipeline_dir") -> Pipeline:
    """config.<key> checked to be a diffusers pipeline directory (its components present), then loaded."""
    path = validate.existing_path(c, key, "a diffusers Stable Diffusion directory", COMPONENTS)
    tqdm.write(f"loading pipeline {path}")
    return load_pipeline(path)


def weights_fingerprint(*paths) -> str:
    """sha256 of every weight and config file (*.safetensors, *.json) under the given directories, or of a file
    ("" = none): two runs with the same config but retrained weights must not share a workdir."""
    digest = hashlib.sha256()
    for directory in filter(None, paths):
        files = [Path(directory)] if Path(directory).is_file() else sorted(
            p for p in Path(directory).rglob("*") if p.suffix in (".safetensors", ".json"))
        for f in files:
            digest.update(str(f.relative_to(directory)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()


def claim(workdir, config: dict, *, kind: str, may_change: tuple[str, ...] = ()) -> Path:
    """Make `workdir` this job's (`io.claim_workdir`: a resume must have the same config) once the work starts, and
    wait until every process has seen the claim before any decides what is left to do. Call it after every check:
    a refused request must not leave a workdir that refuses the corrected one."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    io.claim_workdir(workdir, config, kind=kind, may_change=may_change, write=mesh.is_main())
    mesh.barrier("claim")
    return workdir


def read_prompts(path) -> list[str]:
    """The non-blank lines of a prompts file, stripped."""
    return [p.strip() for p in Path(path).read_text().splitlines() if p.strip()]


def prompts(c, n: int, captions: Callable[[int], list[str]], *, tokenize=None, what: str = "") -> list[str]:
    """The first `n` prompts of config.prompts_file, or `captions(n)` (a study's own, e.g. toy-world captions)
    when none is set. A file with fewer than `n` prompts is refused, naming `what` asked for `n`; `tokenize`
    (the pipeline's) checks that each fits the text encoder, before any sampling."""
    if not c.prompts_file:
        return captions(n)
    path = validate.existing_path(c, "prompts_file", "a text file with one prompt per line")
    found = read_prompts(path)
    if len(found) < n:
        raise ValueError(f"config.prompts_file: {path} has {len(found)} prompts; {what or 'the job needs'} {n}")
    if tokenize is not None:
        with validate.config_key("prompts_file"):
            tokenize(found[:n])
    return found[:n]


def steps(c) -> tuple[int, ...]:
    """The sampling steps config.steps selects (empty = every step; negative ones count from the end)."""
    with validate.config_key("steps"):
        return sampling.select_steps(list(c.steps) if len(c.steps) else None, c.num_inference_steps)

