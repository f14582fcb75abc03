"""Pseudo-labels at drive scale (issue 9): compact layout, per-frame index, crash / full-disk resume,
bounded-memory k-means, batched extraction, damaged caches. Fast synthetic tests first, then the real frames."""
from __future__ import annotations

import errno
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from drive_segment_ros import pseudo_label_store as store
from drive_segment_ros.pseudo_labeling import FrameSegments, PseudoLabelConfig, image_features_batch
from drive_segment_ros.types import CameraModel, DriveFrame, DriveSegmentError
from drive_segment_training import pseudo_labels as pl
from drive_segment_training.kmeans import ReservoirSample


# ----------------------------------------------------------------------------- synthetic frames
def _camera(h=24, w=32):
    return CameraModel(K=np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]]), D=np.zeros(5), width=w, height=h)


def synthetic_frames(n, h=24, w=32, start=0, jpeg=False):
    """``n`` tiny DriveFrames (a generator: nothing is kept); with ``jpeg`` they carry CompressedImage bytes."""
    import cv2

    cam = _camera(h, w)
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        extra = {}
        if jpeg:
            extra = {"image_format": "jpeg", "image_bytes": cv2.imencode(".jpg", img[..., ::-1])[1].tobytes()}
        yield DriveFrame(image=img, points=np.zeros((0, 4), np.float32), camera=cam, T_cam_lidar=np.eye(4),
                         image_stamp_ns=10**9 + i * 10**8, lidar_stamp_ns=10**9 + i * 10**8 + 5, image_topic="/cam/image",
                         lidar_topic="/lidar", index=i, extra=extra)


class FakeLabeler:
    """Stands in for PseudoLabeler without proposals or a backbone: per-frame segments and 8-D
    features that are a pure function of the frame index (so runs are comparable)."""

    def __init__(self, config, n_segments=12, big_ids=False):
        self.config, self.n_segments, self.big_ids = config, n_segments, big_ids
        self.backbone = object()
        self.calls = []

    def segment_features_batch(self, frames):
        out = []
        for f in frames:
            self.calls.append(f.index)
            rng = np.random.default_rng(1000 + f.index)
            h, w = f.image.shape[:2]
            seg = rng.integers(-1, self.n_segments, (h, w)).astype(np.int32)
            if self.big_ids:
                seg[seg >= 0] += 70000
            ids = np.unique(seg[seg >= 0]).astype(np.int32)
            counts = np.array([(seg == s).sum() for s in ids], np.int64)
            feats = (np.eye(3, 8)[ids % 3] * 4 + rng.normal(0, 0.1, (ids.size, 8))).astype(np.float32)
            out.append(FrameSegments(seg, np.zeros(self.n_segments, bool), ids, feats, counts))
        return out


def _cfg(**kw):
    base = dict(k=3, n_init=1, min_segment_pixels=1, prefetch=2, preview_every=0, preview_first=0,
                image_storage="reference", kmeans_sample=1000)
    return PseudoLabelConfig.from_dict({**base, **kw})


def _full_run(out, n, cfg, labeler=None, shard="drive", frames=None):
    """process_shard -> fit_centroids -> label_shard -> finalize_run on synthetic frames."""
    labeler = labeler or FakeLabeler(cfg)
    pl.process_shard(frames if frames is not None else synthetic_frames(n, jpeg=cfg.image_storage == "auto"), out, shard,
                     source="/bags/drive", config=cfg, labeler=labeler, progress=False)
    key = pl.feature_cache_key(cfg, labeler.backbone)
    cen, n_clustered = pl.fit_centroids(out, cfg, [shard])
    run = out / pl.RUNS_DIR / pl.run_key(cfg, key, [shard])
    res = [pl.label_shard(out, shard, cfg, cen, run, progress=False)]
    return pl.finalize_run(out, cfg, cen, run, [shard], res, n_clustered=n_clustered, feature_key=key,
                           backbone_description="fake", self_supervised=False)


def _tree(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- store primitives
def test_segment_png_round_trip_limit_and_npz_fallback(tmp_path):
    seg = np.array([[-1, 0, 7], [65534, -5, 3]], np.int32)
    store.write_segments_png(tmp_path / "s.png", seg)
    back = store.read_segments(tmp_path / "s.png")
    np.testing.assert_array_equal(back, np.where(seg < 0, -1, seg))
    assert back.dtype == np.int32
    with pytest.raises(DriveSegmentError, match="does not fit a uint16"):
        store.segments_png_bytes(np.array([[65535]]))
    # a frame whose ids do not fit falls back to a compressed .npz, losslessly
    cfg = _cfg()
    lab = FakeLabeler(cfg, big_ids=True)
    pl.process_shard(synthetic_frames(2), tmp_path / "pl", "d", source="/bags/d", config=cfg, labeler=lab, progress=False)
    recs = list(store.read_jsonl(tmp_path / "pl" / "frames" / "d.jsonl"))
    assert all(r["segments"].endswith(".npz") for r in recs)
    assert store.read_segments(tmp_path / "pl" / recs[0]["segments"]).max() >= 70000
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DriveSegmentError, match="damaged"):
        store.read_segments(tmp_path / "bad.png")


