"""concepts: one checkpoint of the toy concept sweep (the shipped last MobileNetV2 checkpoint, exact-label sets):
every family x module x concept probe, jaxprobe's grouped vmapped fit vs a PyTorch one-probe-at-a-time loop
(`references.concept_probes`), both timed on every probe."""
from __future__ import annotations

from benchmarks import references
from benchmarks.harness import Settings, best_time, machine


def run(s: Settings) -> str:
    import torch

    from configs.concepts import toy
    from jaxprobe import hooks
    from jaxprobe.concepts import pool, scores, sets, sweep

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
    torch.set_num_threads(1)  # one small probe at a time is single-stream work
    lines, totals = [], {"ours": 0.0, "torch": 0.0}
    for family in c.families:
        kind, how = sweep.FAMILIES[family]
        c.families = (family,)
        t_ours = best_time(lambda: sweep.probe_checkpoint(acts, concept_sets, c, step=step), repeats=1)
        feats = {l: sweep.features(acts[l], how) for l in layers}
        inputs = [(sweep.standardise(feats[l][cs.train], feats[l][cs.test])[0], cs.train_y)
                  for l in layers for cs in concept_sets]
        t_torch = best_time(lambda: references.concept_probes(inputs, kind, hidden=c.probe.hidden,
                                                              epochs=sweep.epochs_of(c, family),
                                                              batch_size=c.probe.batch_size, lr=c.probe.lr),
                            repeats=1, warmup=0)
        totals["ours"] += t_ours
        totals["torch"] += t_torch
        lines.append((family, len(inputs), t_ours, t_torch))
    rows = "\n".join(f"| {f} | {n} | {o:.1f} | {t:.1f} | {t / o:.1f}x |" for f, n, o, t in lines)
    share = {f: o / totals["ours"] for f, _, o, _ in lines}
    return f"""One checkpoint (step {step}) of the toy concept sweep: {len(concept_sets)} concepts x {len(layers)} modules
per family, {len(concept_sets[0].train)} train images per probe, batch {c.probe.batch_size}, {c.probe.epochs} epochs
({c.probe.non_gap_epochs} for non_linear_non_gap), Adam {c.probe.lr}, MLP hidden {c.probe.hidden}; the activations of the shipped last MobileNetV2 checkpoint on
exact-label sets. Every probe is timed on both sides (no scaling). jaxprobe: the sweep's own `probe_checkpoint`
(concepts x equal-width modules stacked, vmapped, one scan per epoch; fitting and scoring, timed after one
warm-up run that compiles);
PyTorch {torch.__version__}, 1 thread, one probe at a time. {machine()}.

| family | probes | jaxprobe s | PyTorch s | speed-up |
| --- | ---: | ---: | ---: | ---: |
{rows}
| all | {sum(n for _, n, _, _ in lines)} | {totals['ours']:.1f} | {totals['torch']:.1f} | **{totals['torch'] / totals['ours']:.1f}x** |

Share of jaxprobe's time: {', '.join(f'{f} {100 * v:.0f} %' for f, v in share.items())}.
Goal >= 20x. Command: `python launch/bench.py concepts`."""
