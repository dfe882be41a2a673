r"""Probe every layer x step of a diffusion model for salient objects and depth, with baselines; resumable.

  python launch/probe.py --config=configs/scene/toy_probe.py --workdir=runs/toy_probe

Writes results.csv (model,task,layer,step,split,metric,value), summary.json and figures/ to --workdir. A killed
run resumes when the same command is run again.
"""
from pathlib import Path

from absl import flags

from jaxprobe import cli
from jaxprobe.scene import sweep

_CONFIG = cli.config_flag("configs/scene/toy_probe.py", "probe sweep config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/toy_probe", "activations, checkpoints, results and figures")


def main(argv):
    del argv
    c = _CONFIG.value
    with cli.on_mesh(c):
        summary = sweep.run(c, _WORKDIR.value)
    if not summary:  # not process 0 of a multi-host run: that one reports
        return
    for line in sweep.headline(summary):
        print(line)
    print(f"results: {Path(_WORKDIR.value) / 'results.csv'}, figures: {Path(_WORKDIR.value) / 'figures'}")


if __name__ == "__main__":
    cli.run(main)
