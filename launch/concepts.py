r"""Probe every module of a MobileNetV2 at every training checkpoint for CLIP-labelled concepts; resumable.

  python launch/concepts.py --config=configs/concepts/toy.py --workdir=runs/concepts_toy

Writes labels/ (sets.json, quality.csv, top_positives.png), per probe family <family>/results.csv
(model,task,layer,step,split,metric,value) and <family>/figures/<concept>.png (module x checkpoint maps),
table.csv (module x family at the last checkpoint) and summary.json. A killed run resumes at its next checkpoint.
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
