"""Pseudo-labels: segment pooling, k-means pseudo-classes, partial label maps, the offline run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.evaluation import evaluate_predictions
from drive_segment_ros.pseudo_labeling import (
    PseudoLabelConfig,
    assign_pseudo_classes,
    bilinear_taps,
    feature_cell_size,
    partial_label_map,
    pool_segment_features,
)
from drive_segment_training.kmeans import fit_pseudo_classes


def test_pool_hand_computed_means():
    # feature map at pixel resolution (cell 1): pooled feature = plain mean over the mask
    F = np.zeros((2, 3, 4), np.float32)
    F[0] = np.arange(12).reshape(3, 4)
    F[1] = 10.0
    seg = np.full((3, 4), -1, np.int32)
    seg[0, :2] = 5        # values 0, 1      -> mean 0.5
    seg[1:, 3] = 2        # values 7, 11     -> mean 9
    seg[2, 0] = 9         # value 8
    ids, feats, counts = pool_segment_features(torch.from_numpy(F), seg)
    np.testing.assert_array_equal(ids, [2, 5, 9])
    np.testing.assert_array_equal(counts, [2, 2, 1])
    np.testing.assert_allclose(feats, [[9.0, 10.0], [0.5, 10.0], [8.0, 10.0]])
    assert feats.dtype == np.float32 and ids.dtype == np.int32
    ids, feats, _ = pool_segment_features(F, seg, normalize=True, min_pixels=2)
    np.testing.assert_array_equal(ids, [2, 5])
    np.testing.assert_allclose(feats[1], np.array([0.5, 10.0]) / np.hypot(0.5, 10.0), rtol=1e-6)


def test_pool_equals_mean_of_torch_bilinear_upsampling():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(6, 5, 7)).astype(np.float32)
    seg = rng.integers(-1, 8, size=(40, 56)).astype(np.int32)
    ids, feats, counts = pool_segment_features(F, seg)
    up = torch.nn.functional.interpolate(torch.from_numpy(F)[None], size=(40, 56), mode="bilinear",
                                         align_corners=False)[0].numpy()
    for i, s in enumerate(ids):
        np.testing.assert_allclose(feats[i], up[:, seg == s].mean(axis=1), atol=1e-5)
        assert counts[i] == (seg == s).sum()


def test_pool_with_padded_feature_grid():
    # extract_features pads bottom/right to the stride: 20 rows, stride 8 -> 3 cells of 8 px,
    # the map covers 24 rows. A pixel in row 19 sits at feature row (19.5/8 - 0.5) = 1.9375.
    F = np.zeros((1, 3, 1), np.float32)
    F[0, :, 0] = [0.0, 1.0, 5.0]
    seg = np.full((20, 1), -1, np.int32)
    seg[19, 0] = 0
    _, feats, _ = pool_segment_features(F, seg, cell_size=(8.0, 8.0))
    assert feats[0, 0] == pytest.approx(1.0 + 0.9375 * 4.0)
    i0, i1, frac = bilinear_taps(np.array([0, 19]), 3, 8.0)
    np.testing.assert_array_equal(i0, [0, 1]) and np.testing.assert_array_equal(i1, [1, 2])

    class _B:
        stride = 16

    assert feature_cell_size(_B, (900, 1600), 1024) == (pytest.approx(16 * 900 / 576), pytest.approx(16 * 1600 / 1024))
    assert feature_cell_size(_B, (375, 1242), None) == (16.0, 16.0)


def _materials_scene(seed, noise=0.05):
    """Feature map (8, 12, 16) of 3 known 'materials' in 4x4-cell tiles + small noise, and a
    segment map (48, 64) whose segments are the tiles' inner 2x2 cells (pixels 6..9 of each
    16-px tile), so their bilinear taps never reach a neighbouring tile."""
    rng = np.random.default_rng(seed)
    materials = np.eye(3, 8, dtype=np.float32) * 3.0 + 0.5
    tiles = rng.integers(0, 3, size=(3, 4))
    tiles[0, :3] = [0, 1, 2]
    cells = np.kron(tiles, np.ones((4, 4), int))
    F = materials[cells].transpose(2, 0, 1) + rng.normal(scale=noise, size=(8, 12, 16)).astype(np.float32)
    seg = np.full((48, 64), -1, np.int32)
    truth = {}
    for ty in range(3):
        for tx in range(4):
            sid = 100 + ty * 4 + tx
            seg[ty * 16 + 6: ty * 16 + 10, tx * 16 + 6: tx * 16 + 10] = sid
            truth[sid] = tiles[ty, tx]
    return F, seg, truth, materials


def test_materials_recovered_by_kmeans_and_partial_map():
    F, seg, truth, materials = _materials_scene(0, noise=0.0)
    ids, feats, _ = pool_segment_features(F, seg, cell_size=(4.0, 4.0))
    np.testing.assert_allclose(feats, materials[[truth[i] for i in ids]], atol=1e-6)  # exact without noise
    feats_all, truth_all, maps = [], [], []
    for seed in range(4):
        F, seg, truth, materials = _materials_scene(seed)
        ids, feats, counts = pool_segment_features(F, seg, cell_size=(4.0, 4.0))
        assert np.all(counts == 16)
        # pooled = the tile's material up to the averaged noise (sd 0.05 per cell)
        np.testing.assert_allclose(feats, materials[[truth[i] for i in ids]], atol=0.2)
        feats_all.append(feats)
        truth_all.append(np.array([truth[i] for i in ids]))
        maps.append((seg, ids))
    X = np.concatenate(feats_all)
    cen = fit_pseudo_classes(X, k=3, seed=0, n_init=4)
    assert cen.shape == (3, 8) and cen.dtype == np.float32
    cls = assign_pseudo_classes(X, cen)
    res = evaluate_predictions([cls], [np.concatenate(truth_all)], n_pred=3, n_gt=3)
    assert res["mIoU"] == 1.0  # exact recovery up to a permutation
    seg, ids = maps[0]
    labels = partial_label_map(seg, ids, assign_pseudo_classes(feats_all[0], cen))
    assert labels.dtype == np.uint8 and labels.shape == seg.shape
    assert np.all((labels == 255) == (seg < 0))  # 255 exactly outside segments
    for sid in ids:
        assert len(np.unique(labels[seg == sid])) == 1


def test_partial_label_map_drops_unlisted_segments_and_errors():
    seg = np.array([[-1, 0, 1], [2, 2, -1]], np.int32)
    out = partial_label_map(seg, np.array([2, 0]), np.array([7, 3]))
    np.testing.assert_array_equal(out, [[255, 3, 255], [7, 7, 255]])
    with pytest.raises(DriveSegmentError):
        partial_label_map(seg, np.array([0]), np.array([255]))
    with pytest.raises(DriveSegmentError):
        partial_label_map(seg, np.array([0, 1]), np.array([1]))
    np.testing.assert_array_equal(partial_label_map(seg, np.zeros(0), np.zeros(0)), np.full((2, 3), 255))


def test_kmeans_errors_and_assignment():
    with pytest.raises(DriveSegmentError, match="only 2 segment features"):
        fit_pseudo_classes(np.zeros((2, 4)), k=3)
    with pytest.raises(DriveSegmentError, match="distinct"):
        fit_pseudo_classes(np.zeros((10, 4)), k=3)
    with pytest.raises(DriveSegmentError, match="NaN"):
        fit_pseudo_classes(np.full((10, 4), np.nan), k=3)
    cen = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    np.testing.assert_array_equal(assign_pseudo_classes(np.array([[1.0, 5.0], [6.0, -1.0]]), cen), [0, 1])
    with pytest.raises(DriveSegmentError):
        assign_pseudo_classes(np.zeros((2, 3)), cen)
    with pytest.raises(DriveSegmentError, match="k must"):
        PseudoLabelConfig(k=300)
    with pytest.raises(DriveSegmentError, match="unknown"):
        PseudoLabelConfig.from_dict({"kk": 3})


def test_default_config_file_loads():
    from drive_segment_training.pseudo_labels import DEFAULT_CONFIG_PATH

    cfg = PseudoLabelConfig.from_yaml(DEFAULT_CONFIG_PATH)
    assert cfg.k == 30 and cfg.backbone == "vit_small_patch16_224.dino"  # the paper's DINO ViT-S/16
    assert cfg.proposal_config() is not None and cfg.projection_config() is not None


# ----------------------------------------------------------------------------- real drives
FAST = {"k": 8, "n_init": 1, "max_side": 384, "min_segment_pixels": 50}


@pytest.fixture(scope="module")
def real_run(kitti_bag, nuscenes_bag, tmp_path_factory):
    """One pseudo-labelling run over the imported KITTI + nuScenes bags (all 7 camera frames)."""
    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_training.pseudo_labels import run_pseudo_labelling

    backbone = build_backbone("mobilenetv2_deepsort")
    out = tmp_path_factory.mktemp("pseudo")
    index = run_pseudo_labelling([kitti_bag, nuscenes_bag], out, config=dict(FAST), backbone_module=backbone)
    return out, index, backbone, (kitti_bag, nuscenes_bag)


def test_real_run_outputs(real_run):
    import cv2

    from drive_segment_ros import pseudo_label_store as store
    from drive_segment_training.datasets import read_image

    out, index, backbone, _ = real_run
    on_disk = json.loads((out / "index.json").read_text())
    assert on_disk["k"] == 8 and on_disk["ignore_index"] == 255 and on_disk["format"] == 2
    assert on_disk["backbone"] == "mobilenetv2_deepsort" and on_disk["self_supervised"] is False
    assert "NOT self-supervised" in on_disk["backbone_description"]
    assert on_disk["settings"]["k"] == 8 and on_disk["settings"]["max_side"] == 384  # the run's settings
    frames = store.load_pseudo_label_index(out)["frames"]
    assert len(frames) == 7 == on_disk["n_frames"] == len(index["frames"])  # 1 KITTI camera + 6 nuScenes cameras
    assert sum("kitti" in f["name"] for f in frames) == 1
    centroids = np.load(out / "centroids.npy")
    assert centroids.shape == (8, backbone.embed_dim) and centroids.dtype == np.float32
    np.testing.assert_array_equal(np.load(out / on_disk["centroids"]), centroids)
    used = np.zeros(8, bool)
    total_labelled = 0
    for f in frames:
        img = read_image(out, f)
        label = cv2.imread(str(out / f["label"]), cv2.IMREAD_UNCHANGED)
        seg = store.read_segments(out / f["segments"])
        assert f["segments"].endswith(".png") and f["label"].startswith(on_disk["run_dir"] + "/labels/")
        assert label.dtype == np.uint8 and label.shape == seg.shape == img.shape[:2]
        assert seg.dtype == np.int32
        assert np.all(label[seg < 0] == 255)  # nothing labelled outside LiDAR segments
        vals = np.unique(label)
        assert set(vals.tolist()) <= set(range(8)) | {255}
        used[vals[vals < 8]] = True
        assert f["coverage"] == pytest.approx((label != 255).mean())
        total_labelled += int((label != 255).sum())
        assert 0.02 < f["coverage"] < 0.9 and f["n_segments"] >= 5
        for sid in np.unique(seg[label != 255])[:20]:  # one pseudo-class per segment
            assert len(np.unique(label[seg == sid])) == 1
        assert (out / "previews" / f"{f['name']}.jpg").is_file()  # preview_first = 10 covers these 7
        assert f["stamp_ns"] > 0 and f["image_topic"]
        assert f["image_ref"]["topic"] == f["image_topic"] and f["image_ref"]["stamp_ns"] == f["stamp_ns"]
    assert used.sum() == 8  # every pseudo-class is used somewhere
    assert sum(on_disk["cluster_pixel_counts"]) == total_labelled
    cfg = PseudoLabelConfig.from_yaml(out / "pseudo_label_config.yaml")
    assert cfg.k == 8 and cfg.max_side == 384 and cfg.proposals and cfg.projection


def test_real_run_is_resumable_and_labeler_reproduces(real_run, monkeypatch, caplog):
    import logging

    import cv2

    from drive_segment_ros.pseudo_labeling import PseudoLabeler
    from drive_segment_training.pseudo_labels import run_pseudo_labelling

    out, index, backbone, bags = real_run
    from drive_segment_ros import pseudo_label_store as store

    before = {f["name"]: cv2.imread(str(out / f["label"]), cv2.IMREAD_UNCHANGED) for f in index["frames"]}
    centroids = np.load(out / "centroids.npy")

    # the online labeller (ROS pseudo_label_node) writes the same map as the offline run
    from drive_segment_training.drives import DriveReader

    frame = next(iter(DriveReader(bags[0], progress=False)))
    labeler = PseudoLabeler.from_dir(out, backbone=backbone)
    label, seg = labeler.label_frame(frame)
    kitti_name = [n for n in before if "kitti" in n][0]
    np.testing.assert_array_equal(label, before[kitti_name])
    np.testing.assert_array_equal(seg, store.read_segments(out / "segments" / f"{kitti_name}.png"))

    calls = []
    original = PseudoLabeler.segment_features_batch
    monkeypatch.setattr(PseudoLabeler, "segment_features_batch",
                        lambda self, frs: calls.extend(f.name for f in frs) or original(self, frs))
    # second run through the CLI (same settings from a YAML): every frame comes from the cache
    import argparse

    import yaml

    from drive_segment_training.pseudo_labels import add_cli

    (out.parent / "pseudo_fast_config.yaml").write_text(yaml.safe_dump({k: v for k, v in FAST.items() if k != "k"}))
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["pseudo-label", *map(str, bags), "--out", str(out), "-k", "8",
                              "--config", str(out.parent / "pseudo_fast_config.yaml"), "--backbone", "mobilenetv2_deepsort"])
    assert args.func(args) == 0
    assert calls == []
    np.testing.assert_array_equal(np.load(out / "centroids.npy"), centroids)
    for f in store.load_pseudo_label_index(out)["frames"]:
        np.testing.assert_array_equal(cv2.imread(str(out / f["label"]), cv2.IMREAD_UNCHANGED), before[f["name"]])

    # a changed projection config invalidates the cache (logged) and recomputes
    with caplog.at_level(logging.INFO, logger="drive_segment_training.pseudo_labels"):
        with pytest.raises(DriveSegmentError, match="segment features for k=8"):
            run_pseudo_labelling([bags[0]], out, config={**FAST, "projection": {"min_pixels": 10 ** 7}},
                                 backbone_module=backbone, max_frames=1)
    assert calls == [frame.name]
    assert "another configuration" in caplog.text


def test_labeler_without_centroids_and_bad_inputs(tmp_path):
    from drive_segment_ros.pseudo_labeling import PseudoLabeler
    from drive_segment_training.pseudo_labels import run_pseudo_labelling

    with pytest.raises(DriveSegmentError, match="no pseudo-label model"):
        PseudoLabeler.from_dir(tmp_path)
    with pytest.raises(DriveSegmentError, match="not found"):
        run_pseudo_labelling([tmp_path / "nope"], tmp_path / "out", backbone_module=object())
