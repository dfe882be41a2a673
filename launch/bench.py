r"""Benchmarks, each side by side with its reference in one run; results go to BENCHMARKS.md.

  python launch/bench.py sample      # jaxprobe vs diffusers PyTorch, same tiny pipeline, CPU
"""
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/tiny_sd.py builds the shared PyTorch reference pipeline

from absl import app, flags  # noqa: E402

_OUT = flags.DEFINE_string("out", str(ROOT / "BENCHMARKS.md"), "markdown file to update")
_BATCH = flags.DEFINE_integer("batch", 4, "prompts per batch")
_STEPS = flags.DEFINE_integer("steps", 15, "denoising steps")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repeats (best is kept)")


def bench_sample():
    import jax
    import numpy as np
    import torch

    from jaxprobe import benchmarks, sampling
    from jaxprobe.models import load_pipeline
    from tiny_sd import build_torch_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompts = [f"a red sphere number {k}" for k in range(_BATCH.value)]
    with tempfile.TemporaryDirectory() as d:
        torch_pipe = build_torch_pipeline(d)
        torch_pipe.set_progress_bar_config(disable=True)
        pipe = load_pipeline(d)
    noise = sampling.initial_noise(list(range(len(prompts))), (8, 8, 4))
    noise_t = torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())

    def ours():
        jax.block_until_ready(sampling.sample(pipe, prompts, num_inference_steps=_STEPS.value, latents=noise).images)

    def theirs():
        with torch.inference_mode():
            torch_pipe(prompts, num_inference_steps=_STEPS.value, latents=noise_t, output_type="np")

    t_ours = benchmarks.best_time(ours, repeats=_REPEATS.value)
    t_theirs = benchmarks.best_time(theirs, repeats=_REPEATS.value)
    n = len(prompts)
    body = f"""Tiny random SD pipeline (tests/tiny_sd.py: UNet (32, 64), 16x16 images), batch {n}, LMS {_STEPS.value} steps,
CFG 7.5, fp32, both on {benchmarks.machine()}; best of {_REPEATS.value} after a warm-up (jit compile excluded).

| implementation | s / batch | images / s |
| --- | ---: | ---: |
| jaxprobe (one jit, lax.scan) | {t_ours:.4f} | {n / t_ours:.1f} |
| diffusers PyTorch {torch.__version__} | {t_theirs:.4f} | {n / t_theirs:.1f} |

Speed-up jaxprobe / diffusers: **{t_theirs / t_ours:.2f}x**. Command: `python launch/bench.py sample`."""
    benchmarks.write_section(_OUT.value, "sample", body)
    print(body)


BENCHES = {"sample": bench_sample}


def main(argv):
    names = argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise app.UsageError(f"unknown benchmark {unknown}; valid: {', '.join(BENCHES)}")
    for name in names:
        BENCHES[name]()


if __name__ == "__main__":
    app.run(main)
