"""PyTorch state-dict names and layouts <-> Flax parameter trees.

The Flax models name their submodules after diffusers/transformers attributes, with list indices joined by an
underscore (`down_blocks.0.resnets.1` -> `down_blocks_0/resnets_1`, which is what linen does for lists assigned in
`setup`). So one rule converts every model, driven by the Flax parameter *template* (shapes from `jax.eval_shape`):

  torch `weight` -> Flax `kernel` (conv OIHW -> HWIO, linear (out, in) -> (in, out)), `scale` (norms) or `embedding`
  torch `bias`   -> Flax `bias`
  any other torch leaf (a raw `nn.Parameter`: `logit_scale`, `class_embedding`) -> the Flax param of the same name,
  same layout (0-d stays 0-d)

The template decides which of kernel/scale/embedding a `weight` becomes, and every mismatch is collected into one
error that lists missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
from flax import traverse_util

# Module attribute names that really end in `_<digits>` (not list indices), so the reverse mapping keeps them.
LITERAL_NAMES = frozenset({"linear_1", "linear_2"})
# Buffers that PyTorch checkpoints carry but that are not parameters.
IGNORED_BUFFERS = ("position_ids", "num_batches_tracked")
# Old (pre-0.14) diffusers VAE attention names, still found in SD v1 checkpoints.
LEGACY_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
# transformers 4 wrote CLIPTextModel weights under `text_model.` (SD v1-4's text_encoder/); transformers 5 does not.
WRAPPER_PREFIXES = ("text_model.",)
_MAX_LISTED = 12


class WeightMismatchError(ValueError):
    """Weights do not fit the model built from config.json."""


def torch_key_to_path(key: str) -> tuple[str, ...]:
    """`a.b.0.c.weight` -> ('a', 'b_0', 'c', 'weight')."""
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def path_to_torch_key(path: tuple[str, ...]) -> str:
    """Inverse of `torch_key_to_path` for module names (the leaf is converted by the caller). Every trailing index
    is split off, so a Sequential inside a ModuleList (DPT's `readout_projects_0_0`) becomes `readout_projects.0.0`."""
    parts = []
    for name in path:
        m = re.fullmatch(r"(.+?)((?:_\d+)+)", name)
        parts.append(name if (m is None or name in LITERAL_NAMES) else m.group(1) + m.group(2).replace("_", "."))
    return ".".join(parts)


def _legacy_rename(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] in LEGACY_RENAMES:
        parts[-2] = LEGACY_RENAMES[parts[-2]]
    return ".".join(parts)


def _to_flax(leaf: str, arr: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    if leaf == "kernel":
        if arr.ndim == 4 and len(target_shape) == 2 and arr.shape[2:] == (1, 1):
            arr = arr[:, :, 0, 0]  # 1x1 conv stored for a linear layer (old VAE attention)
        if arr.ndim == 4:
            return arr.transpose(2, 3, 1, 0)
        if arr.ndim == 2:
            return arr.T
    return arr


def _to_torch(leaf: str, arr: np.ndarray) -> np.ndarray:
    if leaf == "kernel":
        if arr.ndim == 4:
            return arr.transpose(3, 2, 0, 1)
        if arr.ndim == 2:
            return arr.T
    return arr


def state_dict_to_params(state: Mapping[str, np.ndarray], template, *, what: str = "model") -> dict:
    """Convert a PyTorch-layout state dict into a Flax params tree shaped like `template`.

    Args:
      state: name -> numpy array, PyTorch names and layouts (as read from safetensors).
      template: Flax params tree (arrays or `jax.ShapeDtypeStruct`), e.g. from `jax.eval_shape(module.init, ...)`.
      what: name used in the error message.
    Raises:
      WeightMismatchError: listing every missing, unexpected and mis-shaped key.
    """
    flat_t = traverse_util.flatten_dict(template)
    modules: dict[tuple, set] = {}
    for path in flat_t:
        modules.setdefault(path[:-1], set()).add(path[-1])
    out, unexpected, misshaped = {}, [], []
    for key, arr in state.items():
        if key.split(".")[-1] in IGNORED_BUFFERS:
            continue
        path = torch_key_to_path(key)
        if path[:-1] not in modules:
            path = torch_key_to_path(_legacy_rename(key))
        mod, leaf = path[:-1], path[-1]
        have = modules.get(mod, set())
        if leaf == "weight":
            leaf = next((n for n in ("kernel", "scale", "embedding") if n in have), None)
        if leaf is None or leaf not in have:
            unexpected.append(key)
            continue
        target = tuple(flat_t[mod + (leaf,)].shape)
        value = _to_flax(leaf, np.asarray(arr), target)
        if tuple(value.shape) != target:
            misshaped.append(f"{key}: checkpoint {tuple(np.shape(arr))} vs model {_torch_shape(leaf, target)}")
            continue
        out[mod + (leaf,)] = value.astype(np.float32) if value.dtype != np.float32 else value
    missing = [_torch_key(p) for p in flat_t if p not in out]
    if missing or unexpected or misshaped:
        raise WeightMismatchError(mismatch_message(f"weights do not fit the {what} built from its config.json",
                                                   missing, unexpected, misshaped))
    return traverse_util.unflatten_dict(out)


def params_to_state_dict(params) -> dict[str, np.ndarray]:
    """Flax params tree -> PyTorch-named, PyTorch-layout numpy state dict (the inverse of the above)."""
    state = {}
    for path, arr in traverse_util.flatten_dict(params).items():
        key = _torch_key(path)
        # np.require, not np.ascontiguousarray, which turns a 0-d param (CLIP's logit_scale) into shape (1,).
        state[key] = np.require(_to_torch(path[-1], np.asarray(arr, dtype=np.float32)), requirements="C")
    return state


def _torch_key(path: tuple[str, ...]) -> str:
    """Flax param path -> torch state-dict key; a top-level param (`logit_scale`) has no module prefix."""
    return ".".join(part for part in (path_to_torch_key(path[:-1]), _torch_leaf(path[-1])) if part)


def _torch_leaf(leaf: str) -> str:
    """Flax leaf name -> torch leaf name: kernel/scale/embedding are `weight`; bias and raw params keep their name."""
    return "weight" if leaf in ("kernel", "scale", "embedding") else leaf


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_to_torch(leaf, np.empty(shape, np.uint8)).shape)


def mismatch_message(title: str, missing, unexpected, misshaped) -> str:
    """`title` (counts), then every missing, unexpected and mis-shaped key (at most _MAX_LISTED of each)."""
    lines = [f"{title} ({len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped):"]
    for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            lines.append(f"  {name}:")
            lines += [f"    {k}" for k in sorted(items)[:_MAX_LISTED]]
            if len(items) > _MAX_LISTED:
                lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return "\n".join(lines)
