"""`labels.check_saved`: a rerun of the label stage is compared with the saved labels by content, not by path."""
import pytest

from jaxprobe import io
from jaxprobe.scene import labels


def _record(path, sha):
    return {"saliency": {"source": "exact", "sha256": ""}, "depth": {"source": f"file {path}", "sha256": sha}}


def test_labels_of_the_same_content_from_another_folder_are_the_saved_ones(tmp_path):
    assert labels.check_saved(tmp_path, _record("/a/depth.npy", "ab" * 32)) is False  # nothing saved yet
    io.write_json(tmp_path / labels.SOURCES_FILE, _record("/a/depth.npy", "ab" * 32))
    assert labels.check_saved(tmp_path, _record("/b/copy/depth.npy", "ab" * 32)) is True


def test_labels_of_other_content_are_refused_naming_only_the_tasks_that_differ(tmp_path):
    io.write_json(tmp_path / labels.SOURCES_FILE, _record("/a/depth.npy", "ab" * 32))
    with pytest.raises(ValueError) as e:
        labels.check_saved(tmp_path, _record("/a/depth.npy", "cd" * 32))
    assert str(e.value) == (f"{tmp_path} holds other depth labels than this run's (depth: file sha256 abababababab, "
                            "now file sha256 cdcdcdcdcdcd). The workdir's probes were fitted on them: use a new "
                            "--workdir (or delete its labels/, probe_checkpoints/, probes/ and scores/)")
    with pytest.raises(ValueError, match=r"holds other saliency labels than this run's \(saliency: exact, now "
                                         r"labelers sha256 efefefefefef\)"):
        labels.check_saved(tmp_path, {**_record("/a/depth.npy", "ab" * 32),
                                      "saliency": {"source": "labelers /x", "sha256": "ef" * 32}})
