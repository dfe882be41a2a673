"""kernels: each backend-sensitive kernel of `jaxprobe.kernels`, its CPU rewrite against its plain form, side by
side on this machine, on the work it was written for."""
from __future__ import annotations

import os

from benchmarks.harness import TOY_LAYERS, Settings, best_time, machine, measured

WHY = {"depthwise_conv": "XLA:CPU's grouped convolution and its gradient are slow; GPU/TPU convolution libraries "
                         "have fast depthwise kernels",
       "probe_logits": "XLA:CPU's dot for x^T g with a 2-wide output is slow; elsewhere the barrier only blocks "
                       "XLA's own layout choice",
       "class_ce": "XLA:CPU reduces over a length-2 minor axis slowly; elsewhere optax's fused reduction is the "
                   "tuned path",
       "probe_fit": "a CPU keeps a chunk's parameters and Adam moments in its cache between steps; an accelerator "
                    "wants every probe in one wide step",
       "attention": "host memory, not speed: XLA:CPU holds all [B, H, T, S] scores (1 GiB per image with CFG at SD "
                    "v1's 64x64-token layers); a GPU/TPU may pick a fused kernel that never holds them"}
MEMORY = ("attention",)  # rewrites for memory: timed, but not held to the speed-up goal


def run(s: Settings) -> str:
    import jax

    from jaxprobe import kernels

    work = _work(s.kernel_config)
    load = os.getloadavg()[0]
    rows, ratios = [], []
    for name, (setting, make) in work.items():
        times = {}
        for impl in kernels.KERNELS[name]:
            with kernels.use(**{name: impl}):  # traced afresh for each path (in the warm-up)
                fn = make()
                times[impl] = best_time(lambda: jax.block_until_ready(fn()), repeats=s.repeats)
        cpu, plain = (times[i] for i in kernels.KERNELS[name])
        if name not in MEMORY:
            ratios.append(plain / cpu)
        rows.append(f"| {name} | {setting} | {cpu:.4f} | {plain:.4f} | {plain / cpu:.2f}x |")
    uses = "\n".join(f"| {n} | {' / '.join(f'`{i}`' for i in impls)} | "
                     f"{', '.join(f'{b}: `{kernels.default(n, b)}`' for b in ('cpu', 'gpu', 'tpu'))} | {WHY[n]} |"
                     for n, impls in kernels.KERNELS.items())
    return f"""Which implementation each backend runs (`jaxprobe/kernels.py`: chosen by `jax.default_backend()`,
overridden by `JAXPROBE_KERNELS=name=impl,...` or `kernels.use`). A CPU rewrite runs only on the backend where it
was measured faster (below); GPU and TPU run the plain `lax` / optax / vmapped form, which their compilers are tuned
for (not measured here: no accelerator).

| kernel | implementations (CPU rewrite / plain) | default per backend | why |
| --- | --- | --- | --- |
{uses}

Each CPU rewrite against its plain form on this CPU, both traced and compiled in this run, best of {s.repeats}
after a warm-up (compile excluded); {machine()}. {measured(load)}
(the cores are shared).

| kernel | work | CPU rewrite s | plain s | rewrite speed-up |
| --- | --- | ---: | ---: | ---: |
{chr(10).join(rows)}

Smallest speed-up of a CPU rewrite for speed over its plain form on CPU: **{min(ratios):.2f}x** (the attention
rewrite is for memory: {', '.join(MEMORY)} not counted). Command:
`python launch/bench.py kernels`."""


def _work(k: dict) -> dict:
    """{kernel: (setting, a function that makes a function running its work once)}: a MobileNetV2 gradient, a
    saliency probe fit, a flattened-map concept MLP fit, at the sizes of `Settings.kernel_config`."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxprobe.concepts.sweep import CONCEPT
    from jaxprobe.models import layers, mobilenet_v2
    from jaxprobe.probing import fit
    from jaxprobe.scene.tasks import SALIENCY

    rng = np.random.default_rng(0)
    b, r = k["batch"], k["resolution"]
    model = mobilenet_v2.MobileNetV2(mobilenet_v2.MobileNetV2Config(num_classes=16, width_mult=0.5))
    images = jnp.asarray(rng.normal(size=(b, r, r, 3)), jnp.float32)
    classes = jnp.asarray(rng.integers(0, 16, b))
    variables = model.init(jax.random.key(0), images[:1])

    def loss(params):
        logits = model.apply({**variables, "params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, classes).mean()

    def mobilenet_grad():
        grad = jax.jit(jax.grad(loss))
        return lambda: grad(variables["params"])

    n, epochs = k["images"], k["epochs"]
    side, ch, count = TOY_LAYERS[0]
    saliency_x = jnp.asarray(rng.normal(size=(n, count * k["steps"], side, side, ch)), jnp.float32)
    saliency_y = jnp.asarray(rng.random((n, 64, 64)) < 0.3)
    flat_x = jnp.asarray(rng.normal(size=(n, 7, k["flat_width"])), jnp.float32)
    flat_y = jnp.asarray(rng.random((n, 7)) < 1 / 3)

    def saliency_fit():
        return lambda: fit.fit_group(saliency_x, saliency_y, SALIENCY, epochs=epochs, batch_size=4)

    def flat_fit():
        return lambda: fit.fit_group(flat_x, flat_y, CONCEPT, kind="mlp", hidden=128, epochs=epochs, batch_size=32,
                                     lr=1e-2)

    t = k["attention_tokens"]
    q, kv = (jnp.asarray(rng.normal(size=(2, t, 8, 40)), jnp.float32) for _ in range(2))

    def attention():
        call = jax.jit(layers.attention)
        return lambda: call(q, kv, kv)

    probe_setting = (f"linear saliency fit, {saliency_x.shape[1]} probes of {side}x{side}x{ch} tokens, {n} images, "
                     f"batch 4, {epochs} epochs")
    return {"depthwise_conv": (f"MobileNetV2 (width 0.5) loss gradient, batch {b} at {r}x{r}", mobilenet_grad),
            "probe_logits": (probe_setting, saliency_fit), "class_ce": (probe_setting, saliency_fit),
            "probe_fit": (f"7 flattened-map MLP probes (hidden 128) of {k['flat_width']} inputs, {n} images, "
                          f"batch 32, {epochs} epochs", flat_fit),
            "attention": (f"self-attention of {t} tokens, 8 heads of 40, 2 rows (one image with CFG): SD v1's "
                          "64x64-token layers at 512x512" if t == 4096 else f"self-attention of {t} tokens", attention)}
