"""Label sets (Cityscapes 19 / 27, palette) and the documented Waymo -> Cityscapes mapping."""
from __future__ import annotations

import numpy as np
import pytest

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training import labels as L


def test_cityscapes_sets_and_palette():
    assert len(L.CITYSCAPES19_NAMES) == 19 and len(L.CITYSCAPES27_NAMES) == 27
    assert L.CITYSCAPES19_NAMES[0] == "road" and L.CITYSCAPES19_NAMES[13] == "car" and L.CITYSCAPES19_NAMES[18] == "bicycle"
    assert L.CITYSCAPES27_NAMES[0] == "road" and L.CITYSCAPES27_NAMES[26] == "bicycle" and L.CITYSCAPES27_NAMES[2] == "parking"
    assert L.CITYSCAPES19_PALETTE.shape == (19, 3) and L.CITYSCAPES19_PALETTE.dtype == np.uint8
    np.testing.assert_array_equal(L.CITYSCAPES19_PALETTE[0], [128, 64, 128])  # road
    np.testing.assert_array_equal(L.CITYSCAPES19_PALETTE[10], [70, 130, 180])  # sky
    np.testing.assert_array_equal(L.CITYSCAPES19_PALETTE[13], [0, 0, 142])  # car
    names, pal = L.label_set("27")
    assert names == L.CITYSCAPES27_NAMES and pal.shape == (27, 3)
    with pytest.raises(DriveSegmentError):
        L.label_set("ade20k")


def test_labelid_luts():
    to19, to27 = L.cityscapes_labelid_to_trainid(), L.cityscapes_labelid_to_27()
    assert to19[7] == 0 and to19[26] == 13 and to19[33] == 18 and to19[9] == 255 and to19[0] == 255
    assert to27[7] == 0 and to27[33] == 26 and to27[6] == 255
    # every 19-class id comes from exactly one labelId
    assert sorted(to19[to19 != 255].tolist()) == list(range(19))


def test_waymo_mapping_rows():
    lut = L.load_waymo_mapping()
    w = {n: i for i, n in enumerate(L.WAYMO_NAMES)}
    cs = {n: i for i, n in enumerate(L.CITYSCAPES19_NAMES)}
    assert lut[w["LANE_MARKER"]] == lut[w["ROAD_MARKER"]] == lut[w["ROAD"]] == cs["road"]
    assert lut[w["CYCLIST"]] == lut[w["MOTORCYCLIST"]] == cs["rider"]
    assert lut[w["PEDESTRIAN"]] == cs["person"] and lut[w["CAR"]] == cs["car"] and lut[w["SIGN"]] == cs["traffic sign"]
    for void in ("UNDEFINED", "EGO_VEHICLE", "STATIC", "DYNAMIC", "BIRD"):
        assert lut[w[void]] == 255
    assert np.all(lut[29:] == 255)
    lut27 = L.load_waymo_mapping(target="cityscapes27")
    assert L.CITYSCAPES27_NAMES[lut27[w["TRAILER"]]] == "trailer" and L.CITYSCAPES27_NAMES[lut27[w["CAR"]]] == "car"
    sem = np.array([[20, 21, 2], [0, 25, 10]], np.uint8)
    np.testing.assert_array_equal(L.map_waymo_labels(sem, lut), [[0, 0, 13], [255, 10, 12]])


def test_waymo_mapping_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  0: {name: UNDEFINED, cityscapes19: 255, cityscapes27: 255}\n")
    with pytest.raises(DriveSegmentError, match="Waymo class 1"):
        L.load_waymo_mapping(bad)
    with pytest.raises(DriveSegmentError, match="not found"):
        L.load_waymo_mapping(tmp_path / "missing.yaml")
    with pytest.raises(DriveSegmentError, match="frame.json"):
        L.load_waymo_eval(tmp_path)


def test_load_waymo_eval_real(waymo_dir):
    import json

    items = L.load_waymo_eval(waymo_dir)
    meta = json.loads((waymo_dir / "frame.json").read_text())
    assert [n for n, _, _ in items] == list(meta["cameras"])
    for name, rgb, gt in items:
        cam = meta["cameras"][name]
        assert rgb.shape == (cam["height"], cam["width"], 3) and rgb.dtype == np.uint8
        assert gt.shape == rgb.shape[:2] and gt.dtype == np.uint8
        values = set(np.unique(gt).tolist())
        assert values <= set(range(19)) | {255}
        expected = {int(v) for v in L.load_waymo_mapping()[cam["classes_present"]]} - {255}
        assert values - {255} == expected
    front = dict((n, g) for n, _, g in items)["FRONT"]
    # road and sky are large in the FRONT image; the sky is in the upper half, road in the lower.
    ys_sky = np.nonzero(front == 10)[0]
    ys_road = np.nonzero(front == 0)[0]
    assert ys_sky.size > 10000 and ys_road.size > 10000 and ys_sky.mean() < ys_road.mean()
