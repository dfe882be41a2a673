r"""Probe every module of a MobileNetV2 at every training checkpoint for CLIP-labelled concepts; resumable.

  python launch/concepts.py --config=configs/concepts/toy.py --workdir=runs/concepts_toy

Writes labels/ (sets.json, quality.csv, top_positives.png), per probe family <family>/results.csv
(model,task,layer,step,split,metric,value; model trained, shuffled or pixels, the raw-pixel baseline),
<family>/intervals.csv (the test rows with their 95 % bootstrap intervals) and <family>/figures/ (module x checkpoint
maps, per-module intervals at the last checkpoint), table.csv (module x family at the last checkpoint, with
intervals), label_grid/ (the 2x2 of label source x negatives, if config.label_grid) and summary.json. A killed run
resumes at its next checkpoint.
"""
from absl import flags

from jaxprobe import cli
from jaxprobe.concepts import sweep

_CONFIG = cli.config_flag("configs/concepts/toy.py", "concept sweep config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/concepts_toy", "labels, results and figures")


def main(argv):
    del argv
    with cli.on_mesh(_CONFIG.value):
        summary = sweep.run(_CONFIG.value, _WORKDIR.value)
    if not summary:  # not process 0 of a multi-host run: that one reports
        return
    for line in sweep.headline(summary):
        print(line)
    print(f"results and figures: {_WORKDIR.value}/<family>/")


if __name__ == "__main__":
    cli.run(main)
