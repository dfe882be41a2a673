r"""Benchmarks, each side by side with its reference in one run; results go to BENCHMARKS.md (with a summary of
every headline figure, its goal, the machine and the versions at the top). The benchmarks live in benchmarks/.

  python launch/bench.py all         # every benchmark below, one after another (about 18 min on 2 CPU cores, plus
                                     # kernels ~2 min and device, which is for an accelerator)

  python launch/bench.py sample      # jaxprobe vs diffusers PyTorch, same tiny SD and SDXL-structured pipelines, CPU
  python launch/bench.py intervene   # the probe-guided edit in one jit vs the paper's eager PyTorch hook loop
  python launch/bench.py probe       # every layer x step probe, vmapped JAX vs the paper's one-at-a-time PyTorch loop
  python launch/bench.py capture     # sampling vs sampling + capture (+ baselines, + streaming ridge), toy LDM
  python launch/bench.py concepts    # one checkpoint of the toy concept sweep: grouped vmapped fits vs one-at-a-time PyTorch
  python launch/bench.py train       # toy LDM training step on 1 CPU device vs one device per core (data parallel)
  python launch/bench.py scaling     # capture and probe-fit throughput on 1, 2, 4, 8 XLA host devices
  python launch/bench.py dpt         # the label stage's depth model: Flax DPT-Large vs transformers PyTorch
  python launch/bench.py kernels     # each CPU-only rewrite (jaxprobe/kernels.py) against its plain lax/optax form
  python launch/bench.py device      # on an accelerator: full-size SD v1 UNet vs diffusers fp16, MFU, capture, edit,
                                     # probe fits, DPT-Large, peak memory (<= 8 min on one H100; docs/scale-out.md)
  python launch/bench.py rehearsal   # configs/scene/sd_v1_paper.py stage by stage on a full-width random SD v1 and
                                     # DPT-Large: time, compile, peak RSS, estimate, store bytes (docs/scale-out.md)

  python launch/bench.py --smoke --out=/tmp/smoke.md all   # every benchmark at a tiny size: does it run?
"""
import sys
import tempfile
from pathlib import Path

from absl import flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ and configs/ sit beside launch/, outside the installed library

from benchmarks import harness  # noqa: E402
from jaxprobe import cli  # noqa: E402
from jaxprobe.testing import tiny_pipeline  # noqa: E402

_D = harness.Settings()
_OUT = flags.DEFINE_string("out", str(ROOT / _D.out), "markdown file to update")
_BATCH = flags.DEFINE_integer("batch", _D.batch, "prompts per batch")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "denoising steps")
_REPEATS = flags.DEFINE_integer("repeats", _D.repeats, "timed repeats (best is kept)")
_PROBE_IMAGES = flags.DEFINE_integer("probe_images", _D.probe_images, "training images for the probe benchmark")
_PROBE_EPOCHS = flags.DEFINE_integer("probe_epochs", _D.probe_epochs, "epochs for the probe benchmark (both sides)")
_SMOKE = flags.DEFINE_bool("smoke", False, "every benchmark at a tiny size (the other size flags are ignored)")


def main(argv):
    harness.names(argv[1:])  # an unknown name fails here, before any work
    with tempfile.TemporaryDirectory() as tiny:
        if _SMOKE.value:
            tiny_pipeline(tiny)  # one saved tiny random pipeline for every benchmark
            settings = harness.smoke(_OUT.value, tiny)
        else:
            settings = harness.Settings(out=_OUT.value, batch=_BATCH.value, steps=_STEPS.value,
                                        repeats=_REPEATS.value, probe_images=_PROBE_IMAGES.value,
                                        probe_epochs=_PROBE_EPOCHS.value)
        for body in harness.run(argv[1:], settings):
            print(body)


if __name__ == "__main__":
    cli.run(main)
