r"""Text-to-image sampling from a diffusers-format Stable Diffusion directory; writes PNGs + an index; resumable
(rerun the same command after a kill: the images already written are kept).

  python launch/sample.py --config=configs/sample/toy.py --config.prompts="a red sphere|a blue cube" \
      --workdir=runs/samples
"""
from absl import flags

from jaxprobe import cli, mesh
from jaxprobe.diffusion import generate

_CONFIG = cli.config_flag("configs/sample/toy.py", "sampling config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/samples", "where PNGs and samples.json go")


def main(argv):
    del argv
    c = _CONFIG.value
    with cli.on_mesh(c):
        s = generate.generate(c, _WORKDIR.value)
    if not mesh.is_main():  # process 0 of a multi-host run reports
        return
    print(f"{s['images']} images ({s['height']}x{s['width']}, {c.scheduler} {c.num_inference_steps} steps, "
          f"CFG {c.guidance_scale}) in {_WORKDIR.value}; this run sampled {s['sampled']} in {s['seconds']:.1f} s "
          f"({s['sampled'] / s['seconds']:.2f} img/s incl. compile)")


if __name__ == "__main__":
    cli.run(main)
