r"""Train the shipped toy models on the toy world (resumable: rerun the same command after a kill).

  python launch/train.py --config=configs/toy/vae.py --workdir=runs/toy_vae   # -> runs/toy_vae/vae/
  python launch/train.py --config=configs/toy/ldm.py --workdir=runs/toy_ldm   # -> runs/toy_ldm/pipeline/

On a CPU the training loop runs data parallel over one XLA device per core (`train.host_device_flags`).
"""
from absl import flags

from jaxprobe import cli
from jaxprobe.toy import recipes

_CONFIG = cli.config_flag(None, "training config (configs/toy/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics.csv, sample grids and the export go here")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    for line in recipes.train(_CONFIG.value, _WORKDIR.value):  # first thing: it sets XLA's CPU device count
        print(line)


if __name__ == "__main__":
    cli.run(main)
