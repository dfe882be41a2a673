"""The findings table on two synthetic finished sweeps, written with the sweep's own writers (`fit_stage.save_scores`,
`report.summarize` as the report stage calls it, `io.write_json`): in 'holds' every finding the paper states holds,
in 'fails' each fails by construction (or the sweep lacks it), so each verdict and number is known in advance."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxprobe import io
from jaxprobe.probing import report
from jaxprobe.scene import findings
from jaxprobe.scene import layers as scene_layers
from jaxprobe.scene.baselines import VAE_LAYER
from jaxprobe.scene.fit_stage import save_scores, scores_path
from jaxprobe.scene.reference_stage import PRIOR_LAYER
from jaxprobe.scene.tasks import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [f"{block}/transformer_blocks_0/attn1/to_out_0" for block in
          ("down_blocks_2/attentions_1", "mid_block/attentions_0", "up_blocks_1/attentions_0",
           "up_blocks_2/attentions_2")]  # down2.a1, mid, up1.a0, up2.a2
STEPS = range(6)
IMAGES = {"train": 12, "val": 8, "test": 20}
PRIOR = 0.3  # the prior's quality: Dice, or 1 - RMSE


def _holds(model, layer, step):
    """Quality (Dice; 1 - RMSE) of a sweep where every finding holds: the decoder layer best, a bottleneck dip,
    far above the prior, randomized weights and the VAE from step 0."""
    bonus = {"mid": -0.1, "up2.a2": 0.1}.get(scene_layers.short_layer_name(layer), 0.0)
    return {"trained": 0.5 + 0.02 * step + bonus, "randomized": 0.32, "vae": 0.1 + 0.08 * step}[model]


def _fails(model, layer, step):
    """One where none does: below the prior until step 3, no dip, an encoder layer best, randomized weights as
    good as trained ones, the VAE ahead at every step."""
    bonus = {"mid": 0.05, "down2.a1": 0.1}.get(scene_layers.short_layer_name(layer), 0.0)
    trained = 0.1 + 0.04 * step
    return {"trained": trained + bonus, "randomized": trained + bonus, "vae": trained + 0.15}[model]


def _write_sweep(workdir: Path, quality, tasks, models=("trained", "randomized", "vae")):
    """scores/ of every model, reference and split, and summary.json as `report_stage.write_report` writes it.
    inverse_depth is below the prior in every cell. Per-image values: quality + an image's offset (shared by
    every cell, as an image's difficulty is) + noise of each cell."""
    rng = np.random.default_rng(0)
    offset = {split: rng.normal(0, 0.05, n) for split, n in IMAGES.items()}
    noise = {}
    by_split = {}
    for task in tasks:
        spec = BY_NAME[task]
        for split, n in IMAGES.items():
            def values(q, cell):  # a cell's noise is the same in every model that has the cell
                v = q + offset[split] + noise.setdefault((task, split, cell), rng.normal(0, 0.01, n))
                return {"rmse": 1 - v} if spec.headline == "rmse" else {"dice": v, "ap": v + 0.1}
            cells = {m: {(l, s): values(PRIOR - 0.05 if task == "inverse_depth" else quality(m, l, s), (l, s))
                         for l in (LAYERS if m != "vae" else [VAE_LAYER]) for s in STEPS} for m in models}
            cells["prior"] = {(PRIOR_LAYER, s): values(PRIOR, (PRIOR_LAYER, s)) for s in STEPS}
            cells["ceiling"] = {(l, s): values(0.9, ("ceiling", l, s)) for l in LAYERS for s in STEPS}
            for m, scores in cells.items():
                save_scores(scores_path(workdir, m, task, split), scores)
                by_split.setdefault(split, {}).setdefault(m, {})[task] = scores
    summary = report.summarize(by_split["test"], tasks=[BY_NAME[t] for t in tasks], layer_order=LAYERS + [VAE_LAYER],
                               reference="trained", layer_names=scene_layers.names, select_on=by_split["val"])
    io.write_json(workdir / "summary.json", {"config": {"models": list(models), "tasks": list(tasks)},
                                             "summary": summary})
    return workdir


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    return [_write_sweep(root / "holds", _holds, ("saliency", "depth", "inverse_depth")),
            _write_sweep(root / "fails", _fails, ("saliency", "depth"), models=("trained", "randomized"))]


@pytest.fixture(scope="module")
def table(sweeps):
    return findings.findings(sweeps, names=["holds", "fails"])


def _row(table, finding):
    return next(r for r in table["findings"] if r["finding"] == finding)


def test_each_verdict_counts_the_sweeps_that_have_the_finding(table):
    holds = {r["finding"]: (r["columns"]["holds"]["holds"], r["columns"]["fails"]["holds"]) for r in table["findings"]}
    assert holds == {"salient object decodable": (True, True), "depth decodable": (True, True),
                     "inverse depth decodable": (False, None), "early emergence": (True, False),
                     "trained >> randomized weights": (True, False), "UNet vs VAE on x_t, early steps": (True, None),
                     "bottleneck dip": (True, False), "best layers": (True, False)}
    verdicts = {r["finding"]: r["verdict"] for r in table["findings"]}
    assert verdicts["salient object decodable"] == "holds in all 2"
    assert verdicts["early emergence"] == "holds in 1 of 2"
    assert verdicts["inverse depth decodable"] == "contradicted in all 1"
    assert verdicts["UNet vs VAE on x_t, early steps"] == "holds in all 1"
    assert _row(table, "UNet vs VAE on x_t, early steps")["columns"]["fails"]["text"] == findings.NOT_IN_SWEEP
    assert findings.verdict([False, False, None]) == "contradicted in all 2"
    assert findings.verdict([None]) == "in no sweep"


