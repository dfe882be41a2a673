"""Load and save diffusers / transformers component directories as Flax (module, params). No torch.

A component directory holds `config.json` and `diffusion_pytorch_model.safetensors` (diffusers) or
`model.safetensors` (transformers). A pipeline directory holds unet/, vae/, text_encoder/, tokenizer/ and
scheduler/ sub-directories, as `DiffusionPipeline.save_pretrained` writes them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import safetensors.numpy

from jaxprobe.models import convert

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def read_config(directory: str | os.PathLike) -> dict:
    """config.json of a component directory, with a clear error if there is none."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a diffusers/transformers component directory: no config.json")
    return json.loads(path.read_text())


def read_weights(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of the component's safetensors file(s) (sharded files are merged), as numpy."""
    directory = Path(directory)
    for name in WEIGHT_FILES:
        index = directory / (name + ".index.json")
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(safetensors.numpy.load_file(directory / shard))
            return state
        if (directory / name).is_file():
            return safetensors.numpy.load_file(directory / name)
    raise FileNotFoundError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)} "
                            "(PyTorch .bin/.ckpt files are pickles and are not read)")


def param_shapes(module) -> Any:
    """Parameter template (ShapeDtypeStructs) of a module without allocating or computing anything."""
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *module.dummy_inputs()))
    return variables["params"]


def _load(directory, build: Callable[..., Any], what: str, dtype=None):
    module = build(read_config(directory), dtype=dtype)
    state = read_weights(directory)
    return module, convert.state_dict_to_params(state, param_shapes(module), what=f"{what} in {directory}")


def build_unet(config: dict, *, dtype=None):
    """UNet2DConditionModel from a config.json dict (no weights)."""
    from jaxprobe.models import unet
    return unet.UNet2DConditionModel(unet.UNetConfig.from_dict(config), **_dt(dtype))


def build_vae(config: dict, *, dtype=None):
    """AutoencoderKL from a config.json dict (no weights)."""
    from jaxprobe.models import vae
    return vae.AutoencoderKL(vae.VAEConfig.from_dict(config), **_dt(dtype))


def build_text_encoder(config: dict, *, dtype=None):
    """CLIPTextModel from a transformers config.json dict (no weights)."""
    from jaxprobe.models import clip
    return clip.CLIPTextModel(clip.CLIPTextConfig.from_dict(config), **_dt(dtype))


def load_unet(directory, *, dtype=None):
    """UNet2DConditionModel from a diffusers `unet/` directory -> (module, params)."""
    return _load(directory, build_unet, "UNet", dtype)


def load_vae(directory, *, dtype=None):
    """AutoencoderKL from a diffusers `vae/` directory -> (module, params)."""
    return _load(directory, build_vae, "VAE", dtype)


def load_text_encoder(directory, *, dtype=None):
    """CLIPTextModel from a transformers `text_encoder/` directory -> (module, params)."""
    return _load(directory, build_text_encoder, "text encoder", dtype)


def _dt(dtype):
    return {} if dtype is None else {"dtype": dtype}


def save_component(directory, module, params, *, weights_name: str = "diffusion_pytorch_model.safetensors"):
    """Write `config.json` + safetensors in the diffusers/transformers layout, atomically (temp dir + rename).

    The module's config dataclass must provide `to_dict()` giving the original config.json fields back.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    (tmp / "config.json").write_text(json.dumps(module.config.to_dict(), indent=2, sort_keys=True) + "\n")
    safetensors.numpy.save_file(convert.params_to_state_dict(params), tmp / weights_name, metadata={"format": "pt"})
    replace_dir(tmp, directory)


def replace_dir(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, replacing an existing `dst` with as short a window as the filesystem allows."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        os.replace(dst, old)
        os.replace(src, dst)
        _rmtree(old)
    else:
        os.replace(src, dst)


def _rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
