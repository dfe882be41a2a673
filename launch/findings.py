r"""The findings table: each finding of the paper (arXiv 2306.05720) checked on finished probe sweeps, one column
per sweep, with a verdict across them (`jaxprobe.scene.findings`).

  python launch/findings.py --workdirs=runs/toy_probe,runs/toy_probe_seed1 --names=shipped,seed1 --out=runs/findings

Writes findings.json (every number, per finding and sweep) and findings.md (the table) to --out. Reads only the
workdirs (summary.json, scores/), so it takes seconds and changes nothing there.
"""
from pathlib import Path

from absl import flags

from jaxprobe import cli
from jaxprobe.scene import findings

_WORKDIRS = flags.DEFINE_list("workdirs", None, "finished sweep workdirs (launch/probe.py), comma-separated",
                              required=True)
_NAMES = flags.DEFINE_list("names", None, "a column name per workdir (default: the workdirs' folder names)")
_OUT = flags.DEFINE_string("out", "runs/findings", "folder for findings.json and findings.md")


def main(argv):
    del argv
    table = findings.write(_OUT.value, _WORKDIRS.value, _NAMES.value)
    for row in table["findings"]:
        print(f"{row['finding']}: {row['verdict']}")
    print(f"table: {Path(_OUT.value) / 'findings.md'}, numbers: {Path(_OUT.value) / 'findings.json'}")


if __name__ == "__main__":
    cli.run(main)
