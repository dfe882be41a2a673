"""report.py on synthetic sweeps built so that every answer (best cell, gap, 'how early') is known in advance."""
import json

import numpy as np
import pytest
from PIL import Image

from jaxprobe.probing import report
from jaxprobe.probing.tasks import Task

# The paper's 16 probe sites in SD v1 (diffusers order): 2+2+2 down, 1 mid, 3+3+3 up. To the core they are opaque
# paths; the study's names and resolution levels come in through a namer, here a fixed table.
SD_LAYERS = tuple(
    [f"down_blocks_{i}/attentions_{j}/transformer_blocks_0/attn1/to_out_0" for i in range(3) for j in range(2)]
    + ["mid_block/attentions_0/transformer_blocks_0/attn1/to_out_0"]
    + [f"up_blocks_{i}/attentions_{j}/transformer_blocks_0/attn1/to_out_0" for i in (1, 2, 3) for j in range(3)])
SHORT = dict(zip(SD_LAYERS, [f"down{i}.a{j}" for i in range(3) for j in range(2)] + ["mid"]
                 + [f"up{i}.a{j}" for i in (1, 2, 3) for j in range(3)]))
LEVEL = dict(zip(SD_LAYERS, (0, 0, 1, 1, 2, 2, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0)))
VAE_LAYER = "decoder/mid_block/attentions_0"
TASKS = (Task("saliency", "mask", ("dice", "iou"), headline="dice"),
         Task("depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse"))
HEADLINE = {t.name: t.headline for t in TASKS}
MODELS = ("trained", "randomized", "vae")


def namer(layers):
    """The layers this table knows (not the VAE's): {path: (short name, level)}."""
    return {l: (SHORT[l], LEVEL[l]) for l in layers if l in SHORT}


def _summarize(scores, **kw):
    return report.summarize(scores, tasks=TASKS, layer_order=SD_LAYERS, reference="trained", **kw)
STEPS = (0, 2, 4, 8, 14)  # a non-contiguous capture, as with --config.steps
N = 40


def _per_image(mean: float, rng, spread: float = 0.05) -> np.ndarray:
    """[N] scores whose mean is exactly `mean`."""
    noise = spread * rng.normal(size=N)
    return mean + noise - noise.mean()


def _sweep(task: str, layers, quality, seed: int = 0) -> dict:
    """evaluate_sweep-shaped scores whose per-cell means are given by quality(layer index, step) in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = {}
    for li, layer in enumerate(layers):
        for s in STEPS:
            q = quality(li, s)
            out[(layer, s)] = ({"dice": _per_image(q, rng), "iou": _per_image(q / (2 - q), rng)}
                               if task == "saliency" else
                               {"rmse": _per_image(1.0 - 0.5 * q, rng), "spearman": _per_image(0.8 * q, rng),
                                "pearson": _per_image(0.8 * q, rng)})
    return out


def _rising(scale: float):
    """Quality rising over steps, lowest at the mid (bottleneck) layer: a curve shaped like the paper's."""
    return lambda li, s: scale * (1 - np.exp(-(s + 1) / 3)) * (0.7 if li == 6 else 1.0 - 0.01 * li)


@pytest.fixture(scope="module")
def sweep_rows():
    """Rows of a trained / randomized / VAE sweep on both tasks."""
    by_model = {"trained": (SD_LAYERS, 0.9), "randomized": (SD_LAYERS, 0.4), "vae": ((VAE_LAYER,), 0.6)}
    return [row for model, (layers, scale) in by_model.items() for task in ("saliency", "depth")
            for row in report.score_rows(_sweep(task, layers, _rising(scale)), model=model, task=task,
                                         split="test")]


# ---------------------------------------------------------------------------------------------- names


def test_layers_are_named_by_the_namer_given_and_shown_as_paths_otherwise():
    names = report.name_layers(SD_LAYERS + (VAE_LAYER,), namer)
    assert names[SD_LAYERS[6]] == ("mid", 3) and names[SD_LAYERS[-1]] == ("up3.a2", 0)
    assert names[VAE_LAYER] == (VAE_LAYER, None)  # a path the namer does not know
    assert report.name_layers(SD_LAYERS[:2]) == {l: (l, None) for l in SD_LAYERS[:2]}  # no namer


