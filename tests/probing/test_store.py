"""The activation store and the atomic writers under it survive kills and power loss, and never follow a path
that index.json hands them out of the store."""
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from jaxprobe import io
from jaxprobe.probing import store


def _chunk(seed: int, rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a/b": rng.normal(size=(rows, 4)).astype(np.float32), "img": rng.integers(0, 256, (rows, 2, 2, 3),
                                                                                     dtype=np.uint8)}


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_killed_writers_leftovers_are_removed_and_the_listed_chunk_kept(tmp_path):
    d = tmp_path / "acts"
    first = _chunk(0)
    store.ActivationStore(d).write_chunk(0, first, meta={"k": 1})
    (d / ".chunk_000001.xyz").mkdir()  # atomic_dir's temp dir, killed mid-write
    (d / ".chunk_000001.xyz" / "a%2Fb.npy").write_bytes(b"half")
    shutil.copytree(d / "chunk_000000", d / "chunk_000002")  # renamed into place, killed before the index write
    (d / ".chunk_000000.old").mkdir()  # atomic_dir's swap, killed before the old copy was removed
    (d / ".index.json.tmp").write_text("{")  # atomic_path's temp file
    (d / "chunk_0000003").mkdir()  # not this store's naming: not ours to delete
    (d / "notes.txt").write_text("mine")

    st = store.ActivationStore(d)  # a restarted run
    assert st.chunks() == [0] and st.meta() == {0: {"k": 1}}
    st.write_chunk(1, _chunk(1))
    assert {p.name for p in d.iterdir()} == {"chunk_000000", "chunk_000001", "chunk_0000003", "index.json",
                                             "notes.txt"}
    st = store.ActivationStore(d)
    for name, arr in first.items():
        got = st.read(name, mmap=False)
        assert got.dtype == arr.dtype and got[:3].tobytes() == arr.tobytes()


def test_a_reader_opening_the_store_deletes_nothing(tmp_path):
    """A reader may open the store while a writer works: only a writer removes leftovers."""
    d = tmp_path / "acts"
    store.ActivationStore(d).write_chunk(0, _chunk(0))
    shutil.copytree(d / "chunk_000000", d / "chunk_000001")  # a live writer's chunk, its index write still to come
    (d / ".chunk_000002.abc12345").mkdir()
    store.ActivationStore(d).read("a/b")
    assert (d / "chunk_000001").is_dir() and (d / ".chunk_000002.abc12345").is_dir()


def test_a_kill_mid_rewrite_leaves_the_chunk_unlisted_not_listed_and_missing(tmp_path, monkeypatch):
    d = tmp_path / "acts"
    st = store.ActivationStore(d)
    st.write_chunk(0, _chunk(0))
    st.write_chunk(1, _chunk(1))
    real_replace = os.replace

    def die_mid_swap(src, dst):  # the old chunk is moved aside; the kill comes before the new one moves in
        if Path(src).name.startswith(".chunk_000001.") and not Path(src).name.endswith(".old"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_mid_swap)
    with pytest.raises(KeyboardInterrupt):
        st.write_chunk(1, _chunk(2))
    monkeypatch.setattr(os, "replace", real_replace)
    st = store.ActivationStore(d)
    assert st.chunks() == [0]
    st.write_chunk(1, _chunk(2))
    expected = np.concatenate([_chunk(0)["a/b"], _chunk(2)["a/b"]])
    assert st.read("a/b").tobytes() == expected.tobytes() and not (d / ".chunk_000001.old").exists()


def _tamper(d: Path, **changes) -> None:
    index = json.loads((d / "index.json").read_text())
    for key, value in changes.items():
        index[key] = value
    (d / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("escape", ["relative", "absolute", "symlink", "chunk_key"])
def test_index_entries_that_leave_the_store_are_refused(tmp_path, monkeypatch, escape):
    d = tmp_path / "acts"
    store.ActivationStore(d).write_chunk(0, _chunk(0))
    outside = tmp_path / "passwd"
    np.save(f"{outside}.npy", np.zeros((3, 4), np.float32))
    if escape == "relative":
        _tamper(d, names={"a/b": "../../passwd", "img": "img"})
    elif escape == "absolute":
        _tamper(d, names={"a/b": str(outside), "img": "img"})
    elif escape == "symlink":
        (d / "chunk_000000" / "a%2Fb.npy").unlink()
        (d / "chunk_000000" / "a%2Fb.npy").symlink_to(f"{outside}.npy")
    else:
        index = json.loads((d / "index.json").read_text())
        _tamper(d, chunks={"-1": index["chunks"]["0"]})
    loaded = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda path, *a, **kw: loaded.append(Path(path)) or real_load(path, *a, **kw))
    bad = {"chunk_key": "'-1'", "symlink": "'a/b'"}.get(escape, "'a/b'")
    with pytest.raises(ValueError, match=rf"index\.json.*{bad}"):
        store.ActivationStore(d).read("a/b")
    assert not [p for p in loaded if not p.resolve().is_relative_to(d.resolve())]


