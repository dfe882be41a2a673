r"""Move objects inside a diffusion model's samples by editing its activations against a sweep's saved probes, and
measure that they moved; resumable.

  python launch/intervene.py --config=configs/scene/toy_intervene.py --config.probes=runs/toy_probe \
      --workdir=runs/toy_intervene

Writes no_edit/<k>.png, edited/<k>.png (and null/, random/, opposite/), edits.csv, results.csv, summary.json and
figures/ to --workdir. A killed run resumes when the same command is run again. A config with an `ablation`
({name: {key: value}}, e.g. configs/scene/toy_intervene_ablation.py) runs each setting in --workdir/<name> and
writes ablation.csv and figures/ablation.png.
"""
from pathlib import Path

from absl import flags

from jaxprobe import cli
from jaxprobe.scene import edit_study

_CONFIG = cli.config_flag("configs/scene/toy_intervene.py", "intervention config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/toy_intervene", "images, scores and figures")


def main(argv):
    del argv
    with cli.on_mesh(_CONFIG.value):
        _main()


def _main():
    if _CONFIG.value.get("ablation"):
        if edit_study.ablate(_CONFIG.value, _WORKDIR.value):  # [] on processes but the first of a multi-host run
            print(f"ablation: {Path(_WORKDIR.value) / 'ablation.csv'}, {Path(_WORKDIR.value) / 'figures/ablation.png'}")
        return
    summary = edit_study.run(_CONFIG.value, _WORKDIR.value)
    if not summary:  # not process 0 of a multi-host run: that one reports
        return
    for line in edit_study.headline(summary):
        print(line)
    print(f"results: {Path(_WORKDIR.value) / 'results.csv'}, figures: {Path(_WORKDIR.value) / 'figures'}")


if __name__ == "__main__":
    cli.run(main)
