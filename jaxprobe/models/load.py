"""Load and save diffusers / transformers component directories as Flax (module, params). No torch.

A component directory holds `config.json` and safetensors weights named as diffusers
(`diffusion_pytorch_model.safetensors`) or transformers (`model.safetensors`) write them, in the forms that
downloads actually have:

  - a weight *variant* `<name>.<variant>.safetensors` (`save_pretrained(variant="fp16")`); a snapshot of a repo's
    fp16 variant often holds nothing else, so with no `variant=` a lone variant is read;
  - sharded: an index whose `weight_map` names the shard files. Both libraries' `_add_variant` name a variant's index
    `<name>.safetensors.index.<variant>.json` (shards `<name>.<variant>-00001-of-00002.safetensors`); older
    uploads use `<name>.<variant>.safetensors.index.json`, which is read too.

Half-precision tensors are cast to float32 by `convert.state_dict_to_params` (params are always float32; `dtype` is
only the modules' compute dtype). A pipeline directory holds unet/, vae/, text_encoder/, tokenizer/ and scheduler/
sub-directories, as `DiffusionPipeline.save_pretrained` writes them.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import safetensors
import safetensors.numpy

from jaxprobe import io
from jaxprobe.models import convert
from jaxprobe.models.config import read_json  # noqa: F401  (also load.read_json)

WEIGHT_NAMES = ("diffusion_pytorch_model", "model")  # where a directory holds both, the diffusers name wins
WEIGHT_FILES = tuple(f"{name}.safetensors" for name in WEIGHT_NAMES)
# <name>[.<variant>].safetensors[.index[.<variant>].json]; shards are reached through their index only.
_WEIGHTS_RE = re.compile(r"(?P<name>diffusion_pytorch_model|model)(?:\.(?P<v1>[^.]+))?\.safetensors"
                         r"(?P<index>\.index(?:\.(?P<v2>[^.]+))?\.json)?")
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")


def read_config(directory: str | os.PathLike, *, what: str = "component") -> dict:
    """config.json of a component directory, with a clear error if there is none or it is broken."""
    directory = Path(os.path.abspath(directory))
    if not directory.exists():
        raise FileNotFoundError(f"{what} directory {directory} does not exist")
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a diffusers/transformers component directory: no config.json")
    return read_json(path, f"{what} config")


def weight_variants(directory: str | os.PathLike) -> dict[str | None, Path]:
    """The weight file (single safetensors or shard index) of each variant in `directory`; key None = plain weights.

    Where one variant has several candidates, an index beats a single file and diffusers names beat transformers
    ones.
    """
    candidates: dict[str | None, list] = {}
    for path in Path(directory).iterdir():
        m = _WEIGHTS_RE.fullmatch(path.name)
        if m and path.is_file() and not _SHARD_SUFFIX.search(m["v1"] or ""):
            rank = (WEIGHT_NAMES.index(m["name"]), m["index"] is None, path.name)
            candidates.setdefault(m["v1"] or m["v2"], []).append((rank, path))
    return {variant: min(c)[1] for variant, c in candidates.items()}


def read_weights(directory: str | os.PathLike, *, variant: str | None = None,
                 what: str = "component") -> dict[str, np.ndarray]:
    """All tensors of the component's weights (plain or `variant`; shards merged), as numpy in their stored dtype.

    Without `variant`, the plain weights are read, or the only variant if there is exactly one; several variants
    and no plain weights is ambiguous, so it is an error rather than a guess.
    """
    directory = Path(os.path.abspath(directory))
    found = weight_variants(directory) if directory.is_dir() else {}
    if variant is None and None not in found:
        if len(found) > 1:
            raise ValueError(f"{what} directory {directory} has no plain weights but several variants "
                             f"({', '.join(sorted(found))}): pass variant= one of them")
        variant = next(iter(found), None)
    if variant not in found:
        have = ", ".join(sorted(v or "plain" for v in found)) or "none"
        raise FileNotFoundError(
            f"no {variant + ' variant ' if variant else ''}{what} weights in {directory} (found: {have}); expected "
            f"{' or '.join(_add_variant(f, variant) for f in WEIGHT_FILES)} or its sharded index "
            "(PyTorch .bin/.ckpt files are pickles and are not read)")
    path = found[variant]
    if path.suffix != ".json":
        return _read_safetensors(path, what)
    weight_map = read_json(path, f"{what} weight index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{what} weight index {path} has no weight_map")
    state = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
            raise FileNotFoundError(f"{what} weight shard {directory / shard} listed in {path} is missing")
        state.update(_read_safetensors(directory / shard, what))
    return state


def _add_variant(filename: str, variant: str | None) -> str:
    """`x.safetensors` -> `x.fp16.safetensors` (diffusers' and transformers' `_add_variant`)."""
    if variant is None:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def _read_safetensors(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(path)
    except safetensors.SafetensorError as e:
        raise ValueError(f"{what} weights {path} are unreadable (truncated or not safetensors): {e}") from e


def param_shapes(module) -> Any:
    """Parameter template (ShapeDtypeStructs) of a module without allocating or computing anything."""
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *module.dummy_inputs()))
    return variables["params"]


def _load(directory, build: Callable[..., Any], what: str, dtype=None, variant=None):
    directory = Path(os.path.abspath(directory))
    module = build(read_config(directory, what=what), dtype=dtype)
    state = read_weights(directory, variant=variant, what=what)
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


def build_clip(config: dict, *, dtype=None):
    """Two-tower CLIPModel from a transformers CLIPModel config.json dict (no weights).

    Raises ValueError for any other model_type (a `CLIPTextModel` text encoder is `clip_text_model`: use
    `build_text_encoder` / `load_text_encoder` for it).
    """
    from jaxprobe.models import clip
    _check_clip_config(config, "config")
    return clip.CLIPModel(clip.CLIPConfig.from_dict(config), **_dt(dtype))


def _check_clip_config(config: dict, where: str):
    model_type = config.get("model_type")
    if model_type != "clip":
        hint = "; for a CLIP text encoder use load_text_encoder" if model_type == "clip_text_model" else ""
        raise ValueError(f"{where} is not a transformers CLIPModel config: model_type={model_type!r}, expected "
                         f"'clip' (architectures={config.get('architectures')!r}){hint}")


def build_dpt(config: dict, *, dtype=None):
    """DPTForDepthEstimation (ViT backbone, DPT-Large style) from a transformers config.json dict (no weights).

    Raises ValueError for any other model_type and for DPT variants not implemented (hybrid, external backbones).
    """
    from jaxprobe.models import dpt
    _check_dpt_config(config, "config")
    return dpt.DPTForDepthEstimation(dpt.DPTConfig.from_dict(config), **_dt(dtype))


def _check_dpt_config(config: dict, where: str):
    model_type = config.get("model_type")
    if model_type != "dpt":
        raise ValueError(f"{where} is not a transformers DPT config: model_type={model_type!r}, expected 'dpt' "
                         f"(architectures={config.get('architectures')!r})")


def load_unet(directory, *, dtype=None, variant=None):
    """UNet2DConditionModel from a diffusers `unet/` directory -> (module, params); `variant` as in `read_weights`."""
    return _load(directory, build_unet, "UNet", dtype, variant)


def load_vae(directory, *, dtype=None, variant=None):
    """AutoencoderKL from a diffusers `vae/` directory -> (module, params); `variant` as in `read_weights`."""
    return _load(directory, build_vae, "VAE", dtype, variant)


def load_text_encoder(directory, *, dtype=None, variant=None):
    """CLIPTextModel from a transformers `text_encoder/` dir -> (module, params); `variant` as in `read_weights`."""
    return _load(directory, build_text_encoder, "text encoder", dtype, variant)


def load_clip(directory, *, dtype=None, variant=None):
    """CLIPModel (both towers) from a transformers `CLIPModel.save_pretrained` directory (or a snapshot of e.g.
    openai/clip-vit-base-patch32) -> (module, params); `variant` as in `read_weights`."""
    directory = Path(os.path.abspath(directory))
    _check_clip_config(read_config(directory, what="CLIP model"), str(directory / "config.json"))
    return _load(directory, build_clip, "CLIP model", dtype, variant)


def load_dpt(directory, *, dtype=None, variant=None):
    """DPTForDepthEstimation from a transformers `save_pretrained` directory (or a snapshot of e.g. Intel/dpt-large)
    -> (module, params); `variant` as in `read_weights`. `dpt.preprocessor(directory)` reads its image settings."""
    directory = Path(os.path.abspath(directory))
    _check_dpt_config(read_config(directory, what="DPT model"), str(directory / "config.json"))
    return _load(directory, build_dpt, "DPT model", dtype, variant)


def save_clip(directory, module, params):
    """Write a CLIPModel as transformers does (config.json + model.safetensors), loadable by
    `transformers.CLIPModel.from_pretrained` and `load_clip`."""
    from jaxprobe.models import clip
    if not isinstance(module, clip.CLIPModel):
        raise TypeError(f"save_clip needs a jaxprobe CLIPModel, got {type(module).__name__}")
    save_component(directory, module, params, weights_name="model.safetensors")


def _dt(dtype):
    return {} if dtype is None else {"dtype": dtype}


def save_component(directory, module, params, *, weights_name: str = "diffusion_pytorch_model.safetensors"):
    """Write `config.json` + safetensors in the diffusers/transformers layout, atomically (temp dir + rename).

    The module's config dataclass must provide `to_dict()` giving the original config.json fields back.
    """
    with io.atomic_dir(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps(module.config.to_dict(), indent=2, sort_keys=True) + "\n")
        safetensors.numpy.save_file(convert.params_to_state_dict(params), tmp / weights_name,
                                    metadata={"format": "pt"})
