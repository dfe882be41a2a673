"""The label stage: sources, the user's files checked against the images' index (one clear error per bad file,
before any fitting), the largest-instance saliency rule, and stages run out of order."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_sd import PROMPTS, write_index

from configs.scene import toy_probe
from jaxprobe import io
from jaxprobe.scene import image_index, labels, sweep


def _config(tiny_dir, **changes):
    c = toy_probe.get_config()
    c.pipeline_dir, c.prompts_file = str(tiny_dir), str(tiny_dir / "prompts.txt")
    c.labels_dir, c.labelers_dir = "", ""
    c.resolution, c.num_train, c.num_val, c.num_test, c.batch_size = 16, 4, 0, 4, 4
    c.num_inference_steps, c.steps, c.models, c.probe.epochs = 2, (1,), ("trained",), 1
    for key, value in changes.items():
        c[key] = value
    return c


@pytest.fixture(scope="module")
def captured(tiny_dir, tmp_path_factory):
    """A workdir after --config.stage=capture of the 8 tiny images."""
    workdir = tmp_path_factory.mktemp("captured")
    sweep.run(_config(tiny_dir, stage="capture"), workdir)
    return workdir


def test_capture_writes_the_images_and_their_index(captured, tiny_dir):
    index = io.read_csv(captured / "images" / image_index.INDEX)
    assert [r["prompt"] for r in index] == PROMPTS and [r["seed"] for r in index] == [str(i) for i in range(8)]
    assert [r["split"] for r in index] == ["train"] * 4 + ["test"] * 4
    stored = sweep.store.ProcessStores(captured / "activations").read("images")
    for row in index:
        np.testing.assert_array_equal(io.read_png(captured / "images" / row["file"]), stored[int(row["row"])])
    assert not (captured / "labels").exists()


def _labels_dir(tiny_dir, tmp_path, **files):
    """A copy of the fixture's labels/ (saliency.npy, depth.npy, index.csv) with `files` replaced (None: removed)."""
    directory = shutil.copytree(tiny_dir / "labels", tmp_path / "labels")
    for name, value in files.items():
        path = directory / name.replace("_npy", ".npy").replace("_csv", ".csv")
        if value is None:
            path.unlink()
        elif isinstance(value, np.ndarray):
            np.save(path, value)
        else:
            value(path)
    return directory


def _swap_rows(path):
    rows = io.read_csv(path)
    rows[0], rows[1] = rows[1], rows[0]
    io.write_csv(path, rows, image_index.COLUMNS)