# ---------------------------------------------------------------------------------------------- tables


def test_rows_round_trip_through_csv(tmp_path, sweep_rows):
    path = tmp_path / "results.csv"
    report.write_results_csv(path, sweep_rows)
    assert path.read_text().splitlines()[0] == "model,task,layer,step,split,metric,value"
    back = report.read_results_csv(path)
    assert back == sweep_rows  # steps come back as int, values as the same float
    assert all(isinstance(r["step"], int) for r in back)
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp file left behind


def test_score_rows_are_means_over_images():
    rng = np.random.default_rng(1)
    dice = rng.random(7)
    rows = report.score_rows({(SD_LAYERS[0], 3): {"dice": dice}}, model="trained", task="saliency",
                             split="train")
    assert rows == [{"model": "trained", "task": "saliency", "layer": SD_LAYERS[0], "step": 3, "split": "train",
                     "metric": "dice", "value": pytest.approx(dice.mean())}]


def test_with_denoising_steps_rekeys_capture_indices():
    scores = {("a", 0): {"dice": np.ones(2)}, ("a", 1): {"dice": np.zeros(2)}}
    out = report.with_denoising_steps(scores, [3, 9])
    assert set(out) == {("a", 3), ("a", 9)} and out[("a", 9)] is scores[("a", 1)]
    with pytest.raises(ValueError, match="outside the 1 captured steps"):
        report.with_denoising_steps(scores, [3])


# ---------------------------------------------------------------------------------------------- summary


def test_summary_picks_the_known_best_cell_and_respects_direction():
    best_layer, best_step = 8, 8  # up1.a1 at step 8, clearly better than every other cell
    by_step = {0: 0.0, 2: 0.02, 4: 0.08, 8: 0.04, 14: 0.06}  # otherwise step 4 is every layer's best

    def quality(li, s):
        return 0.9 if (li, s) == (best_layer, best_step) else 0.5 + by_step[s] + 0.001 * li

    scores = {"trained": {"saliency": _sweep("saliency", SD_LAYERS, quality),
                          "depth": _sweep("depth", SD_LAYERS, quality)}}
    summary = _summarize(scores, layer_names=namer)
    json.dumps(summary)  # plain JSON types throughout
    for task, metric, mean in (("saliency", "dice", 0.9), ("depth", "rmse", 1.0 - 0.5 * 0.9)):
        entry = summary["trained"][task]
        assert entry["metric"] == metric
        # For rmse the best is the LOWEST mean (the highest would be a different cell).
        assert (entry["best"]["layer"], entry["best"]["step"]) == (SD_LAYERS[best_layer], best_step), task
        assert entry["best"]["short"] == "up1.a1"
        assert entry["best"]["mean"] == pytest.approx(mean)
        lo, hi = entry["best"]["ci95"]
        assert lo < mean < hi
        # Per layer, in layer_order: the best layer's best step is 8, every other layer's is 4.
        assert [p["layer"] for p in entry["per_layer"]] == list(SD_LAYERS)
        assert [p["step"] for p in entry["per_layer"]] == [best_step if i == best_layer else 4 for i in range(16)]
        assert entry["gap"] == {}  # no baselines given


def test_summary_orders_the_vae_layer_after_layer_order():
    scores = {"vae": {"depth": _sweep("depth", (VAE_LAYER,), _rising(0.6))}}
    entry = _summarize(scores, layer_names=namer)["vae"]["depth"]
    assert [p["layer"] for p in entry["per_layer"]] == [VAE_LAYER]
    assert [p["short"] for p in entry["per_layer"]] == [VAE_LAYER]  # the namer does not know it: its path
    assert entry["best"]["step"] == STEPS[-1]  # the rising curve is best at the last step


