"""The concept sweep as one resumable job: pool -> scores -> sets -> per checkpoint: capture -> probes -> accuracy.

1. Pool and labels: the pool's images are scored per concept group (`scores`: CLIP zero-shot, or the ground truth
   as the control), and each concept gets its positives, negatives and 70/30 split (`sets`).
2. Per checkpoint of the probed MobileNetV2 (step 0 = the initialisation): ONE eval-mode pass over the images any
   set uses records every selected module (`hooks.apply`).
3. Probes: each family reads a module's map its own way (global average pool, or the flattened map), standardised
   with the train split's statistics. Image-level probes (one label per image): concepts x modules of equal input
   width (`probes.group_probes`) form one group, fit together by `fit.fit_group` (vmapped, jitted; the same shapes
   at every checkpoint, so it compiles once) and scored together by `probes.evaluate_group`; the shuffled-label
   control is the same group refit on permuted labels.
   Every test accuracy carries its 95 % bootstrap interval over the test images (`accuracy_rows`).
4. Baselines: the raw-pixel baseline (`pixel_rows`: the same probes on the images' mean RGB, once, since it cannot
   depend on a checkpoint) and, with config.label_grid, the 2x2 of label source x negatives at the last checkpoint
   (`label_grid`).
5. Report: per family `results.csv` (model trained / shuffled / pixels, task = concept, layer = module, step =
   checkpoint step) and `intervals.csv`, a what-where-when heatmap per concept, and the module x family table at the
   last checkpoint.

A finished checkpoint's rows are written to parts/ at once, so a killed run resumes at the next checkpoint.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jaxprobe import hooks, io, jobs, mesh, validate
from jaxprobe.concepts import figures, label_grid, pool, scores, sets
from jaxprobe.concepts.figures import PIXELS
from jaxprobe.models import load_mobilenet_v2, mobilenet_v2
from jaxprobe.probing import fit, metrics, probes, report
from jaxprobe.probing.tasks import Task
from jaxprobe.validate import check_choice

CONCEPT = Task("concept", "label", ("accuracy",), "accuracy")  # one binary label per image: has the concept?
# family -> (probe kind, how a module's [h, w, C] map becomes the probe's input)
FAMILIES = {"linear_gap": ("affine", "gap"), "non_linear_gap": ("mlp", "gap"), "non_linear_non_gap": ("mlp", "flat")}
MODELS = ("trained", "shuffled")
PART_COLUMNS = ("family", *report.COLUMNS, "ci_low", "ci_high")
LABEL_SOURCES = ("clip", "truth")
_STEP = re.compile(r"(\d+)$")
# A resume may change only what does not change any number already written.
MAY_CHANGE_ON_RESUME = ("capture_batch_size", "mesh")


def find_checkpoints(directory) -> list[tuple[int, Path]]:
    """[(training step, file)] of the `*.safetensors` state dicts in `directory`, by step; the step is the number
    the file name ends with (`step_000120.safetensors`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    found = {}
    for f in sorted(directory.glob("*.safetensors")):
        m = _STEP.search(f.stem)
        if m is None:
            raise ValueError(f"checkpoint {f.name} in {directory}: its name does not end with its training step "
                             "(e.g. step_000120.safetensors)")
        step = int(m.group(1))
        if step in found:
            raise ValueError(f"checkpoints {found[step].name} and {f.name} both claim step {step}")
        found[step] = f
    if not found:
        raise FileNotFoundError(f"no *.safetensors checkpoints in {directory}")
    return sorted(found.items())


def load_checkpoints(c) -> tuple[mobilenet_v2.MobileNetV2, list[tuple[int, dict]]]:
    """The checkpoints of config.checkpoints_dir (those of config.checkpoint_steps; all if empty), each checked
    against config.model before anything runs."""
    found = find_checkpoints(c.checkpoints_dir)
    if c.checkpoint_steps:
        missing = sorted(set(c.checkpoint_steps) - {s for s, _ in found})
        if missing:
            raise ValueError(f"config.checkpoint_steps {missing} are not in {c.checkpoints_dir}; it holds steps "
                             f"{[s for s, _ in found]}")
        found = [(s, p) for s, p in found if s in set(c.checkpoint_steps)]
    module, out = None, []
    for step, path in found:
        try:
            m, variables = load_mobilenet_v2(path, num_classes=c.model.num_classes, width_mult=c.model.width_mult)
        except ValueError as e:
            raise ValueError(f"checkpoint {path} does not fit config.model (width_mult={c.model.width_mult}, "
                             f"num_classes={c.model.num_classes}): {e}") from e
        module = module or m
        out.append((step, variables))
    return module, out


def check_config(c) -> None:
    check_choice("config.labels", c.labels, LABEL_SOURCES)
    check_choice("config.negatives", c.negatives, sets.NEGATIVES)
    for f in c.families:
        check_choice("config.families entry", f, FAMILIES)
    for m in c.models:
        check_choice("config.models entry", m, MODELS)
    if "trained" not in c.models:
        raise ValueError("config.models must include 'trained'")
    validate.positive_finite(c, "probe.lr")
    validate.at_least(c, {f"probe.{key}": 1 for key in ("epochs", "non_gap_epochs", "batch_size", "hidden")})
    if not isinstance(c.label_grid, bool):
        raise ValueError(f"config.label_grid must be True or False, got {c.label_grid!r}")
    if c.labels == "clip" or c.label_grid:
        validate.existing_path(c, "clip_dir", "a transformers CLIPModel directory with its tokenizer files",
                               ("config.json",))


def capture(module, variables, images: np.ndarray, layers, batch_size: int) -> dict[str, np.ndarray]:
    """{module path: [P, h, w, C] float32} for uint8 images [P, R, R, 3], eval mode, in batches."""
    run, variables = _capture_fn(module, tuple(layers)), mesh.replicate(variables)
    parts = []
    for i in range(0, len(images), batch_size):  # on a mesh, each batch is split over its data axis
        batch = images[i:i + batch_size]
        out = run(variables, mesh.shard(mesh.pad_rows(batch)))
        parts.append({k: mesh.gather(v)[:len(batch)] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in layers}


@functools.lru_cache(maxsize=4)  # one compiled capture per (model, layers), reused at every checkpoint
def _capture_fn(module, layers):
    @jax.jit
    def run(variables, x):
        return hooks.apply(module, variables, mobilenet_v2.preprocess(x), record=layers, train=False)[1]
    return run


def features(acts: np.ndarray, how: str) -> np.ndarray:
    """A module's maps [P, h, w, C] -> probe inputs [P, D]: the global average pool (D = C) or the flattened map."""
    return acts.mean(axis=(1, 2)) if how == "gap" else acts.reshape(len(acts), -1)


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits z-scored per feature with the train split's statistics (constant features stay 0)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def shuffled_sets(concept_sets, seed: int) -> list[sets.ConceptSet]:
    """The selectivity control: each set's labels permuted over its train and test images together."""
    out = []
    for k, cs in enumerate(concept_sets):
        rng = np.random.default_rng([seed, k, 1])
        y = rng.permutation(np.concatenate([cs.train_y, cs.test_y]))
        out.append(sets.ConceptSet(cs.concept, cs.group, cs.positives, cs.negatives, cs.train, y[:len(cs.train)],
                                   cs.test, y[len(cs.train):]))
    return out


def epochs_of(c, family: str) -> int:
    """The flattened-map MLPs take ~90 % of a sweep's time, and with 210 images and thousands of inputs they fit
    their train split in fewer epochs: they get config.probe.non_gap_epochs."""
    return c.probe.non_gap_epochs if FAMILIES[family][1] == "flat" else c.probe.epochs


def probe_checkpoint(acts: dict[str, np.ndarray], concept_sets, c, *, step: int) -> list[dict]:
    """Every family x module x concept probe at one checkpoint (+ the shuffled control) -> long rows with a
    `family` field (and, on the test split, the accuracy's 95 % interval). `acts` are indexed by pool position, as
    the sets' indices are."""
    controls = {"trained": concept_sets}
    if "shuffled" in c.models:
        controls["shuffled"] = shuffled_sets(concept_sets, c.seed)
    return [{**r, "step": step} for r in probe_rows(acts, controls, c)]


def mean_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 images [P, R, R, 3] -> their globally average-pooled pixels [P, 1, 1, 3] (a 1x1 'map' of the input)."""
    return np.asarray(images, np.float32).mean(axis=(1, 2), keepdims=True)


def pixel_rows(images: np.ndarray, concept_sets, c) -> list[dict]:
    """The raw-pixel baseline: each family's probe (the same recipe and sets) on the images' mean RGB, model and
    layer `PIXELS`, no `step`: it reads the input only, so it is the same at every checkpoint."""
    return probe_rows({PIXELS: mean_rgb(images)}, {PIXELS: concept_sets}, c)


def probe_rows(acts: dict[str, np.ndarray], controls: dict, c) -> list[dict]:
    """Every family x module x concept probe, fit and scored once per {model: sets} of `controls` (one label set
    per concept, on the same images) -> rows without a step."""
    rows = []
    concept_sets = next(iter(controls.values()))
    for family in c.families:
        kind, how = FAMILIES[family]
        feats = {layer: features(a, how)[:, None] for layer, a in acts.items()}  # [P, 1, D]: one probe per module
        for group, x in probes.group_probes(feats):  # modules of equal input width D
            layers = [layer for layer, _ in group]
            ids = [(cs.concept, layer) for cs in concept_sets for layer in layers]
            x = np.asarray(x)
            xs = [standardise(x[cs.train, i], x[cs.test, i]) for cs in concept_sets for i in range(len(layers))]
            x_train = np.stack([a for a, _ in xs], 1)  # [n, G, D], G = concepts x modules
            x_test = np.stack([b for _, b in xs], 1)
            for model, model_sets in controls.items():  # the control: same images, permuted labels
                y_train = np.stack([cs.train_y for cs in model_sets for _ in layers], 1)  # [n, G]
                y_test = np.stack([cs.test_y for cs in model_sets for _ in layers], 1)
                params = fit.fit_group(x_train, y_train, CONCEPT, kind=kind, epochs=epochs_of(c, family),
                                       batch_size=c.probe.batch_size, lr=c.probe.lr, seed=c.probe.seed,
                                       hidden=c.probe.hidden)
                for split, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
                    correct = probes.evaluate_group(params, xs, ys, CONCEPT)["accuracy"]  # [G, N] per image
                    rows += [{"family": family, "model": model, "task": concept, "layer": layer, **r}
                             for (concept, layer), r in zip(ids, accuracy_rows(correct, split))]
    return rows


def accuracy_rows(correct: np.ndarray, split: str) -> list[dict]:
    """Per probe, its per-image correctness [G, N] -> {split, metric, value}: the accuracy, and on the test split
    its 95 % percentile-bootstrap interval over the test images (`metrics.mean_ci`) as ci_low / ci_high (the train
    split is no estimate of anything, so it gets none)."""
    acc = correct.mean(axis=1)
    rows = [{"split": split, "metric": "accuracy", "value": float(a)} for a in acc]
    if split == "test":
        _, lo, hi = metrics.mean_ci(correct)
        for r, a, b in zip(rows, lo, hi):
            r.update(ci_low=float(a), ci_high=float(b))
    return rows


def run(c, workdir) -> dict:
    """The whole sweep of config `c` into `workdir` (resumable); returns headline numbers for the launcher.
    Multi-host (`--distributed`): every process captures and fits on the global mesh; process 0 writes (and returns
    the headline numbers; the others return {})."""
    check_config(c)
    jobs.check_workdir(workdir)
    data = pool.load_pool(c)
    groups = scores.check_groups(c.groups.to_dict() if hasattr(c.groups, "to_dict") else c.groups, data.known)
    sources = list(dict.fromkeys([c.labels, *(LABEL_SOURCES if c.label_grid else ())]))
    if "truth" in sources and data.truth is None:
        needs = "config.labels='truth'" if c.labels == "truth" else "config.label_grid=True"
        raise ValueError(f"{needs} needs exact labels, which data source {c.data.source!r} lacks")
    labeller = _load_clip(c.clip_dir) if "clip" in sources else None
    module, checkpoints = load_checkpoints(c)
    layers = hooks.select_layers(module, list(c.layers))
    score = {s: scores.truth_scores(data.truth, groups) if s == "truth" else
             scores.clip_scores(*labeller, data.images, groups, template=c.template) for s in sources}
    concept_sets = sets.make_sets(score[c.labels], groups, num_positive=c.num_positive,
                                  num_negative=c.num_negative, test_fraction=c.test_fraction, seed=c.seed,
                                  negatives=c.negatives)
    cells = label_grid.cell_sets(score, groups, c) if c.label_grid else {}
    # claimed only now: every check above runs before a workdir exists
    workdir = jobs.claim(workdir, c.to_dict(), kind="concept sweep", may_change=MAY_CHANGE_ON_RESUME)
    quality = sets.label_quality(concept_sets, data.truth) if data.truth is not None else []
    if mesh.is_main():
        _write_labels(workdir / "labels", concept_sets, quality, data.images)

    images, (local,) = _captured(data.images, [concept_sets])
    parts = workdir / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    todo = [(s, v) for s, v in checkpoints if not (parts / f"step_{s:07d}.csv").exists()]
    if not (parts / "pixels.csv").exists():
        _write_part(parts / "pixels.csv", pixel_rows(images, local, c))
    bar = tqdm(total=len(todo), desc="checkpoints", unit="ckpt", dynamic_ncols=True, disable=not mesh.is_main())
    for step, variables in todo:
        bar.set_postfix(step=step)
        acts = capture(module, variables, images, layers, c.capture_batch_size)
        _write_part(parts / f"step_{step:07d}.csv", probe_checkpoint(acts, local, c, step=step))
        bar.update(1)
    bar.close()
    grid = _label_grid(workdir / "label_grid", cells, data.images, module, checkpoints[-1][1], layers, c)
    summary = {}
    if mesh.is_main():
        pixels = io.read_csv(parts / "pixels.csv")
        rows = [r for s, _ in checkpoints
                for r in io.read_csv(parts / f"step_{s:07d}.csv") + [{**p, "step": s} for p in pixels]]
        summary = figures.write_report(workdir, rows, c.families, layers, quality,
                                       label_grid={"step": checkpoints[-1][0], "best": grid} if grid else None)
    mesh.barrier("report")
    return summary


def _captured(images: np.ndarray, set_lists) -> tuple[np.ndarray, list]:
    """Only the images some set uses (they are what the probed model runs on), and each list of sets re-indexed
    into them."""
    used = sets.pool_indices([cs for s in set_lists for cs in s])
    position = np.full(len(images), -1)
    position[used] = np.arange(len(used))
    return images[used], [sets.reindex(s, position) for s in set_lists]


def _write_part(path: Path, rows: list[dict]) -> None:
    if mesh.is_main():
        io.write_csv(path, rows, list(PART_COLUMNS))


def _label_grid(directory: Path, cells: dict, pool_images, module, variables, layers, c) -> list[dict]:
    """The 2x2 of label source x negatives (`label_grid`) at one checkpoint, with the raw-pixel baseline of each
    cell -> its best rows (read back if a resumed run already wrote them; [] without cells)."""
    if not cells:
        return []
    if (directory / "best.csv").exists():
        return [{k: v if k in ("cell", "family", "concept", "module") else float(v) for k, v in r.items()}
                for r in io.read_csv(directory / "best.csv")]
    images, local = _captured(pool_images, list(cells.values()))
    acts = capture(module, variables, images, layers, c.capture_batch_size)
    rows = []
    for cell, cell_sets in zip(cells, local):
        rows += label_grid.grid_rows(cell, probe_rows(acts, {"trained": cell_sets}, c))
        rows += label_grid.grid_rows(cell, pixel_rows(images, cell_sets, c))
    if not mesh.is_main():
        return []
    directory.mkdir(parents=True, exist_ok=True)
    return label_grid.write(directory, rows, PIXELS)


def _load_clip(directory):
    """(module, params, tokenize) of a transformers CLIPModel directory that holds its tokenizer files too."""
    from jaxprobe.models import load_clip
    from jaxprobe.models.pipeline import load_tokenizer, tokenize
    module, params = load_clip(directory)
    tok = load_tokenizer(directory)
    return module, params, lambda texts: tokenize(tok, texts)


def _write_labels(directory: Path, concept_sets, quality, images) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    io.write_json(directory / "sets.json", {cs.concept: {"group": cs.group, "positives": cs.positives.tolist(),
                                                         "negatives": cs.negatives.tolist(),
                                                         "train": cs.train.tolist(), "test": cs.test.tolist()}
                                            for cs in concept_sets})
    if quality:
        io.write_csv(directory / "quality.csv", quality, list(quality[0]))
    figures.top_positives_figure(directory / "top_positives.png", concept_sets, images)


def headline(summary: dict) -> list[str]:
    """What the launcher prints: label quality, each concept's best module per family at the last checkpoint with
    its 95 % interval and the raw-pixel baseline, and the 2x2 of label source x negatives (if it ran)."""
    lines = [f"{q['concept']}: labels precision@{q['num_positive']} {q['precision']:.3f}, negatives carrying it "
             f"{q['negatives_with_concept']:.3f}" for q in summary["label_quality"]]
    pixels = summary.get("pixels_at_last_checkpoint", {})
    for concept, best in summary["best_module_ci95"].items():
        lines.append(f"{concept} at step {summary['last_step']}: " + ", ".join(
            f"{f} {m} {a:.3f} [{lo:.3f}, {hi:.3f}]" + (f" (pixels {pixels[concept][f][0]:.3f})" if pixels else "")
            for f, (m, a, lo, hi) in best.items()))
    grid = summary.get("label_grid", {}).get("best", [])
    for cell, family in dict.fromkeys((r["cell"], r["family"]) for r in grid):
        mine = [r for r in grid if (r["cell"], r["family"]) == (cell, family)]
        lines.append(f"2x2 {cell} at step {summary['label_grid']['step']}, {family}: best module "
                     f"{np.mean([r['accuracy'] for r in mine]):.3f}, pixels {np.mean([r['pixels'] for r in mine]):.3f}"
                     " (mean over concepts)")
    return lines
