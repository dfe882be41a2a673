"""concepts: one checkpoint of the toy concept sweep (the shipped last MobileNetV2 checkpoint, exact-label sets):
every family x module x concept probe, jaxprobe's grouped vmapped fit vs a PyTorch one-probe-at-a-time loop
(`references.concept_probes`), both timed on every probe."""
from __future__ import annotations

import functools
import os

from benchmarks import references
from benchmarks.harness import Settings, best_time, machine, measured

# Bytes of memory traffic per parameter per Adam step in jaxprobe's fit: the weight gradient written (4), then
# XLA:CPU's three loops for optax's adam (first moment 12, second moment 12, update 16).
ADAM_BYTES = 44


def run(s: Settings) -> str:
    import torch

    from configs.concepts import toy
    from jaxprobe import hooks, kernels
    from jaxprobe.concepts import pool, scores, sets, sweep
    from jaxprobe.probing import fit

    c = toy.get_config()
    c.labels, c.models = "truth", ("trained",)
    c.update_from_flattened_dict(s.concept_config)
    data = pool.load_pool(c)
    groups = {g: tuple(w) for g, w in c.groups.items()}
    concept_sets = sets.make_sets(scores.truth_scores(data.truth, groups), groups, num_positive=c.num_positive,
                                  num_negative=c.num_negative, test_fraction=c.test_fraction, seed=c.seed,
                                  negatives=c.negatives)
    module, ckpts = sweep.load_checkpoints(c)
    step, variables = ckpts[-1]
    layers = hooks.select_layers(module, list(c.layers))
    acts = sweep.capture(module, variables, data.images, layers, c.capture_batch_size)
    load = os.getloadavg()[0]
    torch.set_num_threads(1)  # one small probe at a time is single-stream work
    lines, totals, families = [], {"ours": 0.0, "stack": 0.0, "torch": 0.0}, tuple(c.families)
    for family in families:
        kind, how = sweep.FAMILIES[family]
        c.families = (family,)
        t_ours = best_time(lambda: sweep.probe_checkpoint(acts, concept_sets, c, step=step), repeats=1)
        with kernels.use(probe_fit="vmap"):  # every probe of a group in one stack (the plain path)
            t_stack = best_time(lambda: sweep.probe_checkpoint(acts, concept_sets, c, step=step), repeats=1)
        feats = {l: sweep.features(acts[l], how) for l in layers}
        inputs = [(sweep.standardise(feats[l][cs.train], feats[l][cs.test])[0], cs.train_y)
                  for l in layers for cs in concept_sets]
        t_torch = best_time(lambda: references.concept_probes(inputs, kind, hidden=c.probe.hidden,
                                                              epochs=sweep.epochs_of(c, family),
                                                              batch_size=c.probe.batch_size, lr=c.probe.lr),
                            repeats=1, warmup=0)
        totals["ours"] += t_ours
        totals["stack"] += t_stack
        totals["torch"] += t_torch
        lines.append((family, len(inputs), t_ours, t_torch, t_stack))
    peak_flops, adam_bw = machine_peaks(c.probe.hidden)
    floors = {}
    for family in families:
        kind = sweep.FAMILIES[family][0]
        widths = [sweep.features(acts[l][:1], sweep.FAMILIES[family][1]).shape[1] for l in layers]
        steps = sweep.epochs_of(c, family) * -(-len(concept_sets[0].train) // c.probe.batch_size)
        flops, params = step_cost(kind, widths, c.probe.hidden, c.probe.batch_size)
        floors[family] = (flops * steps * len(concept_sets), ADAM_BYTES * params * steps * len(concept_sets))
    roof = "\n".join(
        f"| {f} | {floors[f][0] / 1e9:.1f} | {floors[f][1] / 1e9:.1f} | "
        f"{floors[f][0] / peak_flops + floors[f][1] / adam_bw:.2f} | {o:.1f} | {t:.1f} | "
        f"{t / (floors[f][0] / peak_flops + floors[f][1] / adam_bw):.1f}x |" for f, _, o, t, _ in lines)
    floor_all = sum(fl / peak_flops + by / adam_bw for fl, by in floors.values())
    rows = "\n".join(f"| {f} | {n} | {o:.1f} | {st:.1f} | {t:.1f} | {t / o:.1f}x | {t / st:.1f}x |"
                     for f, n, o, t, st in lines)
    share = {f: o / totals["ours"] for f, _, o, _, _ in lines}
    return f"""One checkpoint (step {step}) of the toy concept sweep: {len(concept_sets)} concepts x {len(layers)} modules
per family, {len(concept_sets[0].train)} train images per probe, batch {c.probe.batch_size}, {c.probe.epochs} epochs
({c.probe.non_gap_epochs} for non_linear_non_gap), Adam {c.probe.lr}, MLP hidden {c.probe.hidden}; the activations of the shipped last MobileNetV2 checkpoint on
exact-label sets. Every probe is timed on both sides (no scaling). jaxprobe: the sweep's own `probe_checkpoint`
(concepts x equal-width modules stacked, vmapped, one scan per epoch; on CPU a stack whose first-layer kernels
exceed {fit.CHUNK_BYTES >> 20} MiB is fit a cache-sized chunk of probes at a time, `kernels` 'probe_fit'; fitting and
scoring, timed after one warm-up run that compiles), and the same with every group in one stack (`probe_fit=vmap`;
same results); PyTorch {torch.__version__}, 1 thread, one probe at a time.
{machine()}.

| family | probes | jaxprobe s | jaxprobe s, one stack | PyTorch s | speed-up | one stack's |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}
| all | {sum(line[1] for line in lines)} | {totals['ours']:.1f} | {totals['stack']:.1f} | {totals['torch']:.1f} | **{totals['torch'] / totals['ours']:.1f}x** | {totals['torch'] / totals['stack']:.1f}x |

Share of jaxprobe's time: {', '.join(f'{f} {100 * v:.0f} %' for f, v in share.items())}. {measured(load)}
(the cores are shared).

Roofline: the least time jaxprobe's fits could take here (scoring, a few % of its time, not counted), from the
work both sides must do (per probe-step: the first layer's forward and weight gradient, 4 x batch x inputs x width
FLOPs, and Adam over every parameter, {ADAM_BYTES} bytes each: the gradient written, then XLA's three passes for the
two moments and the update) at this machine's measured rates in this run: {peak_flops / 1e9:.0f} GFLOP/s for the first layer's matmul (batch
{c.probe.batch_size} x 16384 x {c.probe.hidden}, two independent ones in one jitted program) and {adam_bw / 1e9:.1f} GB/s
for optax's Adam update of 16384 x {c.probe.hidden} kernels (two likewise). PyTorch does the same FLOPs and at least
the same bytes, so its time over that floor is the most any implementation of this protocol can gain here.

| family | GFLOP | GB (Adam) | floor s | jaxprobe s | PyTorch s | ceiling (PyTorch s / floor) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{roof}
| all | | | {floor_all:.2f} | {totals['ours']:.1f} | {totals['torch']:.1f} | {totals['torch'] / floor_all:.1f}x |

Goal >= 20x. Command: `python launch/bench.py concepts`."""


def step_cost(kind: str, widths, hidden: int, batch: int) -> tuple[int, int]:
    """(FLOPs, parameters) of one training step of one probe per input width in `widths` (2 logits): the matmuls'
    forward and weight gradients (the inputs need no gradient), and every parameter Adam updates."""
    flops = params = 0
    for d in widths:
        if kind == "mlp":
            flops += 4 * batch * d * hidden + 6 * batch * hidden * 2
            params += d * hidden + hidden + hidden * 2 + 2
        else:
            flops += 4 * batch * d * 2
            params += d * 2 + 2
    return flops, params


def machine_peaks(hidden: int, batch: int = 32, width: int = 16384, copies: int = 2) -> tuple[float, float]:
    """(FLOP/s of the flattened-map probes' first-layer matmul, bytes/s of optax's Adam update of its kernel),
    measured here: the rates the roofline divides by. Each program holds `copies` independent problems, as a fit's
    step holds independent probes and layers, which XLA:CPU runs on different cores."""
    import jax
    import optax

    keys = jax.random.split(jax.random.key(0), 2 * copies)
    xs = [jax.random.normal(k, (batch, width)) for k in keys[:copies]]
    ws = [jax.random.normal(k, (width, hidden)) for k in keys[copies:]]
    dots = jax.jit(lambda xs, ws: [x @ w for x, w in zip(xs, ws)])
    t_dot = best_time(lambda: jax.block_until_ready(dots(xs, ws)), repeats=20)
    adam = optax.adam(1e-2)

    @functools.partial(jax.jit, donate_argnums=(0, 1))  # updated in place, as in the fit's scan
    def update(ws, states, grads):
        steps = [adam.update(g, state, w) for w, state, g in zip(ws, states, grads)]
        return [optax.apply_updates(w, u) for w, (u, _) in zip(ws, steps)], [state for _, state in steps]

    carry = [[w + 0 for w in ws], [adam.init(w) for w in ws]]

    def step():
        carry[:] = update(*carry, ws)
        jax.block_until_ready(carry)

    t_adam = best_time(step, repeats=20)
    return (copies * 2 * batch * width * hidden / t_dot,
            copies * (ADAM_BYTES - 4) * width * hidden / t_adam)
