"""train: one toy LDM training step (configs/toy/ldm.py) on 1 CPU device vs one device per core, data parallel;
each count in a fresh process (`harness.worker`)."""
from __future__ import annotations

import os

from benchmarks.harness import Settings, best_time, machine, measured, worker


def time_train_step(repeats: int, overrides: dict) -> dict:
    """Seconds per toy LDM training step of configs/toy/ldm.py with `overrides` (batch split over this process's
    devices)."""
    import jax
    import numpy as np

    from configs.toy import ldm as toy_ldm
    from jaxprobe import mesh
    from jaxprobe import train as training
    from jaxprobe.toy import recipes

    c = toy_ldm.get_config()
    c.update_from_flattened_dict(overrides)
    *_, params, loss_fn, optimizer = recipes.ldm_setup(c, 16, 40, np.ones(c.max_length, np.int32))
    jax.set_mesh(mesh.make())  # every device along the data axis, as `train.fit`
    state = mesh.replicate(training.init_state(params, optimizer))
    rng = np.random.default_rng(0)
    batch = mesh.shard((rng.normal(size=(c.batch_size, 16, 16, 4)).astype(np.float32),
                        rng.integers(0, 40, (c.batch_size, c.max_length)).astype(np.int32)))
    step = training.make_step(loss_fn, optimizer, c.ema_decay, 0)

    def steps():
        nonlocal state
        for _ in range(5):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)

    return {"seconds": best_time(steps, repeats=repeats) / 5, "batch": c.batch_size,
            "devices": len(jax.local_devices()), "machine": machine()}


def run(s: Settings) -> str:
    load = os.getloadavg()[0]
    from jaxprobe import train as training

    flags = os.environ.get("XLA_FLAGS", "")
    runs = [worker("train.time_train_step", (s.repeats, s.train_config),
                   training.host_device_flags(flags, cores=cores)) for cores in (1, os.cpu_count() or 1)]
    one, many = runs
    rows = "\n".join(f"| {r['devices']} | {r['seconds']:.3f} | {r['batch'] / r['seconds']:.1f} |" for r in runs)
    changed = f" with {s.train_config}" if s.train_config else ""
    return f"""{measured(load)}.

Toy LDM training step (configs/toy/ldm.py{changed} via `recipes.ldm_setup`: UNet + text encoder, loss, optimizer, EMA), batch {one['batch']},
fp32; {one['machine']}; best of {s.repeats} x 5 steps after a warm-up. The CPU is split into XLA devices with
`train.host_device_flags` (what `recipes.train` does) and `train.fit` splits each batch over them.

| CPU devices | s / step | samples / s |
| --- | ---: | ---: |
{rows}

Speed-up from data parallel over the cores: **{one['seconds'] / many['seconds']:.2f}x**. Command:
`python launch/bench.py train`."""
