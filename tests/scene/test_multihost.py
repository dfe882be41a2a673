"""The jobs on the diffusion pipeline as 2 `jax.distributed` processes on localhost, each against a 1-process run on
a mesh of the same shape: the scene sweep (each host stores only its rows, process 0 writes the report, a part lost
on one host is recaptured), the intervention study and sampling (process 0 writes the same images)."""
import json
import sys

import numpy as np
import pytest
from golden import read_csv
from multihost import run_one, run_processes


def _flags(tiny_dir, workdir) -> list[str]:
    return [sys.executable, "launch/probe.py", "--config=configs/scene/toy_probe.py", f"--workdir={workdir}",
            f"--config.pipeline_dir={tiny_dir}", f"--config.prompts_file={tiny_dir / 'prompts.txt'}",
            f"--config.labels_dir={tiny_dir / 'labels'}", "--config.resolution=16", "--config.num_train=4",
            "--config.num_val=1", "--config.num_test=4", "--config.batch_size=4", "--config.num_inference_steps=3",
            "--config.steps=(0, 2)", "--config.probe.epochs=2", "--config.mesh.data=2"]


def _values(workdir) -> dict:
    rows = read_csv(workdir / "results.csv")
    return {tuple(v for k, v in r.items() if k != "value"): float(r["value"]) for r in rows}


@pytest.mark.slow  # three sweeps of the tiny pipeline, two of them as 2 processes: about 5 minutes on 2 cores
def test_two_process_sweep_matches_one_process_and_recaptures_a_lost_part(tiny_dir, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    outs = run_processes(_flags(tiny_dir, two) + ["--distributed"])
    assert "results:" in outs[0] and "results:" not in outs[1]  # process 0 reports
    for p in range(2):  # each host stored only its 2 rows of every batch of 4
        part = two / "activations" / f"process_{p:03d}" / "chunk_000001" / "images.npy"
        assert np.load(part).shape[0] == 2
    run_one(_flags(tiny_dir, one), devices=2)
    ref, got = _values(one), _values(two)
    assert got.keys() == ref.keys()
    assert max(abs(got[k] - ref[k]) for k in ref) <= 1e-5

    lost = two / "activations" / "process_001"
    before = np.load(lost / "chunk_000001" / "images.npy")
    meta = json.loads((lost / "index.json").read_text())
    del meta["chunks"]["1"]  # host 1 died before listing chunk 1
    (lost / "index.json").write_text(json.dumps(meta))
    (two / "results.csv").unlink()
    run_processes(_flags(tiny_dir, two) + ["--distributed"])
    assert json.loads((lost / "index.json").read_text())["chunks"].keys() == {"0", "1"}
    np.testing.assert_array_equal(np.load(lost / "chunk_000001" / "images.npy"), before)
    assert _values(two) == got


def _edit_flags(tiny_dir, probes_dir, workdir) -> list[str]:
    directory, layers = probes_dir
    return [sys.executable, "launch/intervene.py", "--config=configs/scene/toy_intervene.py", f"--workdir={workdir}",
            f"--config.pipeline_dir={tiny_dir}", "--config.labelers_dir=", f"--config.labels_dir={tiny_dir / 'labels'}",
            f"--config.prompts_file={tiny_dir / 'prompts.txt'}", f"--config.probes={directory}",
            f"--config.layers={tuple(layers)}", "--config.steps=(0, 1)", "--config.resolution=16",
            "--config.num_inference_steps=3", "--config.num_images=2", "--config.shifts_per_image=2",
            "--config.batch_size=2", "--config.shift_fraction=(0.1, 0.3)", "--config.iterations=4",
            "--config.lr=0.05", "--config.mesh.data=2"]


@pytest.mark.slow  # two runs of 4 edits with 3 controls on the tiny pipeline, one as 2 processes: about 3 minutes
def test_two_process_intervention_matches_one_process(tiny_dir, probes_dir, tmp_path):
    outs = run_processes(_edit_flags(tiny_dir, probes_dir, tmp_path / "two") + ["--distributed"])
    assert "results:" in outs[0] and "results:" not in outs[1]
    run_one(_edit_flags(tiny_dir, probes_dir, tmp_path / "one"), devices=2)
    images = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png")
                    if p.parent.name != "figures")
    assert len(images) == 4 * 5  # control, edited and the three controls' images of 4 edits
    for name in images:
        np.testing.assert_array_equal(_png(tmp_path / "two" / name), _png(tmp_path / "one" / name))


def _png(path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path))


@pytest.mark.slow  # 6 images of the tiny pipeline, once as 2 processes: about a minute
def test_two_process_sampling_writes_the_one_process_images(tiny_dir, tmp_path):
    flags = lambda workdir: [sys.executable, "launch/sample.py", "--config=configs/sample/sd_v1.py",
                             f"--config.pipeline_dir={tiny_dir}", "--config.prompts=a red ball|a blue cube|a cone",
                             "--config.num_images_per_prompt=2", "--config.batch_size=4", "--config.height=16",
                             "--config.width=16", "--config.num_inference_steps=3", "--config.mesh.data=2",
                             f"--workdir={workdir}"]
    outs = run_processes(flags(tmp_path / "two") + ["--distributed"])
    assert "this run sampled 6" in outs[0] and "sampled" not in outs[1]  # process 0 reports
    run_one(flags(tmp_path / "one"), devices=2)
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 6 and sorted(p.name for p in (tmp_path / "two").glob("*.png")) == names
    for name in names:  # the last batch of 2 splits 1 + 1; the first batch of 4, 2 + 2
        np.testing.assert_array_equal(_png(tmp_path / "two" / name), _png(tmp_path / "one" / name))
