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

import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe import io
from jaxprobe.models import convert, mobilenet_v2
from jaxprobe.models.config import read_json  # noqa: F401  (also load.read_json)

# Widths tried when a MobileNetV2 checkpoint has no `width_mult` metadata: the published ones first, then a 0.05 grid.
MOBILENET_COMMON_WIDTHS = (1.0, 0.5, 0.75, 0.35, 1.4, 1.3, 0.25)
MOBILENET_WIDTH_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(59))  # 0.1 ... 3.0
WEIGHT_NAMES = ("diffusion_pytorch_model", "model")  # where a directory holds both, the diffusers name wins
WEIGHT_FILES = tuple(f"{name}.safetensors" for name in WEIGHT_NAMES)
DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS = WEIGHT_FILES
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
        return io.read_safetensors(path, what=f"{what} weights")[0]
    weight_map = read_json(path, f"{what} weight index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{what} weight index {path} has no weight_map")
    state = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
            raise FileNotFoundError(f"{what} weight shard {directory / shard} listed in {path} is missing")
        state.update(io.read_safetensors(directory / shard, what=f"{what} weights")[0])
    return state


def _add_variant(filename: str, variant: str | None) -> str:
    """`x.safetensors` -> `x.fp16.safetensors` (diffusers' and transformers' `_add_variant`)."""
    if variant is None:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def variable_shapes(module) -> Any:
    """Variables template ({collection: ShapeDtypeStructs}) of a module without allocating or computing anything
    (a fresh tree each call, from one trace per module config: tracing a UNet's `init` takes about a second)."""
    return jax.tree.map(lambda s: s, _traced_shapes(module))


@functools.lru_cache(maxsize=16)
def _traced_shapes(module) -> Any:
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *module.dummy_inputs()))


def param_shapes(module) -> Any:
    """Parameter template (ShapeDtypeStructs) of a module without allocating or computing anything."""
    return variable_shapes(module)["params"]


def _load(directory, build: Callable[..., Any], what: str, dtype=None, variant=None, weights: bool = True):
    directory = Path(os.path.abspath(directory))
    module = build(read_config(directory, what=what), dtype=dtype)
    if not weights:
        return module, param_shapes(module)
    state = read_weights(directory, variant=variant, what=what)
    return module, convert.state_dict_to_params(state, param_shapes(module), source=str(directory),
                                                model=f"{what} built from its config.json")


def build_unet(config: dict, *, dtype=None):
    """UNet2DConditionModel from a config.json dict (no weights)."""
    from jaxprobe.models import unet
    return unet.UNet2DConditionModel(unet.UNetConfig.from_dict(config), **_dt(dtype))


def build_vae(config: dict, *, dtype=None):
    """AutoencoderKL from a config.json dict (no weights)."""
    from jaxprobe.models import vae
    return vae.AutoencoderKL(vae.VAEConfig.from_dict(config), **_dt(dtype))


def build_text_encoder(config: dict, *, dtype=None):
    """CLIPTextModel, or CLIPTextModelWithProjection where config.json's `architectures` names it (SDXL's
    text_encoder_2), from a transformers config.json dict (no weights)."""
    from jaxprobe.models import clip
    if "CLIPTextModelWithProjection" in (config.get("architectures") or ()):
        return clip.CLIPTextModelWithProjection(clip.CLIPTextWithProjectionConfig.from_dict(config), **_dt(dtype))
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


def load_unet(directory, *, dtype=None, variant=None, weights: bool = True):
    """UNet2DConditionModel from a diffusers `unet/` directory -> (module, params); `variant` as in `read_weights`;
    `weights=False` reads the config alone and returns the params' ShapeDtypeStructs (as the VAE and text encoder)."""
    return _load(directory, build_unet, "UNet", dtype, variant, weights)


def load_vae(directory, *, dtype=None, variant=None, weights: bool = True):
    """AutoencoderKL from a diffusers `vae/` directory -> (module, params); `variant` as in `read_weights`."""
    return _load(directory, build_vae, "VAE", dtype, variant, weights)


def load_text_encoder(directory, *, dtype=None, variant=None, weights: bool = True):
    """CLIPTextModel (or CLIPTextModelWithProjection: `build_text_encoder`) from a transformers `text_encoder/` dir
    -> (module, params); `variant` as in `read_weights`."""
    return _load(directory, build_text_encoder, "text encoder", dtype, variant, weights)


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