@pytest.mark.parametrize("task", ["saliency", "depth"])
def test_paired_gap_contains_the_true_difference(task):
    """trained = baseline + delta per image, plus small noise; images vary a lot, which pairing cancels."""
    rng = np.random.default_rng(2)
    metric = HEADLINE[task]
    cell = (SD_LAYERS[3], 4)
    base = np.clip(0.5 + 0.2 * rng.normal(size=N), 0.05, 0.95)  # wide spread between images
    for delta in (0.0, 0.05):
        noise = 0.01 * rng.normal(size=N)
        # rmse: trained better = lower, so subtract; the reported improvement is then +delta in both tasks.
        trained = base + delta + noise if metric == "dice" else base - delta + noise
        scores = {"trained": {task: {cell: {metric: trained}}},
                  "randomized": {task: {cell: {metric: base}}},
                  "vae": {task: {(VAE_LAYER, 4): {metric: base}, (VAE_LAYER, 14): {metric: base + 1}}}}
        gaps = _summarize(scores)["trained"][task]["gap"]
        for baseline, gap in gaps.items():
            lo, hi = gap["ci95"]
            assert lo <= delta <= hi, (baseline, delta, lo, hi)
            assert gap["baseline_mean"] == pytest.approx(base.mean())
            if delta > 0:
                assert lo > 0  # 0.05 at 0.01 per-image noise is far outside the paired interval
                # ... although the unpaired spread (0.2 / sqrt(N) ~ 0.03) would not have shown it clearly.
        assert gaps["vae"]["baseline_layer"] == VAE_LAYER and gaps["vae"]["step"] == 4
        # the reference is the caller's: judged from the randomized model, the trained one is a baseline
        other = report.summarize(scores, tasks=TASKS, layer_order=SD_LAYERS, reference="randomized")
        assert set(other["randomized"][task]["gap"]) == {"trained", "vae"} and "gap" not in other["trained"][task]


# ------------------------------------------------------------------------------------------ selection on val

VAE_OTHER = "decoder/up_blocks_0/attentions_0"  # a second baseline layer, so that its layer is chosen too


def _peaked(peak: tuple[int, int], step_peak: dict[int, int]):
    """Quality 0.9 at `peak` (layer index, step), else each layer best at its step_peak step (default 2)."""
    return lambda li, s: 0.9 if (li, s) == peak else 0.4 + (0.1 if s == step_peak.get(li, 2) else 0.0) + 0.001 * li


def _baseline(task: str, best_layer: str, seed: int) -> dict:
    """VAE-like scores on two layers of its own at every step, `best_layer` the better one everywhere."""
    return _sweep(task, (VAE_LAYER, VAE_OTHER), lambda li, s: (0.6 if (VAE_LAYER, VAE_OTHER)[li] == best_layer
                                                               else 0.3) + 0.01 * s, seed)


def _selected(entry: dict) -> dict:
    """Every cell a summary entry chose."""
    return {"best": (entry["best"]["layer"], entry["best"]["step"]),
            "per_layer": [(p["layer"], p["step"]) for p in entry["per_layer"]],
            "how_early": entry["how_early"]["layer"],
            "gap": {m: (g["layer"], g["step"], g["baseline_layer"]) for m, g in entry.get("gap", {}).items()}}


