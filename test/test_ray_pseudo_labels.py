"""Pseudo-labelling on Ray (training/ray_pseudo_labels.py): the same output directory as the one-process run.

Ray is optional (the ``scale`` extra): the Ray run is skipped without it, and the missing-Ray
error is tested either way.
"""
from __future__ import annotations

import argparse
import builtins
import filecmp
import json
import sys

import pytest
import yaml

from drive_segment_ros.types import DriveSegmentError

FAST = {"k": 8, "n_init": 1, "max_side": 384, "min_segment_pixels": 50}


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _parser():
    from drive_segment_training import pseudo_labels, ray_pseudo_labels

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    pseudo_labels.add_cli(sub)
    ray_pseudo_labels.add_cli(sub)
    return parser


def test_ray_run_equals_one_process_run_byte_for_byte(kitti_bag, nuscenes_bag, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'drive_segment_ros[scale]')")
    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_training.pseudo_labels import run_pseudo_labelling

    one = run_pseudo_labelling([kitti_bag, nuscenes_bag], tmp_path / "one", config=dict(FAST),
                               backbone_module=build_backbone("mobilenetv2_deepsort"), progress=False)
    # `drive-segment pseudo-label ... --ray`: two shards (the two bags) on two local actors, each
    # building its own model, Ray started in-process
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(FAST))
    args = _parser().parse_args(["pseudo-label", str(kitti_bag), str(nuscenes_bag), "--out", str(tmp_path / "ray"),
                                 "--config", str(tmp_path / "fast.yaml"), "--backbone", "mobilenetv2_deepsort",
                                 "--ray", "--ray-workers", "2"])
    assert args.func(args) == 0
    assert "(Ray)" in capsys.readouterr().out
    two = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert two["n_frames"] == one["n_frames"] == 7 and two["shards"] == one["shards"] == ["kitti_000008", "nuscenes_n015"]
    files = _files(tmp_path / "one")
    assert files == _files(tmp_path / "ray") and "index.json" in files and len(files) > 20
    differ = [f for f in files if not filecmp.cmp(tmp_path / "one" / f, tmp_path / "ray" / f, shallow=False)]
    assert differ == []  # features, segment maps, images, centroids, labels, indexes: identical bytes
    import ray

    assert not ray.is_initialized()  # the local Ray started for the run is shut down


def test_time_range_shards_partition_a_bag(nuscenes_bag):
    from drive_segment_training.pseudo_labels import bag_shard_frames
    from drive_segment_training.ray_pseudo_labels import bag_time_shards

    every = [f.name for f in bag_shard_frames(nuscenes_bag)]
    shards = bag_time_shards(nuscenes_bag, 3, source="given/path")
    assert len(shards) == 3 and shards[0].start_ns is None and shards[-1].end_ns is None
    assert shards[0].end_ns == shards[1].start_ns and shards[1].end_ns == shards[2].start_ns
    assert len({s.shard_id for s in shards}) == 3 and all(s.source == "given/path" for s in shards)
    parts = [[f.name for f in bag_shard_frames(s.bag, s.start_ns, s.end_ns)] for s in shards]
    assert sum(parts, []) == every and len(every) == 6  # in order, none lost, none twice
    assert bag_time_shards(nuscenes_bag, 1)[0].start_ns is None
    with pytest.raises(DriveSegmentError):
        bag_time_shards(nuscenes_bag, 0)


def test_without_ray_one_line_error_and_cli_options(monkeypatch, tmp_path, kitti_bag):
    from drive_segment_training import ray_pseudo_labels

    parser = _parser()
    args = parser.parse_args(["pseudo-label", str(kitti_bag), "--out", str(tmp_path / "o"), "--ray-address", "auto",
                              "--ray-workers", "3", "--ray-shards-per-bag", "2", "--max-frames", "1"])
    assert (args.ray_address, args.ray_workers, args.ray_shards_per_bag, args.ray) == ("auto", 3, 2, False)
    with pytest.raises(DriveSegmentError, match="--max-frames is not supported with --ray"):
        args.func(args)

    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **kw)

    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    args = parser.parse_args(["pseudo-label", str(kitti_bag), "--out", str(tmp_path / "o"), "--ray"])
    with pytest.raises(DriveSegmentError) as err:
        args.func(args)
    assert str(err.value) == ray_pseudo_labels.RAY_MISSING and "\n" not in str(err.value)
    assert "pip install" in str(err.value) and "[scale]" in str(err.value)
    assert not (tmp_path / "o").exists()  # nothing started, nothing written


def test_ray_run_reads_bags_with_the_cli_reader_options(monkeypatch, tmp_path, kitti_bag):
    """--image-topic / --camera-info-topic / --calibration / --ego-motion reach every shard's DriveReader
    under --ray as they do in the one-process run (no Ray needed: the run and the shard reader are stubbed)."""
    from drive_segment_training import pseudo_labels as pl
    from drive_segment_training import ray_pseudo_labels

    calls = {}
    monkeypatch.setattr(ray_pseudo_labels, "run_pseudo_labelling_ray",
                        lambda *a, **kw: calls.setdefault("run", kw) and {"frames": [], "k": 8, "backbone": "b",
                                                                          "self_supervised": False})
    args = _parser().parse_args(["pseudo-label", str(kitti_bag), "--out", str(tmp_path / "o"), "--ray",
                                 "--image-topic", "/cam/image_raw", "--camera-info-topic", "/cam/camera_info",
                                 "--calibration", "calib.yaml", "--ego-motion", "off", "--max-dt-ms", "20"])
    assert args.func(args) == 0
    kw = calls["run"]
    assert kw["image_topics"] == ["/cam/image_raw"]
    assert kw["reader_options"] == pl.reader_options_from_args(args)
    assert kw["reader_options"]["camera_info_topics"] == ["/cam/camera_info"]
    assert (kw["reader_options"]["calibration"], kw["reader_options"]["ego_motion"], kw["reader_options"]["max_dt_ms"]) \
        == ("calib.yaml", "off", 20.0)

    # the actor hands them to bag_shard_frames, the one-process run's shard reader
    seen = {}
    monkeypatch.setattr(pl, "bag_shard_frames", lambda bag, s, e, **kw: seen.update(bag=bag, **kw) or iter(()))
    monkeypatch.setattr(pl, "process_shard", lambda frames, *a, **kw: list(frames))
    worker = object.__new__(ray_pseudo_labels._ShardWorker)
    worker.cfg, worker.labeler = pl.resolve_config({"image_topics": ["/cfg/topic"]}), None
    worker.process(ray_pseudo_labels.Shard(str(kitti_bag)), str(tmp_path), {"image_topics": kw["image_topics"],
                                                                            "reader_options": kw["reader_options"]})
    assert seen["image_topics"] == ["/cam/image_raw"] and seen["reader_options"]["calibration"] == "calib.yaml"
    seen.clear()
    worker.process(ray_pseudo_labels.Shard(str(kitti_bag)), str(tmp_path))  # no options: the config's topics
    assert seen == {"bag": str(kitti_bag), "image_topics": ["/cfg/topic"]}
