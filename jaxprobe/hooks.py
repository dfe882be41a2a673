"""The one way jaxprobe looks inside a model: record or edit chosen submodules' outputs during `apply`.

Submodules are named by their Flax module paths, which mirror diffusers' names
(`down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_out_0`); users select them with fnmatch patterns in
either the Flax form or diffusers' dotted form (`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0`).

`apply` edits through `flax.linen.intercept_methods` (the interceptor replaces a submodule's output as it is
returned, so everything downstream computes on the edited value) and records through `capture_intermediates`,
which Flax runs after the interceptors: a recorded output is the edited one. Both happen at trace time, so a hooked
call compiles into any jitted program, the sampling scan included (`jaxprobe.diffusion.sampling`).
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import math
from typing import Callable, Mapping, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxprobe.models import convert

Edit = Callable[[jax.Array], jax.Array]
_KINDS = {"UNet2DConditionModel": "UNet", "AutoencoderKL": "VAE"}  # what users call them in error messages


@functools.lru_cache(maxsize=8)
def module_paths(module) -> tuple[str, ...]:
    """Every submodule path whose `__call__` output `apply` can record on `module(*dummy_inputs())`, in call order
    (a parent before its children; shapes only, nothing is computed)."""
    order: dict[str, None] = {}

    def log(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.path:
            order.setdefault("/".join(context.module.path), None)
        return next_fun(*args, **kwargs)

    def run():
        variables = module.init(jax.random.key(0), *module.dummy_inputs())
        order.clear()  # the order of the forward pass below, not of init
        with nn.intercept_methods(log):
            module.apply(variables, *module.dummy_inputs())
    jax.eval_shape(run)
    return tuple(order)


def normalise(pattern: str) -> str:
    """Dotted diffusers names -> Flax paths; '/' patterns pass through."""
    if "/" in pattern or "." not in pattern:
        return pattern
    return "/".join(convert.torch_key_to_path(pattern))


def select_layers(module, patterns: Sequence[str] | str) -> tuple[str, ...]:
    """Module paths matching any of `patterns` (fnmatch), in call order; a pattern matching nothing is an error
    that lists the nearest valid paths."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise ValueError("no layer patterns given")
    paths = module_paths(module)
    chosen = set()
    for raw in patterns:
        pat = normalise(raw)
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pat)]
        if not hits:
            near = difflib.get_close_matches(pat, paths, n=5, cutoff=0.3) or list(paths[:5])
            kind = _KINDS.get(type(module).__name__, type(module).__name__)
            raise ValueError(f"layer pattern {raw!r} matches no {kind} module; "
                             f"nearest valid paths: {', '.join(near)}")
        chosen.update(hits)
    return tuple(p for p in paths if p in chosen)


def apply(module, params, *args, record: Sequence[str] = (), edit: Mapping[str, Edit] | None = None,
          method=None, **kwargs):
    """`module.apply({'params': params}, *args)`, recording and/or editing submodule outputs.

    Args:
      params: the params tree, or a whole variables dict holding 'params' and other collections (a CNN's
        'batch_stats'), which is passed on as it is.
      record: module paths (from `select_layers`) whose `__call__` outputs are returned.
      edit: {module path: fn(output) -> new output}; the new output replaces the old one for the rest of the call
        (and is what `record` sees). Edits run in forward order, so a later edit sees earlier ones' effects.
    Returns:
      (output, {path: recorded output}) — the dict is empty when nothing is recorded.
    """
    wanted, edits = frozenset(record), dict(edit or {})
    variables = params if "params" in params else {"params": params}

    def interceptor(next_fun, call_args, call_kwargs, context):
        out = next_fun(*call_args, **call_kwargs)
        fn = edits.get("/".join(context.module.path)) if context.method_name == "__call__" else None
        if fn is None:
            return out
        new = fn(out)
        # the rest of the model was traced for `out`: a reshaped or recast edit would fail far downstream
        chex.assert_trees_all_equal_shapes_and_dtypes(new, out)
        return new

    def keep(mdl, method_name):
        return method_name == "__call__" and "/".join(mdl.path) in wanted

    with nn.intercept_methods(interceptor) if edits else contextlib.nullcontext():
        if not wanted:
            return module.apply(variables, *args, method=method, **kwargs), {}
        out, state = module.apply(variables, *args, method=method, capture_intermediates=keep,
                                  mutable=["intermediates"], **kwargs)
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    return out, {k[: -len("/__call__")]: v[0] for k, v in flat.items()}


def to_spatial(x: jax.Array, latent_hw: tuple[int, int]) -> jax.Array:
    """Token sequences [..., T, C] -> [..., h, w, C], with h/w the latent size divided by the layer's stride."""
    tokens = x.shape[-2]
    stride = math.isqrt(latent_hw[0] * latent_hw[1] // tokens)
    h, w = latent_hw[0] // stride, latent_hw[1] // stride
    if h * w != tokens:
        raise ValueError(f"cannot lay {tokens} tokens out on the {latent_hw} latent grid")
    return x.reshape(x.shape[:-2] + (h, w, x.shape[-1]))


@jax.jit
def _finite(a: jax.Array) -> jax.Array:
    """True unless `a` holds NaN or +-inf, in one fused pass: the sum of `a * 0` is 0 unless an entry is NaN or
    inf (then NaN) and cannot overflow (~3x faster on CPU than `isfinite(a).all()`, which reduces a bool array)."""
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        return jnp.asarray(True)
    return jnp.isfinite(jnp.sum(a * 0, dtype=jnp.float32))


def all_finite(a) -> bool:
    """Whether every entry of `a` is finite (integer and bool arrays always are)."""
    return bool(_finite(jnp.asarray(a)))


def check_finite(acts: Mapping[str, jax.Array], what: str = "activations") -> None:
    """Raise a ValueError naming every layer whose activations contain NaN or inf (one device->host transfer)."""
    flags = jax.device_get({k: _finite(jnp.asarray(v)) for k, v in acts.items()})
    bad = [k for k in acts if not flags[k]]
    if bad:
        raise ValueError(f"non-finite (NaN/inf) {what} at layer(s): {', '.join(bad)}; check the weights, the "
                         "dtype (bf16 overflow?) and the inputs")