@pytest.mark.parametrize("task", ["saliency", "depth"])
def test_every_cell_is_chosen_on_val_and_reported_on_test(task):
    """val peaks at cell A (and layer 5 peaks at step 8, the baseline at VAE_LAYER); test peaks at B (layer 5 at
    step 14, the baseline at VAE_OTHER). The summary must choose A, step 8, VAE_LAYER, and report test values; any
    change of the test scores must leave every choice where it was."""
    a, b = (3, 4), (10, 14)
    val = {"trained": {task: _sweep(task, SD_LAYERS, _peaked(a, {5: 8}), seed=1)},
           "randomized": {task: _sweep(task, SD_LAYERS, _peaked(b, {}), seed=2)},
           "vae": {task: _baseline(task, VAE_LAYER, seed=3)}}
    test = {"trained": {task: _sweep(task, SD_LAYERS, _peaked(b, {5: 14}), seed=4)},
            "randomized": {task: _sweep(task, SD_LAYERS, _peaked(a, {}), seed=5)},
            "vae": {task: _baseline(task, VAE_OTHER, seed=6)}}
    for model in val:  # fewer validation images than test images, as in a sweep
        val[model][task] = {c: {m: v[:12] for m, v in ms.items()} for c, ms in val[model][task].items()}
    entry = _summarize(test, select_on=val)["trained"][task]
    chosen = _selected(entry)
    cell_a = (SD_LAYERS[a[0]], a[1])
    assert chosen["best"] == cell_a and chosen["how_early"] == cell_a[0]
    assert chosen["per_layer"][5] == (SD_LAYERS[5], 8)
    assert chosen["gap"] == {"randomized": (*cell_a, cell_a[0]), "vae": (*cell_a, VAE_LAYER)}
    assert (entry["selected_on"], entry["n_val"], entry["n_images"]) == ("val", 12, N)
    metric = HEADLINE[task]
    assert entry["best"]["mean"] == pytest.approx(test["trained"][task][cell_a][metric].mean())  # a test value
    assert entry["gap"]["vae"]["baseline_mean"] == pytest.approx(
        test["vae"][task][(VAE_LAYER, a[1])][metric].mean())
    assert _selected(_summarize(test)["trained"][task])["best"] == (SD_LAYERS[b[0]], b[1])  # test alone picks B

    rng = np.random.default_rng(7)
    for model, by_task in test.items():  # test scores moved to other cells at random, and B made better still
        cells = list(by_task[task])
        moved = dict(zip(cells, [by_task[task][cells[i]] for i in rng.permutation(len(cells))]))
        by_task[task] = moved
    best_b = {m: v * 0 + (2.0 if metric == "dice" else 0.0) for m, v in test["trained"][task][cell_a].items()}
    test["trained"][task][(SD_LAYERS[b[0]], b[1])] = best_b
    again = _summarize(test, select_on=val)["trained"][task]
    assert _selected(again) == chosen
    assert again["best"]["mean"] == pytest.approx(test["trained"][task][cell_a][metric].mean())


def test_without_val_scores_the_summary_says_it_chose_on_test():
    scores = {"trained": {"saliency": _sweep("saliency", SD_LAYERS, _rising(0.9))}}
    entry = _summarize(scores)["trained"]["saliency"]
    assert (entry["selected_on"], entry["n_val"]) == ("test", 0)
    assert (entry["best"]["layer"], entry["best"]["step"]) == report.best_cell(scores["trained"]["saliency"], "dice",
                                                                                SD_LAYERS)
    fewer = {"trained": {"saliency": dict(list(scores["trained"]["saliency"].items())[1:])}}
    with pytest.raises(ValueError, match="select_on must score the same cells as the test scores of model "
                                         "'trained', task 'saliency'; 1 differ"):
        _summarize(scores, select_on=fewer)


def test_how_early_known_steps():
    # dice: 90% of the final 0.9 is 0.81; step 2 (0.80) misses it, step 4 (0.85) is the first to reach it.
    assert report.how_early({0: 0.5, 2: 0.80, 4: 0.85, 8: 0.88, 14: 0.9}, "dice")["step"] == 4
    # rmse: quality = 1/rmse, so the bar is 0.5 / 0.9 = 0.556; step 2 (0.56) misses it, step 3 (0.52) does not.
    got = report.how_early({4: 0.5, 0: 1.0, 1: 0.7, 2: 0.56, 3: 0.52}, "rmse")
    assert (got["step"], got["final_step"], got["final_value"]) == (3, 4, 0.5)
    # Already there at the first step.
    assert report.how_early({0: 0.95, 5: 0.9}, "dice")["step"] == 0


def test_summary_how_early_follows_the_best_layer():
    # Layer up3.a0 is best; its curve reaches 90% of its final value at step 4, the others only at step 14.
    target, curve = 13, {0: 0.2, 2: 0.5, 4: 0.83, 8: 0.88, 14: 0.9}

    def quality(li, s):
        return curve[s] if li == target else 0.3 + 0.03 * s

    entry = _summarize({"trained": {"saliency": _sweep("saliency", SD_LAYERS, quality)}})["trained"]["saliency"]
    assert entry["how_early"]["layer"] == SD_LAYERS[target]
    assert entry["how_early"]["step"] == 4
    assert entry["best"]["short"] == SD_LAYERS[target]  # no namer: layers are shown by their paths


