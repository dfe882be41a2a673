"""Which implementation of a backend-sensitive computation runs, decided in this one place.

A few of jaxprobe's speed choices are rewrites measured faster on XLA:CPU only (BENCHMARKS.md, kernels). Each is
used on the backend where it was measured and nowhere else: elsewhere the plain `lax` / `nn` / vmapped form runs,
which is what XLA's GPU and TPU backends are tuned for. Models and probes ask `choose(name)` at trace time and
never test the backend themselves.

Override (e.g. to measure one path against the other, or to try a CPU rewrite on a GPU) with the environment
variable `JAXPROBE_KERNELS="depthwise_conv=lax,probe_fit=vmap"` (set before the process traces anything: a choice
is read when a program is traced, and a compiled program keeps its path), or `with kernels.use(depthwise_conv=
"lax"):`, which wins over the variable and clears JAX's in-memory compile caches on entry and exit, so that
programs traced before it (jitted functions keyed on their arguments only) are traced again with its choice.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import jax

from jaxprobe.validate import check_choice

ENV = "JAXPROBE_KERNELS"
# name -> {implementation: the backends it is the default on}; the implementation with no backends is the plain
# one, the default everywhere else.
KERNELS = {
    # MobileNetV2's depthwise 3x3: k*k shifted multiply-adds, or lax's grouped convolution
    "depthwise_conv": {"cpu_shifted": ("cpu",), "lax": ()},
    # a probe's logits layer: a custom VJP forming the kernel gradient as g^T x behind an optimization barrier,
    # or x @ kernel with autodiff's own gradient
    "probe_logits": {"cpu_transposed_vjp": ("cpu",), "plain": ()},
    # softmax cross-entropy over a probe's few classes: per-class elementwise planes, or optax's reduction
    "class_ce": {"cpu_planes": ("cpu",), "optax": ()},
    # a group of probes: fit in chunks whose first-layer parameters fit the cache, or all stacked at once
    "probe_fit": {"cpu_chunked": ("cpu",), "vmap": ()},
    # attention whose scores would be large: its queries a chunk at a time so that one chunk's scores exist at once
    # (host memory, not speed: SD v1 at 512x512), or one `jax.nn.dot_product_attention` call, which on a GPU may
    # pick a fused kernel that never holds the scores
    "attention": {"cpu_query_chunks": ("cpu",), "plain": ()},
}
_override: dict[str, str] = {}


def default(name: str, backend: str) -> str:
    """The implementation of `name` that runs on `backend` when nothing overrides it."""
    check_choice("kernel", name, KERNELS)
    impls = KERNELS[name]
    return next((i for i, backends in impls.items() if backend in backends),
                next(i for i, backends in impls.items() if not backends))


def choose(name: str) -> str:
    """The implementation of `name` for this process's default backend, after `use` and `JAXPROBE_KERNELS`."""
    check_choice("kernel", name, KERNELS)
    chosen = {**parse(os.environ.get(ENV, "")), **_override}
    return chosen.get(name) or default(name, jax.default_backend())


def parse(spec: str) -> dict[str, str]:
    """'name=impl,name=impl' -> {name: impl}, every name and implementation checked."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, impl = item.partition("=")
        if not sep:
            raise ValueError(f"{ENV}: {item!r} is not name=implementation")
        out[_checked(name.strip(), impl.strip())] = impl.strip()
    return out


@contextlib.contextmanager
def use(**choices: str) -> Iterator[None]:
    """Run the block with these implementations (for programs traced inside it)."""
    old = dict(_override)
    _override.update({_checked(n, i): i for n, i in choices.items()})
    jax.clear_caches()
    try:
        yield
    finally:
        _override.clear()
        _override.update(old)
        jax.clear_caches()


def _checked(name: str, impl: str) -> str:
    check_choice("kernel", name, KERNELS)
    check_choice(f"implementation of kernel {name!r}", impl, KERNELS[name])
    return name
