"""The paper's findings (arXiv 2306.05720) checked on finished scene sweeps: per sweep and finding, the numbers, a
sentence and whether the finding holds; across sweeps, a verdict. One model can not carry a verdict (two toy LDMs
of one recipe disagree), so the table is built from several sweeps' workdirs, not from one run's summary.

Reads only a finished workdir: summary.json for its config and the cells it chose (on validation), scores/ for the
per-image values every paired difference is bootstrapped from (`report.paired_gap`: images resampled jointly, which is
the bootstrap clustered by image, since a sweep scores each image once; a baseline without the cell's layer is
taken at its own chosen layer there). Every value is the test split's, every cell is
chosen on the split that chose the summary's (`selected_on`); a paired difference ('vs_...') is signed so that > 0
means the first of the two is better (for RMSE: the other's minus its). Findings over "both tasks" judge `JUDGED`,
the paper's two; inverse depth is its own row.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable, Sequence

from jaxprobe import io
from jaxprobe.probing import report
from jaxprobe.scene.fit_stage import load_scores, scores_path
from jaxprobe.scene.layers import short_layer_name
from jaxprobe.scene.reference_stage import PRIOR_LAYER
from jaxprobe.scene.tasks import BY_NAME

REFERENCE = "trained"
JUDGED = ("saliency", "depth")  # the tasks a finding "on both tasks" is judged on
EARLY_STEPS = (0, 1, 2)  # "decodable from the first steps"
VAE_STEPS = (0, 1, 2, 3, 4)  # the early steps the UNet is compared with the VAE on x_t at (and the last step)
MID = "mid"  # the UNet bottleneck's short name (`jaxprobe.scene.layers`)
NOT_IN_SWEEP = "not in this sweep"


@dataclasses.dataclass(eq=False)  # hashed by identity, for the score cache
class Sweep:
    """One finished sweep workdir: its config and summary (summary.json), its per-image scores read on demand."""

    workdir: Path
    config: dict
    summary: dict

    @classmethod
    def read(cls, workdir) -> "Sweep":
        path = Path(workdir) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {workdir} is not a finished sweep (run launch/probe.py "
                                    "to the end)")
        data = json.loads(path.read_text())
        return cls(Path(workdir), data["config"], data["summary"])

    def has(self, *, models: Sequence[str] = (), tasks: Sequence[str] = ()) -> bool:
        return set(models) <= set(self.config["models"]) and set(tasks) <= set(self.config["tasks"])

    def judged(self) -> list[str]:
        return [t for t in JUDGED if t in self.config["tasks"]]

    @functools.cache
    def scores(self, model: str, task: str, split: str) -> dict:
        """{(layer, step): {metric: per-image [N]}} as the fit stage saved them (`fit_stage.save_scores`)."""
        path = scores_path(self.workdir, model, task, split)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the sweep in {self.workdir} did not finish its fit stage")
        return load_scores(path)

    def cells(self, model: str, task: str, split: str = "test") -> dict:
        """{(layer, step): per-image [N]} of the task's headline metric."""
        return {c: m[BY_NAME[task].headline] for c, m in self.scores(model, task, split).items()}

    def chooser(self, model: str, task: str) -> dict:
        """The cells of the split the summary chose its cells on (val; test for a sweep without val images)."""
        return self.cells(model, task, self.summary[REFERENCE][task]["selected_on"])

    def best(self, task: str) -> tuple[str, int]:
        """The trained model's chosen cell of `task`."""
        b = self.summary[REFERENCE][task]["best"]
        return b["layer"], int(b["step"])

    def layer_order(self, task: str) -> list[str]:
        return [p["layer"] for p in self.summary[REFERENCE][task]["per_layer"]]

    def steps(self, task: str) -> list[int]:
        return sorted({s for _, s in self.cells(REFERENCE, task)})

    def best_at(self, task: str, step: int) -> tuple[str, int]:
        """The trained model's best layer at `step`, chosen as the summary chooses (`report.best_cell`)."""
        at_step = {c: {BY_NAME[task].headline: v} for c, v in self.chooser(REFERENCE, task).items() if c[1] == step}
        return report.best_cell(at_step, BY_NAME[task].headline, self.layer_order(task))

    def mean(self, model: str, task: str, cell: tuple[str, int], metric: str | None = None) -> float:
        return float(self.scores(model, task, "test")[cell][metric or BY_NAME[task].headline].mean())

    def versus(self, task: str, cell: tuple[str, int], baseline: str) -> dict:
        """The trained probe at `cell` against `baseline` on the same test images (`report.paired_gap`): > 0 means the
        probe is better; a baseline without the cell's layer (the prior, the VAE) at its chosen layer there."""
        return report.paired_gap(self.cells(REFERENCE, task), self.cells(baseline, task),
                                 self.chooser(baseline, task), cell, BY_NAME[task].headline, baseline, REFERENCE)

    def layer_versus(self, task: str, layer: str, other: str, step: int) -> dict:
        """`layer` against `other` of the trained model at `step`, paired over test images (> 0: `layer` better)."""
        cells = self.cells(REFERENCE, task)
        return report.paired_gap(cells, {(other, step): cells[other, step]}, None, (layer, step),
                                 BY_NAME[task].headline, other, layer)


