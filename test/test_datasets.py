"""Pseudo-label datasets (training/datasets.py): layout, alignment, determinism, real frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.augment import AugmentConfig
from drive_segment_training.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InfiniteSampler,
    PseudoLabelDataset,
    load_pseudo_label_index,
    make_synthetic_pseudo_label_dir,
    read_frame,
)

PALETTE = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230]], np.float32)


@pytest.fixture(scope="module")
def pl_dir(tmp_path_factory):
    return make_synthetic_pseudo_label_dir(tmp_path_factory.mktemp("pl") / "pl", n_frames=3, size_hw=(60, 100),
                                           k=3, shapes_per_frame=5, seed=3, noise=0.0)


def _denorm(image: torch.Tensor) -> np.ndarray:
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * s + m) * 255.0).permute(1, 2, 0).numpy()


def test_index_validation(pl_dir, tmp_path):
    index = load_pseudo_label_index(pl_dir)
    assert index["k"] == 3 and len(index["frames"]) == 3 and index["ignore_index"] == 255
    with pytest.raises(DriveSegmentError, match="does not exist"):
        load_pseudo_label_index(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DriveSegmentError, match="pseudo-label"):
        load_pseudo_label_index(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    data = json.loads((pl_dir / "index.json").read_text())
    (bad / "index.json").write_text(json.dumps(data))  # files are relative to bad/: missing
    with pytest.raises(DriveSegmentError, match="not found"):
        load_pseudo_label_index(bad)
    data["frames"] = []
    (bad / "index.json").write_text(json.dumps(data))
    with pytest.raises(DriveSegmentError, match="no frames"):
        load_pseudo_label_index(bad)


def test_eval_item_is_exact(pl_dir):
    ds = PseudoLabelDataset(pl_dir, crop_size=(32, 48), train=False)
    img, lab, seg = read_frame(pl_dir, ds.frames[1])
    item = ds[1]
    assert item["image"].shape == (3, 60, 100) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["segments"].dtype == torch.int64
    np.testing.assert_allclose(_denorm(item["image"]), img, atol=1e-3)
    np.testing.assert_array_equal(item["label"].numpy(), lab)
    np.testing.assert_array_equal(item["segments"].numpy(), seg)
    assert item["name"] == "synthetic_001" and item["index"] == 1 and bool(item["valid"].all())
    # Synthetic ground truth: segment j has class j % 3 and colour PALETTE[j % 3].
    on = seg >= 0
    np.testing.assert_array_equal(lab[on], seg[on] % 3)
    np.testing.assert_allclose(img[on], PALETTE[seg[on] % 3], atol=1)


def test_train_items_stay_aligned_and_are_seeded(pl_dir):
    aug = AugmentConfig(scale_range=(0.6, 1.6), hflip_prob=0.5, photometric=False, copy_paste_prob=0.0)
    ds = PseudoLabelDataset(pl_dir, crop_size=(40, 56), train=True, augment=aug, seed=7)
    for i in range(12):
        item = ds[i]
        assert item["image"].shape == (3, 40, 56) and item["label"].shape == (40, 56)
        lab, seg, valid = item["label"].numpy(), item["segments"].numpy(), item["valid"].numpy()
        on = seg >= 0
        # Nearest resampling of both maps: labels still equal segment id % k, ignore elsewhere.
        np.testing.assert_array_equal(lab[on], seg[on] % 3)
        assert np.all(lab[~on] == 255)
        # Image follows: pixels well inside a segment have that class's colour.
        inner = cv2.erode(on.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        rgb = _denorm(item["image"])
        if inner.any():
            err = np.abs(rgb[inner] - PALETTE[seg[inner] % 3]).max(1)
            assert np.median(err) < 10
        assert np.all(seg[~valid] == -1)
    # Deterministic: same seed, same sample; another epoch (i + len) re-augments.
    a, b = ds[4], PseudoLabelDataset(pl_dir, crop_size=(40, 56), augment=aug, seed=7)[4]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    c = ds[4 + len(ds)]
    assert c["name"] == a["name"] and not torch.equal(a["image"], c["image"])
    d = PseudoLabelDataset(pl_dir, crop_size=(40, 56), augment=aug, seed=8)[4]
    assert not torch.equal(a["image"], d["image"])


def test_copy_paste_in_dataset_adds_segments(pl_dir):
    aug = AugmentConfig(scale_range=(1.0, 1.0), hflip_prob=0.0, photometric=False, copy_paste_prob=1.0,
                        copy_paste_min_pixels=20)
    ds = PseudoLabelDataset(pl_dir, crop_size=(60, 100), augment=aug, seed=0)  # crop = image: no-op crop
    _, _, seg0 = read_frame(pl_dir, ds.frames[0])
    item = ds[0]
    seg = item["segments"].numpy()
    new = seg > seg0.max()
    assert new.any()
    assert set(np.unique(item["label"].numpy()[new]).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(seg[~new], seg0[~new])


def test_infinite_sampler_epochs_and_start():
    s = InfiniteSampler(5, seed=1)
    it = iter(s)
    first = [next(it) for _ in range(15)]
    for e in range(3):
        chunk = first[e * 5 : (e + 1) * 5]
        assert sorted(c - e * 5 for c in chunk) == list(range(5))
    it2 = iter(InfiniteSampler(5, seed=1, start=7))
    assert [next(it2) for _ in range(8)] == first[7:15]
    with pytest.raises(DriveSegmentError):
        InfiniteSampler(0)


def _real_frame(data_root):
    """Real KITTI frame with LiDAR segments: points projected with calib.json, 0.5 m grid clusters."""
    from scipy import ndimage

    kitti = data_root / "kitti_000008"
    calib = json.loads((kitti / "calib.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(kitti / "000008.png")), cv2.COLOR_BGR2RGB)
    pts = np.fromfile(kitti / "000008.bin", dtype=np.float32).reshape(-1, 4)
    P = np.asarray(calib["cameras"]["CAM2"]["lidar2img"], dtype=np.float64)
    hom = np.c_[pts[:, :3], np.ones(len(pts))] @ P.T
    front = hom[:, 2] > 1.0
    uv = (hom[front, :2] / hom[front, 2:3]).round().astype(int)
    H, W = rgb.shape[:2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    xyz, uv = pts[front][inside, :3], uv[inside]
    keep = xyz[:, 2] > -1.4
    cells = np.floor(xyz[keep, :2] / 0.5).astype(int)
    cells -= cells.min(0)
    occ = np.zeros(cells.max(0) + 1, bool)
    occ[cells[:, 0], cells[:, 1]] = True
    comp, _ = ndimage.label(occ)
    seg = np.full((H, W), -1, np.int32)
    seg[uv[keep, 1], uv[keep, 0]] = comp[cells[:, 0], cells[:, 1]] - 1
    seg = ndimage.grey_dilation(seg, size=(5, 5))
    seg[seg < 0] = -1
    return rgb, seg


def test_real_kitti_pseudo_label_dir(data_root, tmp_path):
    rgb, seg = _real_frame(data_root)
    label = np.where(seg >= 0, seg % 5, 255).astype(np.uint8)
    out = tmp_path / "pl"
    for sub in ("images", "labels", "segments"):
        (out / sub).mkdir(parents=True)
    cv2.imwrite(str(out / "images" / "kitti.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out / "labels" / "kitti.png"), label)
    np.save(out / "segments" / "kitti.npy", seg)
    (out / "index.json").write_text(json.dumps({
        "k": 5, "backbone": "geometry", "backbone_description": "grid clusters", "self_supervised": False,
        "ignore_index": 255, "frames": [{"name": "kitti", "image": "images/kitti.png",
                                         "label": "labels/kitti.png", "segments": "segments/kitti.npy"}]}))
    ds = PseudoLabelDataset(out, crop_size=(256, 512), augment=AugmentConfig(copy_paste_prob=0.0), seed=0)
    n_labelled = []
    for i in range(6):
        item = ds[i]
        assert item["image"].shape == (3, 256, 512)
        lab, s = item["label"].numpy(), item["segments"].numpy()
        on = s >= 0
        np.testing.assert_array_equal(lab[on], s[on] % 5)
        assert np.all(lab[~on] == 255)
        n_labelled.append(int(on.sum()))
        assert torch.isfinite(item["image"]).all()
    assert max(n_labelled) > 1000  # real LiDAR segments land in the crops


def test_loader_workers_do_not_change_samples(pl_dir):
    ds = PseudoLabelDataset(pl_dir, crop_size=(32, 48), augment=AugmentConfig(copy_paste_prob=0.5), seed=2)
    batches = []
    for workers in (0, 1):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=InfiniteSampler(len(ds), seed=2),
                                             num_workers=workers)
        it = iter(loader)
        batches.append([next(it) for _ in range(3)])
        del it
    for a, b in zip(*batches):
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["segments"], b["segments"])


def _image_bag(path, stamps_and_logs, storage="sqlite3"):
    """A bag with one rgb8 image per (header stamp, log time); image k is filled with value k."""
    from drive_segment_ros.ros.image import rgb_to_image_msg
    from drive_segment_training.importers import _BagWriter

    w = _BagWriter(path, storage, overwrite=True)
    for k, (stamp, log) in enumerate(stamps_and_logs):
        w.add("/cam/image_raw", log, rgb_to_image_msg(np.full((4, 6, 3), k, np.uint8), "cam", stamp, w.types))
    w.close()
    return path


def test_bag_image_loader_finds_stamps_decoding_few_messages(tmp_path, monkeypatch):
    """Images referenced by header stamp: a live recording (log time = stamp) decodes one or two
    messages per look-up, not the +-2 s window; a stamp far from its log time is still found;
    at most max_open readers stay open and a closed one reopens when needed."""
    from drive_segment_training import datasets as ds

    t0 = 1_700_000_000_000_000_000
    live = [(t0 + k * 33_000_000, t0 + k * 33_000_000) for k in range(90)]  # 30 Hz, 3 s
    late = [(t0 + k * 100_000_000, t0 + k * 100_000_000 + 1_500_000_000) for k in range(5)]  # logged 1.5 s late
    bag_a = _image_bag(tmp_path / "a", live)
    bag_b = _image_bag(tmp_path / "b", late, storage="mcap")
    calls = []
    real = ds.deserialize
    monkeypatch.setattr(ds, "deserialize", lambda *a, **k: calls.append(1) or real(*a, **k))
    loader = ds.BagImageLoader(max_open=1)
    ref = lambda bag, stamp: {"name": "f", "image_ref": {"bag": str(bag), "topic": "/cam/image_raw", "stamp_ns": stamp}}
    for k in (0, 45, 89):
        calls.clear()
        assert int(loader(ref(bag_a, live[k][0]))[0, 0, 0]) == k
        assert len(calls) <= 2
    for k in (0, 3):
        assert int(loader(ref(bag_b, late[k][0]))[0, 0, 0]) == k  # found in the 2 s window
        assert list(loader._readers) == [str(bag_b)]  # bag_a's reader was closed (max_open=1)
    assert int(loader(ref(bag_a, live[7][0]))[0, 0, 0]) == 7  # reopened
    with pytest.raises(DriveSegmentError, match="no image on '/cam/image_raw' with stamp 5 ns"):
        loader(ref(bag_a, 5))
    loader.close()
    assert not loader._readers
