r"""Text-to-image sampling from a diffusers-format Stable Diffusion directory; writes PNGs + an index.

  python launch/sample.py --config=configs/sample/toy.py --config.prompts="a red sphere|a blue cube" \
      --workdir=runs/samples
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxprobe.diffusion import generate

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sample/toy.py", "sampling config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/samples", "where PNGs and samples.json go")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    c = _CONFIG.value
    try:
        s = generate.generate(c, _WORKDIR.value)
    except (ValueError, FileNotFoundError) as e:  # a bad config: checked before any work, so one line says it
        sys.exit(f"error: {e}")
    print(f"wrote {s['images']} images ({s['height']}x{s['width']}, {c.scheduler} {c.num_inference_steps} steps, "
          f"CFG {c.guidance_scale}) to {_WORKDIR.value} in {s['seconds']:.1f} s "
          f"({s['images'] / s['seconds']:.2f} img/s incl. compile)")


if __name__ == "__main__":
    app.run(main)