@dataclasses.dataclass(frozen=True)
class Check:
    """One finding on one sweep: holds (None: the sweep lacks what it needs), a sentence, the numbers behind it."""

    holds: bool | None
    text: str
    numbers: dict = dataclasses.field(default_factory=dict)


ABSENT = Check(None, NOT_IN_SWEEP)


def _clear(d: dict) -> bool:
    """A paired difference whose 95% interval lies above 0 (the first of the two is clearly better)."""
    return d["ci95"][0] > 0


def _ci(d: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(d['mean'])} [{f.format(d['ci95'][0])}, {f.format(d['ci95'][1])}]"


def _pair(d: dict) -> dict:
    return {"mean": d["mean"], "ci95": d["ci95"]}


def salient(sw: Sweep) -> Check:
    """The best saliency cell's Dice beats the prior's: its interval's low end above the prior's mean."""
    if not sw.has(models=[REFERENCE], tasks=["saliency"]):
        return ABSENT
    cell = layer, step = sw.best("saliency")
    best = sw.summary[REFERENCE]["saliency"]["best"]
    prior = (PRIOR_LAYER, step)
    n = {"layer": short_layer_name(layer), "step": step, "dice": _pair(best),
         "ap": sw.mean(REFERENCE, "saliency", cell, "ap"), "prior_dice": sw.mean("prior", "saliency", prior),
         "prior_ap": sw.mean("prior", "saliency", prior, "ap"), "ceiling": sw.mean("ceiling", "saliency", cell)}
    text = (f"Dice {_ci(best)} ({n['layer']}, step {step}), AP {n['ap']:.3f}; prior {n['prior_dice']:.3f} "
            f"(AP {n['prior_ap']:.3f})")
    if sw.has(models=["randomized"]):
        n["randomized"] = sw.summary["randomized"]["saliency"]["best"]["mean"]
        text += f", random weights {n['randomized']:.3f}"
    text += f"; ceiling at that grid {n['ceiling']:.3f}"
    return Check(best["ci95"][0] > n["prior_dice"], text, n)


def beyond_prior(task: str) -> Callable[[Sweep], Check]:
    """The task's best cell against the prior (mean label map), paired: holds if the interval is above 0."""
    def check(sw: Sweep) -> Check:
        if not sw.has(models=[REFERENCE], tasks=[task]):
            return ABSENT
        layer, step = cell = sw.best(task)
        best = sw.summary[REFERENCE][task]["best"]
        gap = sw.versus(task, cell, "prior")
        n = {"layer": short_layer_name(layer), "step": step, "probe": _pair(best), "prior": gap["baseline_mean"],
             "vs_prior": _pair(gap)}
        text = (f"{_ci(best)} ({n['layer']}, step {step}) vs the prior {gap['baseline_mean']:.3f}: "
                f"{_ci(gap, signed=True)}")
        return Check(_clear(gap), text, n)
    check.__doc__ = f"{task}: {beyond_prior.__doc__}"
    return check