def load_mobilenet_v2(path: str | os.PathLike, *, num_classes: int | None = None, width_mult: float | None = None,
                      dtype=None):
    """Read a torchvision `mobilenet_v2` state dict saved as one .safetensors file -> (module, variables).

    The class count comes from `classifier.1.weight`; the width from the file's `width_mult` metadata (written by
    `save_mobilenet_v2`) or else from the tensor shapes. Explicit arguments are checked against the file.
    Returns (module, {'params': ..., 'batch_stats': ...}), all float32 (half-precision files are cast).

    Raises:
      FileNotFoundError: no such file.
      ValueError: unreadable file, arguments that contradict it, or no width that fits.
      convert.WeightMismatchError: tensors that do not fit the model (missing, unexpected, mis-shaped keys).
    """
    path = Path(os.path.abspath(path))
    state, metadata = io.read_safetensors(path, what="MobileNetV2 weights")
    head = state.get("classifier.1.weight")
    if head is not None and head.ndim == 2:
        if num_classes is not None and num_classes != head.shape[0]:
            raise ValueError(f"num_classes={num_classes} given but MobileNetV2 checkpoint {path} has "
                             f"{head.shape[0]} classes (classifier.1.weight {tuple(head.shape)})")
        num_classes = int(head.shape[0])
    elif num_classes is None:
        raise convert.WeightMismatchError(f"MobileNetV2 checkpoint {path} has no 2-D classifier.1.weight, so its "
                                          "class count is unknown; is it a torchvision mobilenet_v2 state dict?")
    stored = metadata.get("width_mult")
    if stored is not None:
        try:
            stored = float(stored)
        except ValueError:
            raise ValueError(f"MobileNetV2 checkpoint {path} has unreadable width_mult metadata {stored!r}") from None
    if width_mult is not None and stored is not None and not math.isclose(width_mult, stored):
        raise ValueError(f"width_mult={width_mult} given but MobileNetV2 checkpoint {path} was saved with "
                         f"width_mult={stored}")
    if width_mult is None:
        width_mult = stored if stored is not None else _infer_width(state, num_classes, path)
    config = mobilenet_v2.MobileNetV2Config(num_classes=num_classes, width_mult=width_mult)
    variables = convert.state_dict_to_variables(state, mobilenet_v2.variable_shapes(config), source=str(path),
                                                model=_mobilenet_name(config),
                                                module_key=mobilenet_v2.torch_module_key)
    return mobilenet_v2.MobileNetV2(config, **_dt(dtype)), jax.tree.map(jnp.asarray, variables)


def _infer_width(state: dict[str, np.ndarray], num_classes: int, path: Path) -> float:
    """The first candidate width whose layout has exactly the checkpoint's keys and shapes (widths with equal
    layouts build identical models, so which one of them is taken does not matter)."""
    for width in dict.fromkeys(MOBILENET_COMMON_WIDTHS + MOBILENET_WIDTH_GRID):
        template = mobilenet_v2.variable_shapes(mobilenet_v2.MobileNetV2Config(num_classes=num_classes,
                                                                                width_mult=width))
        if not any(convert.mismatches(state, template, module_key=mobilenet_v2.torch_module_key)):
            return width
    stem = state.get("features.0.0.weight")
    hint = f" (stem conv {tuple(stem.shape)})" if stem is not None else " (no features.0.0.weight)"
    raise ValueError(f"MobileNetV2 checkpoint {path} fits no torchvision mobilenet_v2 of width_mult "
                     f"{MOBILENET_WIDTH_GRID[0]}..{MOBILENET_WIDTH_GRID[-1]}{hint}; pass width_mult= if it is another "
                     "width, or check that it is a torchvision mobilenet_v2 state dict")


def save_mobilenet_v2(path: str | os.PathLike, module, variables: dict, *, dtype=np.float32) -> None:
    """Write `variables` as a torchvision `mobilenet_v2` state dict (one .safetensors file, atomically).

    `dtype` is the float dtype written (float16 makes small checkpoints); `num_batches_tracked` is written as
    int64 zeros so torchvision's strict `load_state_dict` accepts the file. Metadata records `width_mult`.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"save_mobilenet_v2: dtype={dtype} is not supported; use float32 or float16")
    config = module.config
    state = convert.variables_to_state_dict({c: variables.get(c, {}) for c in ("params", "batch_stats")},
                                            module_key=mobilenet_v2.torch_module_key)
    convert.check_fit("the variables to save", _mobilenet_name(config),
                      *convert.mismatches(state, mobilenet_v2.variable_shapes(config),
                                          module_key=mobilenet_v2.torch_module_key))
    state = {k: v.astype(dtype) for k, v in state.items()}
    for key in [key for key in state if key.endswith(".running_var")]:
        state[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    io.write_safetensors(path, state, metadata={"format": "pt", "width_mult": repr(config.width_mult)})


def _mobilenet_name(config) -> str:
    return f"mobilenet_v2(width_mult={config.width_mult}, num_classes={config.num_classes})"


def save_clip(directory, module, params):
    """Write a CLIPModel as transformers does (config.json + model.safetensors), loadable by
    `transformers.CLIPModel.from_pretrained` and `load_clip`."""
    from jaxprobe.models import clip
    if not isinstance(module, clip.CLIPModel):
        raise TypeError(f"save_clip needs a jaxprobe CLIPModel, got {type(module).__name__}")
    save_component(directory, module, params, weights_name=TRANSFORMERS_WEIGHTS)


def _dt(dtype):
    return {} if dtype is None else {"dtype": dtype}


def save_component(directory, module, params, *, weights_name: str = DIFFUSERS_WEIGHTS):
    """Write `config.json` + safetensors in the diffusers/transformers layout, atomically (temp dir + rename).

    The module's config dataclass must provide `to_dict()` giving the original config.json fields back.
    """
    with io.atomic_dir(directory) as tmp:
        write_component(tmp, module, params, weights_name=weights_name)


def write_component(directory: Path, module, params, *, weights_name: str) -> None:
    """`save_component`'s files, into `directory` as it is: for a directory that an `io.atomic_dir` is writing with
    other files beside the model's (a tokenizer, metrics)."""
    io.write_text(directory / "config.json", json.dumps(module.config.to_dict(), indent=2, sort_keys=True) + "\n")
    io.write_safetensors(directory / weights_name, convert.params_to_state_dict(params), metadata={"format": "pt"})
