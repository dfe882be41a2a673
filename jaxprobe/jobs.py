"""The job layer every study's job shares: the checked pipeline load, the weights fingerprint, the workdir claim,
prompts, the sampling steps a config selects and the memory estimate. One place, so every job speaks one error
vocabulary and no study borrows these from another."""
from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
from tqdm import tqdm

from jaxprobe import io, mesh, validate
from jaxprobe.diffusion import sampling
from jaxprobe.models import Pipeline, load, load_pipeline
from jaxprobe.models.pipeline import COMPONENTS


def load_checked_pipeline(c, key: str = "pipeline_dir", *, weights: bool = True) -> Pipeline:
    """config.<key> checked to be a diffusers pipeline directory (its components present), then loaded (`weights`
    as in `load_pipeline`)."""
    path = validate.existing_path(c, key, "a diffusers Stable Diffusion directory", COMPONENTS)
    tqdm.write(f"loading pipeline {path}{'' if weights else ' (configs and shapes only)'}")
    return load_pipeline(path, weights=weights)


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


def check_workdir(workdir) -> Path:
    """`workdir` as a path a job can make its directory: neither it nor a folder above it is a file."""
    workdir = Path(workdir)
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                where = "" if path == workdir else f" (it would be inside {os.path.abspath(path)})"
                raise ValueError(f"--workdir={workdir}: {os.path.abspath(path)} is a file, not a directory{where}; "
                                 "choose another --workdir")
            break
    return workdir


def claim(workdir, config: dict, *, kind: str, may_change: tuple[str, ...] = ()) -> Path:
    """Make `workdir` this job's (`io.claim_workdir`: a resume must have the same config) once the work starts, and
    wait until every process has seen the claim before any decides what is left to do. Call it after every check:
    a refused request must not leave a workdir that refuses the corrected one (a config.json alone does not)."""
    workdir = check_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    io.claim_workdir(workdir, config, kind=kind, may_change=may_change, write=mesh.is_main())
    mesh.barrier("claim")
    return workdir


def read_prompts(path) -> list[str]:
    """The non-blank lines of a prompts file, stripped; ValueError if there are none."""
    found = [p.strip() for p in Path(path).read_text().splitlines() if p.strip()]
    if not found:
        raise ValueError(f"{os.path.abspath(path)} is empty (no prompts); write one prompt per line")
    return found


def prompts(c, n: int, captions: Callable[[int], list[str]], *, tokenize=None, what: str = "") -> list[str]:
    """The first `n` prompts of config.prompts_file, or `captions(n)` (a study's own, e.g. toy-world captions)
    when none is set. A file with fewer than `n` prompts is refused, naming `what` asked for `n`; `tokenize`
    (the pipeline's) checks that each fits the text encoder, before any sampling."""
    if not c.prompts_file:
        return captions(n)
    path = validate.existing_path(c, "prompts_file", "a text file with one prompt per line")
    with validate.config_key("prompts_file"):
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



def check_memory(pipe: Pipeline, height: int, width: int, batch: int, dtype, *,
                 holds: Callable[[int], dict[str, int]] | None = None) -> int:
    """Say what memory a sampling job needs, and refuse one that cannot fit, before anything compiles: the params at
    `dtype`, the largest single array one UNet or VAE call makes and what `holds(images per device)` names ({what:
    bytes} the job keeps besides, e.g. a second UNet and a batch's captured activations). Every part exists at
    once, so the sum is a lower bound and a refusal is sure. It is checked against the memory of a device
    (device.memory_stats()'s limit on an accelerator; on a CPU the host's RAM shared by its devices). `batch`
    images are split over the mesh's data axis and doubled for CFG. Prints the estimate; returns it in bytes."""
    images = math.ceil(batch / mesh.axis_size("data"))
    params = _at_dtype(pipe.params, jnp.dtype(dtype))
    size = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor, pipe.unet.config.in_channels)
    text = jax.tree.map(lambda x: jax.ShapeDtypeStruct((2 * images, *x.shape[1:]), x.dtype),
                        sampling.encode_prompts(pipe, [""], cfg=False, size=(height, width)))
    parts = {"params": sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(params)),
             "largest array": _largest_call_array(sampling.modules(pipe), text, (2 * images, *size),
                                                  jnp.dtype(dtype)),
             **(holds(images) if holds else {})}
    need = sum(parts.values())
    device = jax.local_devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit") if device.platform != "cpu" else None
    if limit is None and device.platform == "cpu":
        limit = host_memory() // jax.local_device_count()
    where = f"a {device.platform} device here has {limit / 2**30:.1f} GiB" if limit else "no device limit known"
    tqdm.write(f"memory estimate: {need / 2**30:.1f} GiB per device at least ("
               + ", ".join(f"{what} {n / 2**30:.1f}" for what, n in parts.items()) + f"); {where}")
    if limit is not None and need > limit:
        raise ValueError(f"config.height/width/batch_size: sampling {height}x{width} images, {images} per device, in "
                         f"{jnp.dtype(dtype).name} needs at least {need / 2**30:.1f} GiB ("
                         + ", ".join(parts) + f") per device; {where}: choose a smaller size or batch")
    return need


def host_memory() -> int:
    """Bytes of this host's RAM."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.lru_cache(maxsize=16)
def _largest_call_array(mods: sampling.Modules, text, latent_shape: tuple, dtype) -> int:
    """Bytes of the largest array a CFG UNet call (text encoders included) or a VAE decode of half its batch makes
    (traced once per modules and shapes: tracing a UNet takes about a second). `text`: ShapeDtypeStructs of the
    text inputs (`sampling.encode_prompts`)."""
    def shapes(module):
        return _at_dtype(load.param_shapes(module), dtype)

    def unet_call(p, text, latent):
        context = sampling.encode_text(mods, p, text)
        return mods.unet.apply({"params": p["unet"]}, latent, jnp.zeros(latent.shape[0], jnp.int32), context)

    def vae_call(p, latent):
        return mods.vae.apply({"params": p}, latent, method="decode")

    params = {name: shapes(getattr(mods, name)) for name in ("text_encoder", "text_encoder_2", "unet")
              if getattr(mods, name) is not None}
    half = jax.ShapeDtypeStruct((latent_shape[0] // 2, *latent_shape[1:]), dtype)
    return max(_largest_array(jax.make_jaxpr(unet_call)(params, text,
                                                         jax.ShapeDtypeStruct(latent_shape, dtype)).jaxpr),
               _largest_array(jax.make_jaxpr(vae_call)(shapes(mods.vae), half).jaxpr))


def _at_dtype(params, dtype):
    """ShapeDtypeStructs of `params` with the floating-point ones at `dtype`, as sampling casts them."""
    return jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, dtype if jnp.issubdtype(p.dtype, jnp.floating)
                                                       else p.dtype), params)


def _largest_array(jaxpr) -> int:
    """Bytes of the largest array any equation of `jaxpr` (or of a jaxpr nested in one) makes."""
    largest = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            shape, dtype = getattr(v.aval, "shape", None), getattr(v.aval, "dtype", None)
            if shape is not None and dtype is not None:
                largest = max(largest, math.prod(shape) * dtype.itemsize)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's
                if hasattr(sub, "eqns"):
                    largest = max(largest, _largest_array(sub))
    return largest