def test_npz_bytes_are_deterministic_and_damage_is_detected(tmp_path):
    a = {"x": np.arange(1000, dtype=np.float32), "key": np.array("abc")}
    assert store.npz_bytes(True, **a) == store.npz_bytes(True, **a)  # np.savez stamps the time: never equal
    store.write_npz(tmp_path / "f.npz", compress=True, **a)
    np.testing.assert_array_equal(store.load_npz_checked(tmp_path / "f.npz", ("x",))["x"], a["x"])
    data = (tmp_path / "f.npz").read_bytes()
    (tmp_path / "f.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DriveSegmentError, match="damaged"):
        store.load_npz_checked(tmp_path / "f.npz", ("x",))


def test_jsonl_partial_line_and_failed_append(tmp_path, monkeypatch):
    path = tmp_path / "i.jsonl"
    with store.JsonlAppender(path) as app:
        app.append({"a": 1})
        app.append({"a": 2})
    with open(path, "ab") as f:
        f.write(b'{"a": 3')  # a crash in the middle of a line
    assert list(store.read_jsonl(path)) == [{"a": 1}, {"a": 2}]  # readers skip it
    with store.JsonlAppender(path) as app:  # the next appender cuts it off
        app.append({"a": 4})

        def enospc(fd):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

        monkeypatch.setattr(store.os, "fsync", enospc)
        with pytest.raises(OSError, match="No space"):
            app.append({"a": 5})
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n{"a":4}\n'  # the failed line is gone


def test_reservoir_sample_bounded_uniform_and_split_invariant():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    r = ReservoirSample(50, seed=0)
    r.add(X[:7])
    r.add(X[7:])
    np.testing.assert_array_equal(r.sample(), X)  # under capacity: every row, in stream order
    big = np.arange(30000, dtype=np.float32)[:, None]
    a, b = ReservoirSample(1000, seed=3), ReservoirSample(1000, seed=3)
    a.add(big)
    for i in range(0, 30000, 977):
        b.add(big[i:i + 977])
    assert a.sample().shape == (1000, 1) and a.n_seen == 30000
    np.testing.assert_array_equal(a.sample(), b.sample())  # independent of the frame boundaries
    assert len(np.unique(a.sample())) == 1000
    assert abs(float(a.sample().mean()) - 15000) < 1500  # uniform over the stream (sd ~ 274)
    with pytest.raises(DriveSegmentError):
        a.add(np.zeros((2, 3)))


def test_prefetch_forwards_errors_and_stops_early():
    produced = []

    def gen():
        for i in range(1000):
            produced.append(i)
            yield i

    it = pl.prefetched(gen(), 3)
    assert [next(it) for _ in range(2)] == [0, 1]
    it.close()  # stops the producer
    assert len(produced) <= 2 + 3 + 2  # bounded read-ahead

    def bad():
        yield 1
        raise OSError("bag read failed")

    with pytest.raises(OSError, match="bag read failed"):
        list(pl.prefetched(bad(), 2))


# ----------------------------------------------------------------------------- batching
def test_batched_features_identical_to_one_by_one_cpu_float32():
    from drive_segment_ros.models.backbones import build_backbone, extract_features

    bb = build_backbone("mobilenetv2_deepsort")
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(3)]
    imgs.insert(1, rng.integers(0, 256, (80, 200, 3), dtype=np.uint8))  # another size: its own forward
    out = image_features_batch(bb, imgs, max_side=128)
    for img, (feats, cell) in zip(imgs, out):
        # bit-identical (oneDNN may pick another convolution algorithm for some tiny inputs:
        # then up to ~3e-6 apart; at the real image sizes, 900x1600 / 375x1242 -> 384, equal too)
        assert torch.equal(feats, extract_features(bb, img, max_side=128))
    # and through the labeller: batch of 4 == 4 single frames, field by field
    from drive_segment_ros.pseudo_labeling import PseudoLabeler

    lab = PseudoLabeler(bb, None, PseudoLabelConfig(backbone="mobilenetv2_deepsort", max_side=128))
    seg = np.repeat(np.arange(16, dtype=np.int32), 10)[None].repeat(90, 0)
    lab.segment_map = lambda frame: (seg, np.zeros(16, bool))
    frames = list(synthetic_frames(4, h=90, w=160))
    batched = lab.segment_features_batch(frames)
    for f, b in zip(frames, batched):
        s = lab.segment_features(f)
        np.testing.assert_array_equal(s.feats, b.feats)
        np.testing.assert_array_equal(s.segment_ids, b.segment_ids)