def early(sw: Sweep) -> Check:
    """Steps 0-2 (those the sweep captured): the trained model's best layer per step (chosen as the summary
    chooses) against the prior, on each judged task; the first step it beats the prior in mean, and clearly (its
    paired interval above 0); `how_early`. Holds if every early step clearly beats the prior on every judged
    task."""
    tasks = sw.judged()
    if not sw.has(models=[REFERENCE]) or not tasks:
        return ABSENT
    steps = [s for s in EARLY_STEPS if s in sw.steps(tasks[0])]
    if not steps:
        return ABSENT
    holds, parts, n = True, [], {}
    for task in tasks:
        gaps = {s: sw.versus(task, sw.best_at(task, s), "prior") for s in sw.steps(task)}
        better = next((s for s, g in gaps.items() if g["mean"] > 0), None)
        clearly = next((s for s, g in gaps.items() if _clear(g)), None)
        probe = [sw.mean(REFERENCE, task, (gaps[s]["layer"], s)) for s in steps]
        prior = gaps[steps[0]]["baseline_mean"]
        n[task] = {"early": {s: {"layer": short_layer_name(gaps[s]["layer"]), "probe": v, "vs_prior": _pair(gaps[s])}
                             for s, v in zip(steps, probe)},
                   "prior": prior, "first_better_than_prior": better, "first_clearly_beyond_prior": clearly,
                   "how_early": sw.summary[REFERENCE][task]["how_early"]["step"]}
        holds &= all(_clear(gaps[s]) for s in steps)
        parts.append(f"{task}: steps {steps[0]}-{steps[-1]} {min(probe):.3f}-{max(probe):.3f} "
                     f"{BY_NAME[task].headline} (prior {prior:.3f}); better than the prior {_from(better)}, "
                     f"clearly {_from(clearly)}; 90% of the final quality at step {n[task]['how_early']}")
    return Check(holds, "; ".join(parts), n)


def _from(step: int | None) -> str:
    return "at no step" if step is None else f"from step {step}"


def beats_randomized(sw: Sweep) -> Check:
    """Trained vs randomized weights at the trained model's chosen cell, paired, on each judged task."""
    tasks = sw.judged()
    if not sw.has(models=[REFERENCE, "randomized"]) or not tasks:
        return ABSENT
    gaps = {t: sw.versus(t, sw.best(t), "randomized") for t in tasks}
    text = ", ".join(f"{g['mean']:+.3f} {BY_NAME[t].headline} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
                     for t, g in gaps.items()) + " (paired, chosen cell)"
    return Check(all(map(_clear, gaps.values())), text, {t: {"vs_randomized": _pair(g)} for t, g in gaps.items()})


def beats_vae(sw: Sweep) -> Check:
    """The UNet's best layer per step against the VAE decoder on x_t (`vae`) at steps 0-4 and the last step,
    paired. Holds if the UNet is clearly better at every one of steps 0-4 on every judged task."""
    tasks = sw.judged()
    if not sw.has(models=[REFERENCE, "vae"]) or not tasks:
        return ABSENT
    holds, parts, n = True, [], {}
    for task in tasks:
        every = sw.steps(task)
        steps = [s for s in VAE_STEPS if s in every] + ([every[-1]] if every[-1] not in VAE_STEPS else [])
        gaps = {s: sw.versus(task, sw.best_at(task, s), "vae") for s in steps}
        n[task] = {s: {"unet": sw.mean(REFERENCE, task, (g["layer"], s)), "vae": g["baseline_mean"],
                       "vs_vae": _pair(g)} for s, g in gaps.items()}
        holds &= all(_clear(g) for s, g in gaps.items() if s in VAE_STEPS)
        parts.append(f"{task} ({BY_NAME[task].headline}): VAE {n[task][steps[0]]['vae']:.3f} at step {steps[0]}, "
                     f"{n[task][steps[-1]]['vae']:.3f} at step {steps[-1]}; UNet better by "
                     + ", ".join(f"{_ci(g, signed=True)} at {s}" for s, g in gaps.items()))
    return Check(holds, "; ".join(parts), n)


def bottleneck_dip(sw: Sweep) -> Check:
    """The mid block against its two neighbours in layer order (down2.a1 and up1.a0 for SD v1 and the toy) at each
    judged task's chosen step, paired. Holds if both neighbours are clearly better on every judged task."""
    tasks = sw.judged()
    if not sw.has(models=[REFERENCE]) or not tasks:
        return ABSENT
    holds, parts, n = True, [], {}
    for task in tasks:
        order = sw.layer_order(task)
        shorts = [short_layer_name(l) for l in order]
        if MID not in shorts or shorts.index(MID) in (0, len(order) - 1):
            return ABSENT
        i = shorts.index(MID)
        mid, step = order[i], sw.best(task)[1]
        gaps = {shorts[j]: sw.layer_versus(task, order[j], mid, step) for j in (i - 1, i + 1)}
        n[task] = {"step": step, "mid": sw.mean(REFERENCE, task, (mid, step)),
                   **{name: {"value": sw.mean(REFERENCE, task, (g["layer"], step)), "vs_mid": _pair(g)}
                      for name, g in gaps.items()}}
        holds &= all(map(_clear, gaps.values()))
        parts.append(f"{task} at step {step}: mid {n[task]['mid']:.3f}; " + ", ".join(
            f"{name} {n[task][name]['value']:.3f} ({_ci(g, signed=True)})" for name, g in gaps.items()))
    return Check(holds, "; ".join(parts) + " (+ = the neighbour better)", n)


