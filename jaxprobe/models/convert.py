"""PyTorch state-dict names and layouts <-> Flax parameter trees.

The Flax models name their submodules after diffusers/transformers attributes, with list indices joined by an
underscore (`down_blocks.0.resnets.1` -> `down_blocks_0/resnets_1`, which is what linen does for lists assigned in
`setup`). So one rule converts every model, driven by the Flax parameter *template* (shapes from `jax.eval_shape`):

  torch `weight` -> Flax `kernel` (conv OIHW -> HWIO, linear (out, in) -> (in, out)), `scale` (norms) or `embedding`
  torch `bias`   -> Flax `bias`
  any other torch leaf (a raw `nn.Parameter`: `logit_scale`, `class_embedding`) -> the Flax param of the same name,
  same layout (0-d stays 0-d)

  torch BatchNorm `running_mean` / `running_var` -> Flax `batch_stats` `mean` / `var`

The key table is the template's: every Flax path has one torch key (a model whose torch names follow another rule,
as torchvision's MobileNetV2, passes its own `module_key`), and every mismatch is collected into one error
(`check_fit`, shared by every loader) that lists missing, unexpected and mis-shaped keys. Models with no reference
format (the toy labelers) store their params under '/'-joined Flax paths, checked the same way.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# Module attribute names that really end in `_<digits>` (not list indices), so the reverse mapping keeps them.
LITERAL_NAMES = frozenset({"linear_1", "linear_2"})
# Buffers that PyTorch checkpoints carry but that are not parameters.
IGNORED_BUFFERS = ("position_ids", "num_batches_tracked")
# Flax BatchNorm's `batch_stats` leaves -> torch BatchNorm's buffers.
BATCH_STATS = {"mean": "running_mean", "var": "running_var"}
# Old (pre-0.14) diffusers VAE attention names, still found in SD v1 checkpoints.
LEGACY_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
# transformers 4 wrote CLIPTextModel weights under `text_model.` (SD v1-4's text_encoder/); transformers 5 does not.
WRAPPER_PREFIXES = ("text_model.",)
_MAX_LISTED = 12


class WeightMismatchError(ValueError):
    """Weights do not fit the model they are loaded into."""


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


def state_dict_to_params(state: Mapping[str, np.ndarray], template, *, source: str = "the state dict",
                         model: str = "model") -> dict:
    """Convert a PyTorch-layout state dict into a Flax params tree shaped like `template`.

    Args:
      state: name -> numpy array, PyTorch names and layouts (as read from safetensors).
      template: Flax params tree (arrays or `jax.ShapeDtypeStruct`), e.g. from `jax.eval_shape(module.init, ...)`.
      source, model: where the weights come from and what they are loaded into, for the error message.
    Raises:
      WeightMismatchError: listing every missing, unexpected and mis-shaped key.
    """
    return state_dict_to_variables(state, {"params": template}, source=source, model=model)["params"]


def state_dict_to_variables(state: Mapping[str, np.ndarray], template, *, source: str, model: str,
                            module_key: Callable[[tuple[str, ...]], str] = path_to_torch_key) -> dict:
    """A PyTorch state dict -> Flax variables shaped like `template` ({collection: tree}), all float32 arrays on the
    default device: each leaf is put there as it is converted, because a jitted call given numpy copies every leaf
    again at each call (4.3 GB per sampling batch for SD v1), and a host copy kept beside a device one doubles them.

    The key table comes from the template: each Flax path's torch key (`module_key` names its module; torch
    BatchNorm's running_mean/var are `batch_stats` mean/var). Raises WeightMismatchError (every missing, unexpected
    and mis-shaped key, `check_fit`'s message) or ValueError for an integer tensor where the model has a float.
    """
    matched, missing, unexpected, misshaped = _match(state, template, module_key)
    check_fit(source, model, missing, unexpected, misshaped)
    out = {}
    for key, (path, target) in matched.items():
        value = _to_flax(path[-1], np.asarray(state[key]), target)
        if value.dtype.kind in "biu":
            raise ValueError(f"{source}: {key} has dtype {value.dtype}, expected floating point")
        out[path] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(out)


def mismatches(state: Mapping[str, np.ndarray], template, *,
               module_key: Callable[[tuple[str, ...]], str] = path_to_torch_key) -> tuple[list, list, list]:
    """(missing, unexpected, mis-shaped) keys of a state dict against a variables template; nothing is converted."""
    return _match(state, template, module_key)[1:]


def _match(state, template, module_key) -> tuple[dict, list, list, list]:
    """({state key: (template path, its shape)} of the keys that fit, missing, unexpected, mis-shaped)."""
    table = {_torch_key(path, module_key): (path, tuple(t.shape))
             for path, t in traverse_util.flatten_dict(template).items()}
    matched, unexpected, misshaped, found = {}, [], [], set()
    for key, arr in state.items():
        if key.split(".")[-1] in IGNORED_BUFFERS:
            continue
        arr = np.asarray(arr)
        name = key if key in table else _legacy_rename(key)
        if name not in table:
            unexpected.append(key)
            continue
        path, target = table[name]
        found.add(path)  # present, whether or not it fits: a mis-shaped key is not also missing
        if tuple(np.shape(_to_flax(path[-1], arr, target))) != target:
            misshaped.append(_misshaped(key, np.shape(arr), _torch_shape(path[-1], target)))
        else:
            matched[key] = table[name]
    return matched, [k for k, (path, _) in table.items() if path not in found], unexpected, misshaped


def params_to_state_dict(params) -> dict[str, np.ndarray]:
    """Flax params tree -> PyTorch-named, PyTorch-layout numpy state dict (the inverse of `state_dict_to_params`)."""
    return variables_to_state_dict({"params": params})


def variables_to_state_dict(variables, *, module_key: Callable[[tuple[str, ...]], str] = path_to_torch_key
                            ) -> dict[str, np.ndarray]:
    """Flax variables ({collection: tree}) -> PyTorch-named, PyTorch-layout float32 numpy state dict (the inverse of
    `state_dict_to_variables`)."""
    return {_torch_key(path, module_key): _to_torch(path[-1], np.asarray(arr, dtype=np.float32))
            for path, arr in traverse_util.flatten_dict(variables).items()}


def flax_tensors_to_params(tensors: Mapping[str, np.ndarray], template, *, source: str, model: str) -> dict:
    """Tensors keyed by '/'-joined Flax param paths (what `params_to_flax_tensors` writes: a model with no reference
    checkpoint format) -> a params tree shaped like `template`, checked as `state_dict_to_variables` checks."""
    wanted = {"/".join(path): tuple(t.shape) for path, t in traverse_util.flatten_dict(template).items()}
    missing = [k for k in wanted if k not in tensors]
    unexpected = [k for k in tensors if k not in wanted]
    misshaped = [_misshaped(k, np.shape(tensors[k]), shape) for k, shape in wanted.items()
                 if k in tensors and tuple(np.shape(tensors[k])) != shape]
    check_fit(source, model, missing, unexpected, misshaped)
    return traverse_util.unflatten_dict(dict(tensors), sep="/")


def params_to_flax_tensors(params) -> dict[str, np.ndarray]:
    """Flax params tree -> numpy tensors keyed by '/'-joined param paths, in their own dtype and layout."""
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _torch_key(path: tuple[str, ...], module_key: Callable[[tuple[str, ...]], str]) -> str:
    """Flax variable path (collection first) -> torch state-dict key; a top-level param (`logit_scale`) has no module
    prefix."""
    collection, *modules, leaf = path
    name = BATCH_STATS[leaf] if collection == "batch_stats" else _torch_leaf(leaf)
    return ".".join(part for part in (module_key(tuple(modules)), name) if part)


def _torch_leaf(leaf: str) -> str:
    """Flax leaf name -> torch leaf name: kernel/scale/embedding are `weight`; bias and raw params keep their name."""
    return "weight" if leaf in ("kernel", "scale", "embedding") else leaf


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_to_torch(leaf, np.empty(shape, np.uint8)).shape)


def _misshaped(key: str, have, want) -> str:
    return f"{key}: checkpoint {tuple(have)} vs model {tuple(want)}"


def check_fit(source: str, model: str, missing, unexpected, misshaped) -> None:
    """The one weight mismatch error of every loader: raise WeightMismatchError if any key is missing, unexpected or
    mis-shaped, saying that the weights in `source` do not fit `model` and listing the keys."""
    if missing or unexpected or misshaped:
        raise WeightMismatchError(_mismatch_message(f"weights in {source} do not fit the {model}", missing,
                                                    unexpected, misshaped))


def _mismatch_message(title: str, missing, unexpected, misshaped) -> str:
    """`title` (counts), then every missing, unexpected and mis-shaped key (at most _MAX_LISTED of each)."""
    lines = [f"{title} ({len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped):"]
    for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            lines.append(f"  {name}:")
            lines += [f"    {k}" for k in sorted(items)[:_MAX_LISTED]]
            if len(items) > _MAX_LISTED:
                lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return "\n".join(lines)