# ----------------------------------------------------------------------------- resume, faults
def test_exception_after_n_frames_then_resume_is_byte_identical(tmp_path, monkeypatch):
    cfg = _cfg(image_storage="auto", preview_first=2, preview_every=5, batch_size=3)
    _full_run(tmp_path / "a", 11, cfg)
    ref = _tree(tmp_path / "a")
    assert any(k.startswith("images/") and k.endswith(".jpg") for k in ref)
    assert sum(k.startswith("previews/") for k in ref) == 4  # frames 0, 1 (preview_first) and 5, 10 (every 5th)
    # crash: the 5th frame's features cannot be written (full disk)
    real = store.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        if str(path).endswith(".npz"):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError, match="No space"):
        _full_run(tmp_path / "b", 11, cfg)
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    b = tmp_path / "b"
    assert not (b / "index.json").exists()  # nothing reads as complete
    # batch 1 (frames 0-2) and frame 3 of batch 2 were recorded: only the frame in flight is lost
    assert len(list(store.read_jsonl(b / "frames" / "drive.jsonl"))) == 4
    assert not [p for p in b.rglob(".*.tmp")]  # no temporaries left
    lab = FakeLabeler(cfg)
    _full_run(b, 11, cfg, labeler=lab)
    assert lab.calls == list(range(4, 11))  # resumed after the recorded frames
    assert _tree(b) == ref  # byte-identical to the uninterrupted run