def _test(workdir, model, task, cell, metric=None):
    return np.load(scores_path(workdir, model, task, "test"))["|".join(map(str, cell)) + "|" +
                                                               (metric or BY_NAME[task].headline)]


def test_paired_differences_are_the_means_of_the_per_image_differences_written(sweeps, table):
    holds, fails = sweeps
    top = (LAYERS[3], 5)  # up2.a2 at the last step: the best cell of 'holds'
    depth = _row(table, "depth decodable")["columns"]["holds"]["numbers"]
    assert (depth["layer"], depth["step"]) == ("up2.a2", 5)
    want = np.mean(_test(holds, "prior", "depth", (PRIOR_LAYER, 5)) - _test(holds, "trained", "depth", top))
    assert depth["vs_prior"]["mean"] == pytest.approx(want, abs=1e-12)  # prior - probe: > 0, the probe better
    assert depth["vs_prior"]["ci95"][0] < want < depth["vs_prior"]["ci95"][1]
    assert want == pytest.approx(0.5 + 0.02 * 5 + 0.1 - PRIOR, abs=0.02)
    randomized = _row(table, "trained >> randomized weights")["columns"]
    want = np.mean(_test(holds, "trained", "saliency", top) - _test(holds, "randomized", "saliency", top))
    assert randomized["holds"]["numbers"]["saliency"]["vs_randomized"]["mean"] == pytest.approx(want, abs=1e-12)
    gap = json.loads((holds / "summary.json").read_text())["summary"]["trained"]["saliency"]["gap"]["randomized"]
    assert randomized["holds"]["numbers"]["saliency"]["vs_randomized"] == {"mean": gap["mean"], "ci95": gap["ci95"]}
    assert randomized["fails"]["numbers"]["depth"]["vs_randomized"]["ci95"] == pytest.approx([0, 0], abs=1e-12)
    dip = _row(table, "bottleneck dip")["columns"]["holds"]["numbers"]["saliency"]
    want = np.mean(_test(holds, "trained", "saliency", (LAYERS[0], 5))
                   - _test(holds, "trained", "saliency", (LAYERS[1], 5)))
    assert dip["down2.a1"]["vs_mid"]["mean"] == pytest.approx(want, abs=1e-12)
    assert set(dip) == {"step", "mid", "down2.a1", "up1.a0"}


def test_salient_object_row_reports_the_chosen_cell_against_the_references(sweeps, table):
    holds = sweeps[0]
    n = _row(table, "salient object decodable")["columns"]["holds"]["numbers"]
    top = (LAYERS[3], 5)
    assert n["dice"]["mean"] == pytest.approx(_test(holds, "trained", "saliency", top).mean())
    assert n["ap"] == pytest.approx(_test(holds, "trained", "saliency", top, "ap").mean())
    assert n["prior_dice"] == pytest.approx(_test(holds, "prior", "saliency", (PRIOR_LAYER, 5)).mean())
    assert n["ceiling"] == pytest.approx(_test(holds, "ceiling", "saliency", top).mean())
    assert n["randomized"] == json.loads((holds / "summary.json").read_text())["summary"]["randomized"][
        "saliency"]["best"]["mean"]


def test_early_steps_are_chosen_per_step_and_the_first_step_beyond_the_prior_found(table):
    early = _row(table, "early emergence")["columns"]
    fails = early["fails"]["numbers"]["depth"]
    assert [fails["early"][s]["layer"] for s in (0, 1, 2)] == ["down2.a1"] * 3
    assert fails["first_clearly_beyond_prior"] == 3  # quality 0.2 + 0.04 * step against the prior's 0.3
    assert early["holds"]["numbers"]["saliency"]["first_clearly_beyond_prior"] == 0
    assert "clearly from step 3" in early["fails"]["text"]
    vae = _row(table, "UNet vs VAE on x_t, early steps")["columns"]["holds"]["numbers"]["depth"]
    assert sorted(vae) == [0, 1, 2, 3, 4, 5]
    assert vae[0]["vae"] == pytest.approx(1 - 0.1, abs=0.03)


def test_markdown_has_a_row_per_finding_and_a_column_per_sweep(sweeps, tmp_path):
    table = findings.write(tmp_path, sweeps)  # names: the workdirs' folder names
    lines = (tmp_path / "findings.md").read_text().splitlines()
    assert lines[0] == "| finding | holds | fails | verdict |"
    assert len(lines) == 2 + len(findings.FINDINGS)
    assert all(line.count(" | ") == 3 for line in lines[2:])
    assert "| best layers | **holds**: saliency up2.a2 (step 5), depth up2.a2 (step 5)" in lines[-1]
    assert json.loads((tmp_path / "findings.json").read_text())["findings"][0]["verdict"] == table["findings"][0][
        "verdict"]


def test_bad_inputs_are_one_clear_error(sweeps, tmp_path):
    with pytest.raises(ValueError, match="one per workdir"):
        findings.findings(sweeps, names=["only"])
    with pytest.raises(FileNotFoundError, match="not a finished sweep"):
        findings.findings([tmp_path])


@pytest.mark.slow  # a subprocess launcher (~10 s of imports)
def test_the_launcher_writes_the_table(sweeps, tmp_path):
    run = subprocess.run([sys.executable, "launch/findings.py", f"--workdirs={','.join(map(str, sweeps))}",
                          "--names=a,b", f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "early emergence: holds in 1 of 2" in run.stdout
    assert (tmp_path / "findings.md").read_text().startswith("| finding | a | b | verdict |")
