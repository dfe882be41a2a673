"""The edit study's report, from the batches' files: edits.csv (a row per edit and run), results.csv
(`report.COLUMNS`: model = the run, layer = the edited layers, step = the first edited step; the mean over edits),
summary.json (means with 95% bootstrap intervals, paired differences between runs, and the issue's success checks),
grid and bar figures; and the headline lines a launcher prints.

Intervals resample images, not edits: the edits of one image share its seed and prompt, so they are not
independent (a clustered bootstrap, `metrics.mean_ci(groups=)`). Runs that share seeds are compared paired: the
per-edit differences, bootstrapped the same way, rather than two intervals side by side."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe import io
from jaxprobe.probing import metrics, report
from jaxprobe.scene import edit_figures, edit_metrics
from jaxprobe.scene.edit_checks import EditSetup
from jaxprobe.scene.layers import short_layer_name

INTERVALS = "95% percentile bootstrap, clustered by image (an image's edits are resampled together)"
PAIRED = "paired: per-edit differences between runs with the same seeds and prompts, clustered by image"

# The success bar on the toy model (transfer, its interval, the paired IoU gain, objects kept, the random
# control): (run, metric, statistic, comparison, value).
GOALS = (("edited", "transfer", "mean", ">=", 0.5), ("edited", "transfer", "ci_low", ">=", 0.3),
         ("edited", "delta_iou", "ci_low", ">", 0.0), ("edited", "found", "mean", ">=", 0.9),
         ("random", "transfer", "ci_contains", "contains", 0.0))


def batch_path(workdir: Path, batch: int) -> Path:
    """Where one batch's scores go, written before the next batch starts (a rerun resumes at the first missing)."""
    return workdir / "batches" / f"{batch:05d}.npz"


def image_path(run: str, k: int) -> str:
    """Edit k's image of `run`, relative to the workdir: one directory per run, named after it."""
    return f"{run}/{k}.png"


def load_scores(workdir: Path, num_batches: int) -> dict[str, np.ndarray]:
    """Every batch's arrays, concatenated over edits."""
    parts = []
    for b in range(num_batches):
        with np.load(batch_path(workdir, b), allow_pickle=False) as f:
            parts.append({k: f[k] for k in f.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts and parts[0] else {}


def stats(values, images) -> dict | None:
    """{'mean', 'ci95', 'n', 'images'} of per-edit values [N] where finite, the interval clustered by `images`
    [N] (each edit's image); None if no value is finite."""
    values, images = np.asarray(values, np.float64), np.asarray(images)
    ok = np.isfinite(values)
    if not ok.any():
        return None
    mean, lo, hi = metrics.mean_ci(values[ok], groups=images[ok])
    return {"mean": float(mean), "ci95": [float(lo), float(hi)], "n": int(ok.sum()),
            "images": int(len(np.unique(images[ok])))}


def summarize(scores: dict[str, np.ndarray], runs, images) -> dict:
    """{run: {metric: stats}}: means over the edits where the metric is defined (a centroid needs an object in
    both images), with 95% intervals clustered by image (`images`: each edit's image [N])."""
    return {run: {m: s for m in edit_metrics.METRICS if (s := stats(scores[f"{run}|{m}"], images))}
            for run in runs}


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], run: str, images, *,
           other_run: str | None = None) -> dict:
    """{metric: stats} of the per-edit differences a's `run` - b's `other_run` (default: the same run), over the
    edits where both are defined: the comparison of two runs with the same seeds, prompts and shifts."""
    other_run = other_run or run
    return {m: s for m in edit_metrics.METRICS
            if (s := stats(a[f"{run}|{m}"] - b[f"{other_run}|{m}"], images))}


def goals(summary: dict) -> list[dict]:
    """Each success check of `GOALS` with its measured value and whether it passes (None: not measured)."""
    out = []
    for run, metric, stat, op, bar in GOALS:
        s = summary.get(run, {}).get(metric)
        value = passed = None
        if s:
            lo, hi = s["ci95"]
            value = {"mean": s["mean"], "ci_low": lo, "ci_contains": [lo, hi]}[stat]
            passed = {">=": lambda: value >= bar, ">": lambda: value > bar,
                      "contains": lambda: lo <= bar <= hi}[op]()
        out.append({"run": run, "metric": metric, "statistic": stat, "goal": f"{op} {bar}", "value": value,
                    "passed": passed})
    return out