def test_damaged_cache_entries_are_detected_and_recomputed(tmp_path, caplog):
    cfg = _cfg(image_storage="auto")
    _full_run(tmp_path / "a", 6, cfg)
    ref = _tree(tmp_path / "a")
    a = tmp_path / "a"
    recs = list(store.read_jsonl(a / "frames" / "drive.jsonl"))
    for what, rec in (("features", recs[1]), ("segments", recs[3]), ("image", recs[4])):
        data = (a / rec[what]).read_bytes()
        (a / rec[what]).write_bytes(data[: len(data) // 3])  # truncated cache entries
    lab = FakeLabeler(cfg)
    with caplog.at_level("WARNING"):
        _full_run(a, 6, cfg, labeler=lab)
    assert lab.calls == [1, 3, 4]
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 3 and all(f"_00000{i}" in w for i, w in zip((1, 3, 4), warned)), warned
    assert _tree(a) == ref
    # a damaged file that is not the resume point (e.g. the index lost): the feature cache is checked on load
    (a / "frames" / "drive.jsonl").unlink()
    data = (a / recs[2]["features"]).read_bytes()
    (a / recs[2]["features"]).write_bytes(data[:-40])
    lab = FakeLabeler(cfg)
    _full_run(a, 6, cfg, labeler=lab)
    assert lab.calls == [2] and _tree(a) == ref


def test_failed_rerun_with_another_k_keeps_the_previous_run(tmp_path, monkeypatch):
    cfg = _cfg()
    out = tmp_path / "pl"
    _full_run(out, 8, cfg)
    before = store.load_pseudo_label_index(out)
    labels = {f["name"]: (out / f["label"]).read_bytes() for f in before["frames"]}
    # another k, failing in the middle of writing its label maps
    real = store.write_png
    n = {"calls": 0}

    def fail_third(path, image):
        n["calls"] += 1
        if n["calls"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, image)

    monkeypatch.setattr(store, "write_png", fail_third)
    with pytest.raises(OSError):
        _full_run(out, 8, _cfg(k=2))
    monkeypatch.setattr(store, "write_png", real)
    after = store.load_pseudo_label_index(out)  # still the complete k=3 run
    assert after["k"] == 3 and after["run_dir"] == before["run_dir"]
    assert {f["name"]: (out / f["label"]).read_bytes() for f in after["frames"]} == labels
    cfg_read, cen_read = store.read_labeler_files(out)  # what PseudoLabeler.from_dir loads: the complete run's
    assert cfg_read["k"] == 3 and cen_read.shape[0] == 3
    # k-means failing (k larger than the segments) also leaves it complete
    with pytest.raises(DriveSegmentError, match="for k=200"):
        _full_run(out, 8, _cfg(k=200))
    assert store.load_pseudo_label_index(out)["k"] == 3
    # failing after the top-level centroids copy was replaced, before index.json: still the k=3 run
    def no_yaml(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_yaml", no_yaml)
    with pytest.raises(OSError):
        _full_run(out, 8, _cfg(k=2))
    monkeypatch.undo()
    assert np.load(out / "centroids.npy").shape[0] == 2  # the copy is new ...
    cfg_read, cen_read = store.read_labeler_files(out)  # ... but readers follow index.json
    assert cfg_read["k"] == 3 and cen_read.shape[0] == 3 and store.load_pseudo_label_index(out)["k"] == 3
    # a successful k=2 run replaces it and removes the superseded run directory
    idx = _full_run(out, 8, _cfg(k=2))
    assert idx["k"] == 2 and [p.name for p in (out / "runs").iterdir()] == [Path(idx["run_dir"]).name]


def test_index_streams_and_dataset_reads_format_2(tmp_path):
    from drive_segment_training.datasets import PseudoLabelDataset

    cfg = _cfg(image_storage="png")
    idx = _full_run(tmp_path, 5, cfg)
    fi = idx["frames"]
    assert isinstance(fi, store.FrameIndex) and len(fi) == 5 and fi._frames is None  # offsets only
    assert fi[3]["name"] == list(fi)[3]["name"]
    ds = PseudoLabelDataset(tmp_path, crop_size=(16, 16), train=False, cache=False)
    item = ds[2]
    assert item["image"].shape == (3, 24, 32) and item["label"].shape == (24, 32)
    import pickle

    ds2 = pickle.loads(pickle.dumps(ds))  # DataLoader workers
    assert torch.equal(ds2[2]["label"], item["label"])
    # a referenced image without a loader is a clear error
    rec = dict(fi[0], image=None)
    with pytest.raises(DriveSegmentError, match="referenced from bag"):
        store.read_image(tmp_path, rec)


def test_peak_memory_does_not_grow_with_frames(tmp_path):
    """tracemalloc peak of the whole run (pass 1 with prefetch, reservoir + k-means, pass 2, index)
    for 40 and 400 frames with a 200-row k-means sample: the 10x longer drive needs no more memory
    beyond the 8-byte line offset per frame that the returned streaming index keeps."""
    cfg = _cfg(kmeans_sample=200, prefetch=4)
    _full_run(tmp_path / "warm", 5, cfg)  # imports, scikit-learn set-up

    def peak(n, out):
        tracemalloc.start()
        try:
            _full_run(out, n, cfg, frames=synthetic_frames(n))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = peak(40, tmp_path / "small")
    large = peak(400, tmp_path / "large")
    assert len(store.load_pseudo_label_index(tmp_path / "large")["frames"]) == 400
    assert large < small * 1.1 + 16 * 1024 + 8 * 400, (small, large)


# ----------------------------------------------------------------------------- the real frames
FAST = {"k": 8, "n_init": 1, "max_side": 384, "min_segment_pixels": 50}


def test_real_frames_compact_resumable_through_the_cli(kitti_bag, nuscenes_bag, tmp_path, monkeypatch, capsys):
    """The demo's KITTI + nuScenes bags: <= 0.5 MB per camera image; a full disk in the middle of the
    CLI run is one error line and exit status 2; the rerun equals an uninterrupted run byte for byte."""
    import yaml

    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_training.cli import main

    bags = [kitti_bag, nuscenes_bag]
    ref = tmp_path / "ref"
    index = pl.run_pseudo_labelling(bags, ref, config=dict(FAST), backbone_module=build_backbone("mobilenetv2_deepsort"),
                                    progress=False)
    n = len(index["frames"])
    assert n == 7
    per_image = sum(len(b) for b in _tree(ref).values()) / n
    assert per_image <= 0.5e6, f"{per_image / 1e6:.3f} MB per camera image"

    cfg_path = tmp_path / "fast.yaml"
    cfg_path.write_text(yaml.safe_dump(FAST))
    argv = ["pseudo-label", *map(str, bags), "--out", str(tmp_path / "cli"), "--config", str(cfg_path),
            "--backbone", "mobilenetv2_deepsort"]
    real = store.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        if str(path).endswith(".npz"):
            calls["n"] += 1
            if calls["n"] == 4:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full_disk)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("drive-segment: error: [Errno 28] No space left on device"), err[-3:]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "cli" / "index.json").exists()
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    assert main(argv) == 0
    assert _tree(tmp_path / "cli") == _tree(ref)