def best_layers(sw: Sweep) -> Check:
    """Each task's chosen layer; holds if it is a decoder (up-block) layer on every judged task."""
    tasks = sw.judged()
    if not sw.has(models=[REFERENCE]) or not tasks:
        return ABSENT
    n = {t: {"layer": short_layer_name(sw.best(t)[0]), "step": sw.best(t)[1]} for t in sw.config["tasks"]}
    text = ", ".join(f"{t} {b['layer']} (step {b['step']})" for t, b in n.items())
    return Check(all(n[t]["layer"].startswith("up") for t in tasks), text, n)


# (row label, the paper's claim, check)
FINDINGS = (
    ("salient object decodable", "linear probes on SD v1 decode it (Dice ~0.85)", salient),
    ("depth decodable", "RMSE ~0.47; beyond the layout prior", beyond_prior("depth")),
    ("inverse depth decodable", "the paper's label (MiDaS inverse depth)", beyond_prior("inverse_depth")),
    ("early emergence", "both decodable from the first steps", early),
    ("trained >> randomized weights", "the representation is learned", beats_randomized),
    ("UNet vs VAE on x_t, early steps", "the LDM much better than the VAE early", beats_vae),
    ("bottleneck dip", "the bottleneck decodes worse than its neighbours", bottleneck_dip),
    ("best layers", "decoder self-attention best", best_layers),
)


def verdict(holds: Sequence[bool | None]) -> str:
    """'holds in all N' / 'holds in k of N' / 'contradicted in all N' over the sweeps that have the finding."""
    known = [h for h in holds if h is not None]
    if not known:
        return "in no sweep"
    k, total = sum(known), len(known)
    return f"holds in all {total}" if k == total else f"contradicted in all {total}" if k == 0 else \
        f"holds in {k} of {total}"


def findings(workdirs: Sequence, names: Sequence[str] | None = None) -> dict:
    """Every finding on every sweep: {'names', 'workdirs', 'findings': [{finding, claim, columns: {name: {holds,
    text, numbers}}, verdict}]}."""
    names = list(names) if names else [Path(w).name for w in workdirs]
    if len(names) != len(workdirs) or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, one per workdir ({len(workdirs)}); got {names}")
    sweeps = [Sweep.read(w) for w in workdirs]
    rows = []
    for label, claim, check in FINDINGS:
        got = [check(sw) for sw in sweeps]
        rows.append({"finding": label, "claim": claim, "verdict": verdict([c.holds for c in got]),
                     "columns": {name: dataclasses.asdict(c) for name, c in zip(names, got)}})
    return {"names": names, "workdirs": [str(w) for w in workdirs], "findings": rows}


def markdown(table: dict) -> str:
    """The findings as a markdown table: one row per finding, one column per sweep, then the verdict."""
    names = table["names"]
    lines = ["| finding | " + " | ".join(names) + " | verdict |", "| --- |" + " --- |" * (len(names) + 1)]
    for row in table["findings"]:
        cells = []
        for name in names:
            c = row["columns"][name]
            mark = "" if c["holds"] is None else ("**holds**: " if c["holds"] else "**does not hold**: ")
            cells.append(mark + c["text"])
        lines.append(f"| {row['finding']} | " + " | ".join(cells) + f" | {row['verdict']} |")
    return "\n".join(lines) + "\n"


def write(out, workdirs: Sequence, names: Sequence[str] | None = None) -> dict:
    """findings.json and findings.md in the folder `out`, atomically. -> the table."""
    table = findings(workdirs, names)
    io.write_json(Path(out) / "findings.json", table)
    io.write_text(Path(out) / "findings.md", markdown(table))
    return table