# ---------------------------------------------------------------------------------------------- figures


def _assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 0 and im.size[1] > 0
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # the atomic temp file is gone


@pytest.mark.parametrize("task, metric", [("saliency", "dice"), ("depth", "rmse")])
@pytest.mark.parametrize("names", [None, namer])
def test_sweep_figures_write_pngs(tmp_path, sweep_rows, task, metric, names):
    report.heatmap_figure(sweep_rows, task, metric, tmp_path / "heat.png", layer_order=SD_LAYERS, models=MODELS,
                          layer_names=names)
    report.curves_figure(sweep_rows, task, metric, tmp_path / "curves.png", layer_order=SD_LAYERS, model="trained",
                         layer_names=names)
    # layer_order may list the VAE's layer too (the sweep does): it stays a reference line, not an x position.
    report.layer_profile_figure(sweep_rows, task, metric, tmp_path / "profile.png",
                                layer_order=SD_LAYERS + (VAE_LAYER,), step=2, layer_names=names)
    for name in ("heat.png", "curves.png", "profile.png"):
        _assert_png(tmp_path / name)


def test_samples_figure_writes_a_png(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    report.samples_figure(tmp_path / "samples.png", images, ["a red car in the snow", "a dog"])
    _assert_png(tmp_path / "samples.png")
    with pytest.raises(ValueError, match="one title per image"):
        report.samples_figure(tmp_path / "bad.png", images, ["one"])
    with pytest.raises(ValueError, match="uint8"):
        report.samples_figure(tmp_path / "bad.png", images.astype(float), ["a", "b"])


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(tmp_path, sweep_rows):
    one = {(SD_LAYERS[0], 0): {"dice": np.ones(3)}}
    with pytest.raises(ValueError, match="unknown metric 'Dice'.*dice"):
        report.score_rows({(SD_LAYERS[0], 0): {"Dice": np.ones(3)}}, model="trained", task="saliency",
                          split="test")
    with pytest.raises(ValueError, match="unknown split 'dev'; valid choices: train, val, test"):
        report.score_rows(one, model="trained", task="saliency", split="dev")
    with pytest.raises(ValueError, match="scores dict is empty"):
        report.score_rows({}, model="trained", task="saliency", split="test")
    with pytest.raises(ValueError, match="unknown task .*'normals'; valid choices: saliency, depth"):
        _summarize({"trained": {"normals": one}})
    with pytest.raises(ValueError, match="no rows to write"):
        report.write_results_csv(tmp_path / "r.csv", [])
    (tmp_path / "bad.csv").write_text("model,task,layer,step,value\n")
    with pytest.raises(ValueError, match="needs exactly model, task, layer, step, split, metric, value"):
        report.read_results_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="rows list is empty"):
        report.heatmap_figure([], "saliency", "dice", tmp_path / "h.png", layer_order=SD_LAYERS, models=MODELS)
    with pytest.raises(ValueError, match="unknown metric 'mse'"):
        report.curves_figure(sweep_rows, "depth", "mse", tmp_path / "c.png", layer_order=SD_LAYERS, model="trained")
    with pytest.raises(ValueError, match="no rows for task 'normals'"):
        report.heatmap_figure(sweep_rows, "normals", "rmse", tmp_path / "h.png", layer_order=SD_LAYERS,
                              models=MODELS)
    with pytest.raises(ValueError, match="none of the models \\['shuffled'\\]"):
        report.heatmap_figure(sweep_rows, "depth", "rmse", tmp_path / "h.png", layer_order=SD_LAYERS,
                              models=("shuffled",))
    with pytest.raises(ValueError, match="no depth/rmse rows of model 'shuffled'"):
        report.curves_figure(sweep_rows, "depth", "rmse", tmp_path / "c.png", layer_order=SD_LAYERS,
                             model="shuffled")
    with pytest.raises(ValueError, match="steps present: \\[0, 2, 4, 8, 14\\]"):
        report.layer_profile_figure(sweep_rows, "depth", "rmse", tmp_path / "p.png", layer_order=SD_LAYERS,
                                    step=5)
    assert not list(tmp_path.glob("*.png"))  # nothing half-written