def _recorder(monkeypatch) -> list[tuple]:
    """Record ('fsync', inode) and ('replace', inode of src) in call order; both still do their work."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    calls = _recorder(monkeypatch)
    io.write_json(tmp_path / "x.json", {"a": 1})
    file, parent = os.stat(tmp_path / "x.json").st_ino, os.stat(tmp_path).st_ino
    assert calls.index(("fsync", file)) < calls.index(("replace", file)) < calls.index(("fsync", parent))


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_dir_fsyncs_every_file_before_the_rename_and_the_parent_after(tmp_path, monkeypatch, existing):
    if existing:
        with io.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "old.txt").write_text("old")
    calls = _recorder(monkeypatch)
    with io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    d = tmp_path / "d"
    moved_in = calls.index(("replace", os.stat(d).st_ino))
    for path in (d / "a.txt", d / "sub" / "b.txt", d / "sub", d):
        assert calls.index(("fsync", os.stat(path).st_ino)) < moved_in, path
    assert ("fsync", os.stat(tmp_path).st_ino) in calls[moved_in + 1:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_directories_get_the_umask_modes(tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        io.write_json(tmp_path / "new" / "x.json", {"a": 1})
        io.write_png(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
        with io.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f.txt").write_text("f")
            (tmp / "sub").mkdir()
        store.ActivationStore(tmp_path / "acts").write_chunk(0, _chunk(0))
    finally:
        os.umask(previous)
    for path in (tmp_path / "new" / "x.json", tmp_path / "x.png", tmp_path / "d" / "f.txt",
                 tmp_path / "acts" / "index.json", tmp_path / "acts" / "chunk_000000" / "img.npy"):
        assert _mode(path) == file_mode, path
    for path in (tmp_path / "new", tmp_path / "d", tmp_path / "d" / "sub", tmp_path / "acts" / "chunk_000000"):
        assert _mode(path) == dir_mode, path


def test_process_parts_merge_in_row_order_and_a_chunk_needs_every_part(tmp_path):
    """Two hosts write their rows of each chunk into their own part; reads merge them; a missing part or row is
    not a complete chunk."""
    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    hosts = [store.ProcessStores(tmp_path, p, 2) for p in range(2)]
    hosts[1].write_chunk(0, {"a": x[2:4]}, {}, row_from=2)  # chunk 0 = rows 0..3, host 1 first
    assert not hosts[0].has_chunk(0)
    hosts[0].write_chunk(0, {"a": x[0:2]}, {}, row_from=0)
    hosts[0].write_chunk(1, {"a": x[4:6]}, {}, row_from=0)  # chunk 1 = rows 4..5, both hold them
    hosts[1].write_chunk(1, {"a": x[4:6]}, {}, row_from=0)
    assert hosts[0].has_chunk(0) and hosts[1].has_chunk(1)
    np.testing.assert_array_equal(hosts[1].read("a"), x)
    np.testing.assert_array_equal(hosts[1].read("a", rows=[5, 0, 3]), x[[5, 0, 3]])
    assert (tmp_path / "process_001" / "chunk_000000").is_dir()  # hosts never write the same file
    hosts[1].write_chunk(0, {"a": x[3:4]}, {}, row_from=3)  # row 2 of chunk 0 is now nobody's
    with pytest.raises(ValueError, match=r"chunk 0 of 'a' misses rows \[2\]"):
        hosts[0].read("a")


def test_reading_rows_takes_them_from_their_chunks_in_the_order_asked(tmp_path):
    act_store = store.ActivationStore(tmp_path)
    chunks = [_chunk(seed, rows) for seed, rows in ((0, 3), (1, 2), (2, 4))]
    for i, arrays in enumerate(chunks):
        act_store.write_chunk(i, arrays)
    every = np.concatenate([a["a/b"] for a in chunks])
    for rows in ([8, 0, 4, 3], np.arange(3, 9), [], [2, 2]):
        np.testing.assert_array_equal(act_store.read("a/b", rows=rows), every[np.asarray(rows, int)])
    assert act_store.row_bytes("a/b") == 16 and act_store.row_bytes("img") == 12
    with pytest.raises(IndexError, match=r"rows 0..9 asked, the store holds 9"):
        act_store.read("a/b", rows=[0, 9])
