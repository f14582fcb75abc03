"""The one pseudo-label dataset layout (drive_segment_ros.pseudo_label_store): atomic writes, round trips."""
import json

import numpy as np
import pytest

from drive_segment_ros import pseudo_label_store as store
from drive_segment_ros.types import DriveSegmentError


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_failed_replace_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "index.json"
    store.write_json(target, {"k": 1})

    def broken_replace(src, dst):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(OSError, match="injected"):
        store.write_json(target, {"k": 2})
    assert json.loads(target.read_text()) == {"k": 1}  # old content intact
    assert _leftovers(tmp_path) == []  # temporary removed


def test_error_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    real_write = store._write_file

    def half_then_fail(path, data):
        real_write(path, data[: len(data) // 2])  # a partial file exists for a moment ...
        raise OSError("killed mid-write (injected)")

    monkeypatch.setattr(store, "_write_file", half_then_fail)
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with pytest.raises(OSError, match="injected"):
        store.write_png(tmp_path / "labels" / "a.png", label)
    with pytest.raises(OSError, match="injected"):
        store.write_npy(tmp_path / "segments" / "a.npy", label.astype(np.int32))
    # ... but never under the final name, and the temporary is gone
    assert list((tmp_path / "labels").iterdir()) == [] and list((tmp_path / "segments").iterdir()) == []


def test_frame_round_trip_and_index_checks(tmp_path):
    root = store.make_dirs(tmp_path / "pl")
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    label = np.full((5, 6), 255, np.uint8)
    label[1:3, 2:4] = 7
    seg = np.where(label == 7, 3, -1).astype(np.int32)
    name = store.safe_name("bag one/cam:0 frame")
    assert name == "bag_one_cam_0_frame"
    rec = store.frame_record(name, "bag", "/cam", 5, 6)
    store.write_png(root / rec["image"], rgb)
    store.write_png(root / rec["label"], label)
    store.write_npy(root / rec["segments"], seg)
    store.write_json(root / store.INDEX_FILE, {"k": 8, "frames": [rec]})
    index = store.load_pseudo_label_index(root)
    assert index["ignore_index"] == 255 and index["frames"][0]["name"] == name
    img2, lab2, seg2 = store.read_frame(root, index["frames"][0])
    np.testing.assert_array_equal(img2, rgb)
    np.testing.assert_array_equal(lab2, label)
    np.testing.assert_array_equal(seg2, seg)
    (root / rec["segments"]).unlink()
    with pytest.raises(DriveSegmentError, match="not found"):
        store.load_pseudo_label_index(root)
    with pytest.raises(DriveSegmentError, match="no pseudo-label model"):
        store.read_labeler_files(root)