def write_report(c, workdir: Path, setup: EditSetup, edits: list[dict], num_batches: int) -> dict:
    """edits.csv, results.csv, summary.json and figures/ from the batches' files."""
    scores = load_scores(workdir, num_batches)
    runs = ("no_edit", "edited") + tuple(c.controls)
    layers = "+".join(short_layer_name(l) for l in setup.layers)
    summary = {"config": c.to_dict(), "layers": list(setup.layers), "steps": list(setup.steps), "edits": len(edits)}
    rows = []
    for e in edits:
        for run in runs:
            row = {**{k: e[k] for k in ("k", "prompt", "seed", "dx", "dy")}, "run": run,
                   "image": image_path(run, e["k"]), "layers": layers, "steps": " ".join(map(str, setup.steps))}
            row.update({m: float(scores[f"{run}|{m}"][e["k"]]) for m in edit_metrics.METRICS if scores})
            rows.append(row)
    io.write_csv(workdir / "edits.csv", rows, list(rows[0]))
    if scores:
        of_image = np.asarray([e["image"] for e in edits])  # the unit the intervals resample
        summary.update(intervals=INTERVALS, runs=summarize(scores, runs, of_image), paired_intervals=PAIRED,
                       paired={f"{a} - {b}": paired(scores, scores, a, of_image, other_run=b) for a, b in
                               [("edited", run) for run in runs if run != "edited"]
                               + [(run, "no_edit") for run in c.controls]})
        summary["goals"] = goals(summary["runs"])
        report.write_results_csv(workdir / "results.csv", [
            {"model": run, "task": c.task, "layer": layers, "step": setup.steps[0], "split": "test", "metric": m,
             "value": s["mean"]} for run, by_metric in summary["runs"].items() for m, s in by_metric.items()])
        edit_figures.runs_figure(workdir / "figures" / "runs.png", summary["runs"], title=f"{c.task} edit of "
                                 f"{len(setup.layers)} layers at steps {list(setup.steps)}, {len(edits)} edits of "
                                 f"{len(np.unique(of_image))} images; 95% intervals clustered by image")
        n = min(8, len(edits))
        images = {run: np.stack([io.read_png(workdir / image_path(run, k)) for k in range(n)])
                  for run in ("no_edit", "edited")}
        edit_figures.edit_grid(workdir / "figures" / "edits.png", images["no_edit"], scores["target"][:n],
                               images["edited"], scores["mask|no_edit"][:n], scores["mask|edited"][:n],
                               titles=[f"k={e['k']} dx={e['dx']} dy={e['dy']}" for e in edits[:n]])
    io.write_json(workdir / "summary.json", summary)
    return summary


def headline(summary: dict, *, with_goals: bool = True) -> list[str]:
    """One line per run: transfer and paired IoU gain with intervals, objects found and colours kept; the paired
    differences of the edit from each other run; then the success checks of `GOALS` (`with_goals`)."""
    lines = []
    if summary.get("runs"):
        lines.append(f"intervals: {summary['intervals']}; {summary['edits']} edits")
    for run, s in summary.get("runs", {}).items():
        parts = [_interval(m, s[m]) for m in ("transfer", "transfer_clipped", "delta_iou") if m in s]
        parts += [f"{m} {s[m]['mean']:.0%}" for m in ("found", "colour", "vacated") if m in s]
        if "background_change" in s:
            parts.append(f"background change {s['background_change']['mean']:.3f}")
        lines.append(f"{run:9s} " + "; ".join(parts))
    for name, s in summary.get("paired", {}).items():
        lines.append(f"paired {name}: " + "; ".join(_interval(m, s[m]) for m in ("transfer", "delta_iou", "colour",
                                                                                "background_change") if m in s))
    for g in summary.get("goals", ()) if with_goals else ():
        value = round(g["value"], 3) if isinstance(g["value"], float) else g["value"]
        verdict = "not measured" if g["passed"] is None else "met" if g["passed"] else "NOT MET"
        lines.append(f"goal: {g['run']} {g['metric']} {g['statistic']} {g['goal']}: {value}, {verdict}")
    return lines


def _interval(metric: str, s: dict) -> str:
    return f"{metric} {s['mean']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"