SAL = np.random.default_rng(1).random((8, 16, 16)) < 0.5
DEPTH = np.random.default_rng(2).normal(size=(8, 16, 16)).astype(np.float32)
BAD = {  # id: (files replaced in the labels dir, config changes, exception, message)
    "no index": (dict(index_csv=None), {}, FileNotFoundError, r"config.labels_dir=.* lacks index.csv"),
    "order": (dict(index_csv=_swap_rows), {}, ValueError,
              r"index.csv row 0 differs from the sweep's images/index.csv in row, file, seed, prompt "
              r"\(row='1', want '0'"),
    "count": (dict(saliency_npy=SAL[:7]), {}, ValueError, r"saliency.npy has shape \(7, 16, 16\); need \[N=8, H, W\]"),
    "size": (dict(depth_npy=np.zeros((8, 10, 10), np.float32)), {}, ValueError,
             r"depth.npy holds 10x10 labels; need the images' 16x16 or a multiple of every probed layer's token grid "
             r"\(4x4\)"),
    "mask values": (dict(saliency_npy=SAL.astype(np.uint8) * 255), {}, ValueError,
                    r"saliency.npy must be a bool or 0/1 mask; it holds other values at image 0 \(e.g. 255\)"),
    "depth finite": (dict(depth_npy=np.where(np.arange(8)[:, None, None] == 3, np.nan, DEPTH)), {}, ValueError,
                     r"depth.npy holds non-finite depth at image 3"),
    "segmentation dtype": (dict(segmentation_npy=SAL.astype(np.float32), saliency_npy=None), {}, ValueError,
                           r"segmentation.npy must hold non-negative integer instance ids"),
    "two saliency files": (dict(segmentation_npy=SAL.astype(np.int32)), {}, ValueError,
                           r"saliency labels would come from .*saliency.npy and from .*segmentation.npy; keep one"),
    "no depth source": (dict(depth_npy=None), {}, ValueError,
                        r"no source of depth labels: put depth.npy in config.labels_dir, or config.depth_model_dir"),
    "constant depth": (dict(depth_npy=np.ones((8, 16, 16), np.float32)), {}, ValueError,
                       r"the train split's depth labels are all equal"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_label_file_gets_its_error_before_any_fitting(name, captured, tiny_dir, tmp_path):
    files, changes, error, match = BAD[name]
    workdir = shutil.copytree(captured, tmp_path / "run")
    c = _config(tiny_dir, stage="label", labels_dir=str(_labels_dir(tiny_dir, tmp_path, **files)), **changes)
    with pytest.raises(error, match=match):
        sweep.run(c, workdir)
    assert not (workdir / "labels").exists() and not (workdir / "probes").exists()


def test_good_files_are_read_back_as_given_and_smaller_labels_are_taken(captured, tiny_dir, tmp_path):
    seg = np.zeros((8, 8, 8), np.int32)
    seg[:, :2, :2], seg[:, 4:, 4:] = 1, 2  # instance 2 is the larger
    directory = _labels_dir(tiny_dir, tmp_path, saliency_npy=None, segmentation_npy=seg)
    workdir = shutil.copytree(captured, tmp_path / "run")
    sweep.run(_config(tiny_dir, stage="label", labels_dir=str(directory)), workdir)
    got = labels.load(workdir / "labels", ("saliency", "depth"))
    np.testing.assert_array_equal(got["saliency"], seg == 2)
    np.testing.assert_array_equal(got["depth"], np.load(directory / "depth.npy"))
    # A rerun with the same labels keeps them, from the same folder or a copy elsewhere (compared by content);
    # other content is refused (the probes were fitted on these).
    sweep.run(_config(tiny_dir, stage="label", labels_dir=str(directory)), workdir)
    moved = shutil.copytree(directory, tmp_path / "moved")
    sweep.run(_config(tiny_dir, stage="label", labels_dir=str(moved)), workdir)
    np.save(directory / "depth.npy", DEPTH)
    with pytest.raises(ValueError, match=r"run/labels holds other depth labels than this run's .*use a new --workdir"):
        sweep.run(_config(tiny_dir, stage="label", labels_dir=str(directory)), workdir)


def test_labels_for_a_longer_prompt_list_are_taken_for_its_first_images(captured, tiny_dir, tmp_path):
    directory = _labels_dir(tiny_dir, tmp_path, saliency_npy=np.concatenate([SAL, SAL[:2]]),
                            depth_npy=np.concatenate([DEPTH, DEPTH[:2]]))
    write_index(directory, PROMPTS + PROMPTS[:2])
    workdir = shutil.copytree(captured, tmp_path / "run")
    sweep.run(_config(tiny_dir, stage="label", labels_dir=str(directory)), workdir)
    np.testing.assert_array_equal(labels.load(workdir / "labels", ("depth",))["depth"], DEPTH)


def test_stages_run_out_of_order_say_which_to_run(captured, tiny_dir, tmp_path):
    c = _config(tiny_dir, labels_dir=str(tiny_dir / "labels"))
    with pytest.raises(ValueError, match=r"has not finished the capture stage: run --config.stage=capture"):
        sweep.run(_config(tiny_dir, stage="label", labels_dir=c.labels_dir), tmp_path / "empty")
    workdir = shutil.copytree(captured, tmp_path / "run")
    with pytest.raises(ValueError, match=r"has no labels yet: run --config.stage=label first"):
        sweep.run(_config(tiny_dir, stage="fit"), workdir)
    with pytest.raises(ValueError, match=r"has not finished the fit stage: run --config.stage=fit"):
        sweep.run(_config(tiny_dir, stage="report"), workdir)


def test_the_salient_object_is_the_largest_instance():
    seg = np.zeros((3, 4, 4), np.int64)
    seg[0, :2, :] = 3  # 8 pixels
    seg[0, 2:, :3] = 1  # 6 pixels
    seg[1, :2, :2], seg[1, 2:, 2:] = 5, 2  # a tie: the smaller id
    # image 2: background only -> an empty mask
    out = labels.largest_instance(seg)
    np.testing.assert_array_equal(out[0], seg[0] == 3)
    np.testing.assert_array_equal(out[1], seg[1] == 2)
    assert not out[2].any() and out.dtype == bool


def test_inverse_depth_is_one_over_distance_z_scored_with_the_train_statistics():
    from jaxprobe.toy.world import render
    distance = np.random.default_rng(3).uniform(1.5, 12.0, size=(6, 8, 8))
    distance[:, :2] = render.FAR  # the sky
    raw = labels.inverse_depth(distance, num_train=4)
    np.testing.assert_allclose(raw, 1 / distance, rtol=1e-6)
    got = labels.prepare({"depth": distance, "inverse_depth": raw}, num_train=4)
    train = 1 / distance[:4]
    np.testing.assert_allclose(got["inverse_depth"], (1 / distance - train.mean()) / train.std(), rtol=1e-4,
                               atol=1e-5)
    near, far = np.unravel_index(distance.argmin(), distance.shape), np.unravel_index(distance.argmax(), distance.shape)
    assert got["inverse_depth"][near] == got["inverse_depth"].max() and got["depth"][near] == got["depth"].min()
    assert got["inverse_depth"][far] == got["inverse_depth"].min()  # the sky is the farthest, the least inverse
    # A labeler's distance at or below 0 is clipped to a fraction of the train split's near distances: finite, the
    # nearest.
    distance[5, 4, 4] = -1.0
    clipped = labels.inverse_depth(distance, num_train=4)
    floor = labels.NEAR_FRACTION * np.percentile(distance[:4], labels.NEAR_PERCENTILE)
    assert clipped[5, 4, 4] == pytest.approx(1 / floor) and clipped.max() == clipped[5, 4, 4]
    with pytest.raises(ValueError, match="they must be distances"):
        labels.inverse_depth(-distance, num_train=4)
    # Encoded scenes: both depth tasks come from the scenes' exact distances.
    exact = {"depth": np.abs(distance) + 1.0}
    made = labels.make(_config(Path("unused"), num_train=4, num_test=2),
                       {"depth": labels.Source("exact"), "inverse_depth": labels.Source("exact")}, None, exact)
    np.testing.assert_array_equal(made["depth"], exact["depth"])
    np.testing.assert_allclose(made["inverse_depth"], 1 / exact["depth"], rtol=1e-6)


def test_inverse_depth_of_a_dpt_is_refused_naming_the_key_before_any_work(captured, tiny_dir, tmp_path):
    workdir = shutil.copytree(captured, tmp_path / "run")
    c = _config(tiny_dir, stage="label", tasks=("saliency", "depth", "inverse_depth"),
                labels_dir=str(tiny_dir / "labels"), depth_model_dir=str(tmp_path / "no_dpt_here"))
    c.labels_dir = ""
    with pytest.raises(ValueError, match=r"^config.tasks has 'inverse_depth', which inverts distance labels, but "
                                         r"config.depth_model_dir's DPT already predicts relative inverse depth") as e:
        sweep.run(c, workdir)
    assert "\n" not in str(e.value) and not (workdir / "labels").exists()


@pytest.mark.slow  # a whole sweep with three tasks: ~1.5 min on 2 cores
def test_a_sweep_reports_depth_and_inverse_depth_from_one_distance_source(tiny_dir, tmp_path):
    distance = np.random.default_rng(4).uniform(1.5, 30.0, size=(8, 16, 16)).astype(np.float32)
    directory = _labels_dir(tiny_dir, tmp_path, depth_npy=distance)
    workdir = tmp_path / "run"
    c = _config(tiny_dir, labels_dir=str(directory), tasks=("saliency", "depth", "inverse_depth"),
                layers=("up_blocks_0/attentions_0/*attn1/to_out_0",))
    sweep.run(c, workdir)
    got = labels.load(workdir / "labels", ("depth", "inverse_depth"))
    np.testing.assert_array_equal(got["depth"], distance)
    np.testing.assert_allclose(got["inverse_depth"], 1 / distance, rtol=1e-6)
    rows = io.read_csv(workdir / "results.csv")
    assert {r["task"] for r in rows} == {"saliency", "depth", "inverse_depth"}
    assert {r["metric"] for r in rows if r["task"] == "inverse_depth"} == {"rmse", "spearman", "pearson"}
    assert (workdir / "figures" / "predictions.png").exists()  # the saliency | depth grid, with a third task
