"""jaxprobe.io: a failed write leaves the old file (or directory) and no temp file behind, what is written reads back
exactly, and the safetensors reader names the file it cannot read. (Its fsync order and file modes are checked in
tests/probing/test_store.py, next to the store that relies on them.)"""
import json

import ml_dtypes
import numpy as np
import pytest

from jaxprobe import io


class Boom(Exception):
    pass


def _names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_atomic_path_leaves_the_old_file_and_no_temp_file(tmp_path, existing):
    target = tmp_path / "x.json"
    if existing:
        io.write_json(target, {"old": 1})
    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert _names(tmp_path) == (["x.json"] if existing else [])
    if existing:
        assert json.loads(target.read_text()) == {"old": 1}


@pytest.mark.parametrize("write", [
    lambda path: io.write_safetensors(path, {"a": np.zeros(3, np.float32), "b": object()}),  # not a tensor
    lambda path: io.write_png(path, np.zeros((2, 2, 7), np.uint8)),  # no 7-channel PNG
    lambda path: io.write_json(path, {"a": {1, 2}}),  # a set is not JSON
    lambda path: io.write_csv(path, [{"a": 1, "b": 2}], ["a"]),  # a field the header lacks
])
def test_a_writer_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path, write):
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(Exception):
        write(target)
    assert _names(tmp_path) == ["out"] and target.read_bytes() == b"old"


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_atomic_dir_leaves_the_old_directory_and_no_temp_directory(tmp_path, existing):
    target = tmp_path / "d"
    if existing:
        with io.atomic_dir(target) as tmp:
            io.write_text(tmp / "old.txt", "old")
    with pytest.raises(Boom):
        with io.atomic_dir(target) as tmp:
            io.write_text(tmp / "new.txt", "new")
            raise Boom
    assert _names(tmp_path) == (["d"] if existing else [])
    if existing:
        assert _names(target) == ["old.txt"] and (target / "old.txt").read_text() == "old"


def test_atomic_dir_replaces_the_whole_directory(tmp_path):
    with io.atomic_dir(tmp_path / "d") as tmp:
        io.write_text(tmp / "old.txt", "old")
    with io.atomic_dir(tmp_path / "d") as tmp:
        io.write_text(tmp / "sub" / "new.txt", "new")
    assert _names(tmp_path) == ["d"] and _names(tmp_path / "d") == ["sub"]
    assert (tmp_path / "d" / "sub" / "new.txt").read_text() == "new"


def test_text_json_csv_and_png_round_trip(tmp_path):
    io.write_text(tmp_path / "deep" / "t.txt", "línea\n")
    assert (tmp_path / "deep" / "t.txt").read_text() == "línea\n"
    obj = {"b": [1, 2.5, None], "a": {"s": "x"}, "n": np.float32(0.5), "arr": np.arange(3)}
    io.write_json(tmp_path / "o.json", obj)
    assert json.loads((tmp_path / "o.json").read_text()) == {"b": [1, 2.5, None], "a": {"s": "x"}, "n": 0.5,
                                                             "arr": [0, 1, 2]}
    rows = [{"model": "trained", "value": 0.25}, {"model": "vae,noisy", "value": -1}]
    io.write_csv(tmp_path / "r.csv", rows, ["model", "value"])
    assert io.read_csv(tmp_path / "r.csv") == [{"model": "trained", "value": "0.25"},
                                               {"model": "vae,noisy", "value": "-1"}]
    assert io.read_csv(tmp_path / "absent.csv") == []
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), rng.integers(0, 256, (4, 6), dtype=np.uint8)):
        io.write_png(tmp_path / "i.png", image)
        np.testing.assert_array_equal(io.read_png(tmp_path / "i.png"), image)


def test_safetensors_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"w": rng.normal(size=(3, 4)).astype(np.float32).T,  # not C-contiguous: stored as its values
               "half": rng.normal(size=(5,)).astype(np.float16),
               "bf16": rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16),
               "steps": np.arange(4, dtype=np.int64), "scalar": np.array(2.5, np.float32),
               "mask": rng.random((3, 3)) > 0.5}
    io.write_safetensors(tmp_path / "t.safetensors", tensors, metadata={"format": "pt", "width_mult": "0.5"})
    back, metadata = io.read_safetensors(tmp_path / "t.safetensors")
    assert metadata == {"format": "pt", "width_mult": "0.5"}
    assert back.keys() == tensors.keys()
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    io.write_safetensors(tmp_path / "plain.safetensors", {"x": np.ones(2, np.float32)})
    assert io.read_safetensors(tmp_path / "plain.safetensors")[1] == {}


def _valid_file(tmp_path) -> bytes:
    io.write_safetensors(tmp_path / "ok.safetensors", {"a": np.arange(64, dtype=np.float32)}, {"k": "v"})
    return (tmp_path / "ok.safetensors").read_bytes()


@pytest.mark.parametrize("damage", [
    lambda b: b[:-8],  # the last tensor cut short
    lambda b: b[:5],  # not even the header length
    lambda b: b"",  # empty
    lambda b: b[:8] + b"{not json" + b[17:],  # a broken header
    lambda b: b"\x89PNG\r\n\x1a\n" + bytes(64),  # another format
    lambda b: json.dumps({"a": 1}).encode(),  # JSON text
], ids=["truncated", "no-header", "empty", "broken-header", "png", "json"])
def test_truncated_or_foreign_files_raise_one_value_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(damage(_valid_file(tmp_path)))
    with pytest.raises(ValueError, match=r"^probe weights .*bad\.safetensors are unreadable \(truncated or not "
                                         r"safetensors\): "):
        io.read_safetensors(path, what="probe weights")


def test_missing_files_and_directories_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VAE weights file .*nope\.safetensors does not exist"):
        io.read_safetensors(tmp_path / "nope.safetensors", what="VAE weights")
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(FileNotFoundError, match=r"d\.safetensors is not a file"):
        io.read_safetensors(tmp_path / "d.safetensors")
