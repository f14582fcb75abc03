"""``drive-segment proposals``: LiDAR proposals projected to per-image segment maps (+ overlays).

For every image paired with a LiDAR scan (:class:`~drive_segment_training.drives.DriveReader`):
``segment_scan`` -> ``ground_cell_ids`` -> ``projection.segment_map`` (all in
:func:`drive_segment_ros.segment_map.compute_segment_map`), then writes

* ``OUT/<name>_segments.npy``: (H, W) int32 segment map, -1 = unlabelled; ids
  ``< n_segments`` are LiDAR object segments, ids ``>= n_segments`` are ground cells;
* ``OUT/<name>_overlay.png``: the image with segments coloured and the ground shaded;
* ``OUT/index.json``: configs and, per frame, bag, topics, stamps, dt, segment counts, ground
  fraction, coverage (labelled pixel fraction) and file names.

``<name>`` is :attr:`DriveFrame.name` (``<image topic>_<index>``); with several bags it is
prefixed by the bag's directory name so that names stay unique. Drive&Segment stages 2-3
(docs/METHOD.md; Vobecky et al., ECCV 2022, Sec. 3.1).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import cv2
import numpy as np
from tqdm import tqdm

from drive_segment_ros.projection import ProjectionConfig
from drive_segment_ros.proposals import ProposalConfig
from drive_segment_ros.proposals.config import BACKENDS as _BACKENDS
from drive_segment_ros.segment_map import compute_segment_map
from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.drives import DriveReader, add_bag_reading_args, reader_options_from_args
from drive_segment_training.figures import draw_proposals
from drive_segment_training.proposal_quality import run_quality

LOG = logging.getLogger(__name__)

INDEX_VERSION = 1


def _load_configs(config: Any, projection_config: Any, backend: Optional[str]):
    def coerce(cls, value):  # None -> defaults, instance as is, dict, else a YAML path
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        return cls.from_dict(value) if isinstance(value, dict) else cls.from_yaml(value)

    pcfg = coerce(ProposalConfig, config)
    if backend is not None:
        if backend not in _BACKENDS:
            raise DriveSegmentError(f"proposals: backend must be one of {_BACKENDS}, got {backend!r}")
        pcfg = ProposalConfig.from_dict({**pcfg.to_dict(), "backend": backend})
    return pcfg, coerce(ProjectionConfig, projection_config)


def run_proposals(
    bags: Sequence[Union[str, Path]],
    out_dir: Union[str, Path],
    proposal_config: Any = None,
    projection_config: Any = None,
    image_topics: Optional[Sequence[str]] = None,
    lidar_topic: Optional[str] = None,
    calibration: Optional[Union[str, Path]] = None,
    max_dt_ms: float = 50.0,
    backend: Optional[str] = None,
    max_frames: Optional[int] = None,
    overlays: bool = True,
    camera_info_topics: Any = None,
    ego_motion: str = "auto",
) -> Dict[str, Any]:
    """Compute and write segment maps for every paired frame of one or more bags.

    Args:
        bags: ROS 2 bag directories / files (anything :class:`DriveReader` opens).
        out_dir: output directory (created).
        proposal_config: ``ProposalConfig``, dict, YAML path, or ``None`` (defaults).
        projection_config: ``ProjectionConfig``, dict, YAML path, or ``None`` (defaults).
        image_topics, lidar_topic, calibration, max_dt_ms, camera_info_topics, ego_motion: passed to ``DriveReader``.
        backend: overrides ``proposal_config.backend`` (``range_image`` or ``dbscan``).
        max_frames: stop after this many frames in total (``None`` = all).
        overlays: write ``<name>_overlay.png``.

    Returns:
        The ``index.json`` content: ``{"version", "created_by", "bags", "proposal_config",
        "projection_config", "frames": [{"name", "bag", "image_topic", "lidar_topic",
        "image_stamp_ns", "lidar_stamp_ns", "dt_ms", "width", "height", "n_points",
        "n_segments", "n_ground_cells", "ground_fraction" (ground points / all points),
        "ground_pixel_fraction" (ground pixels / labelled pixels), "coverage" (labelled pixels /
        all pixels), "time_ms", "segments", "overlay"}]}`` (file names relative to ``out_dir``).

    Raises:
        DriveSegmentError: no bags, bad configs, ``max_frames < 1``, errors of the reader
        (missing bag, no camera / LiDAR topic) or of the stages.
    """
    if not bags:
        raise DriveSegmentError("proposals: no bag given")
    if max_frames is not None and max_frames < 1:
        raise DriveSegmentError(f"proposals: --max-frames must be >= 1, got {max_frames}")
    pcfg, jcfg = _load_configs(proposal_config, projection_config, backend)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    multi = len(bags) > 1
    cache: Dict[Any, Any] = {}  # one segment_scan per scan, shared by all cameras paired with it
    total_limit = max_frames if max_frames is not None else float("inf")
    for bag in bags:
        bag = Path(bag)
        if not bag.exists():
            raise DriveSegmentError(f"proposals: bag not found: {bag}")
        reader = DriveReader(
            bag, image_topics=list(image_topics) if image_topics else None, lidar_topic=lidar_topic,
            calibration=calibration, max_dt_ms=max_dt_ms, progress=False,
            camera_info_topics=camera_info_topics, ego_motion=ego_motion,
        )
        LOG.info("%s: cameras %s, lidar %s", bag, reader.image_topics, reader.lidar_topic)
        bar = tqdm(desc=f"proposals {bag.name}", unit="frame", leave=False)
        try:
            for frame in reader:
                if len(frames) >= total_limit:
                    break
                t0 = time.perf_counter()
                scan_key = (str(bag), frame.lidar_topic, int(frame.lidar_stamp_ns), len(frame.points))
                cached = cache.get(scan_key)
                smap, is_ground, proposals = compute_segment_map(frame, pcfg, jcfg, proposals=cached)
                if cached is None:
                    cache.clear()
                    cache[scan_key] = proposals
                elapsed = (time.perf_counter() - t0) * 1000.0
                name = f"{bag.name}__{frame.name}" if multi else frame.name
                seg_file = f"{name}_segments.npy"
                np.save(out / seg_file, smap.astype(np.int32))
                overlay_file = None
                if overlays:
                    overlay_file = f"{name}_overlay.png"
                    vis = draw_proposals(frame.image, smap, is_ground)
                    if not cv2.imwrite(str(out / overlay_file), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR)):
                        raise DriveSegmentError(f"proposals: cannot write {out / overlay_file}")
                labelled = smap >= 0
                n_lab = int(labelled.sum())
                ground_px = int(is_ground[smap[labelled]].sum()) if n_lab and is_ground.size else 0
                n_seg = int(proposals.n_segments)
                record = {
                    "name": name,
                    "bag": str(bag),
                    "image_topic": frame.image_topic,
                    "lidar_topic": frame.lidar_topic,
                    "image_stamp_ns": int(frame.image_stamp_ns),
                    "lidar_stamp_ns": int(frame.lidar_stamp_ns),
                    "dt_ms": frame.dt_ns / 1e6,
                    "width": int(smap.shape[1]),
                    "height": int(smap.shape[0]),
                    "n_points": int(len(frame.points)),
                    "n_segments": n_seg,
                    "n_ground_cells": int(is_ground.size - n_seg),
                    "n_segments_visible": int(np.unique(smap[labelled & (smap < n_seg)]).size),
                    "ground_fraction": float(proposals.stats.get("ground_fraction", float(np.mean(proposals.labels == -1)))),
                    "ground_pixel_fraction": ground_px / n_lab if n_lab else 0.0,
                    "coverage": n_lab / smap.size,
                    "time_ms": elapsed,
                    "segments": seg_file,
                    "overlay": overlay_file,
                }
                frames.append(record)
                bar.update(1)
                LOG.debug("%s: %d segments, coverage %.3f, %.0f ms", name, n_seg, record["coverage"], elapsed)
        finally:
            bar.close()
        if len(frames) >= total_limit:
            break
    if not frames:
        LOG.warning("proposals: no image was paired with a LiDAR scan (max_dt_ms=%s)", max_dt_ms)
    index = {
        "version": INDEX_VERSION,
        "created_by": "drive-segment proposals",
        "bags": [str(b) for b in bags],
        "proposal_config": pcfg.to_dict(),
        "projection_config": jcfg.to_dict(),
        "frames": frames,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    LOG.info("proposals: %d frames -> %s", len(frames), out / "index.json")
    return index


def _cmd_proposals(args: argparse.Namespace) -> int:
    evaluate = args.eval_semantickitti is not None or args.eval_kitti_boxes is not None
    if evaluate:  # score the proposal config on labelled LiDAR data (proposal_quality.py)
        run_quality(args.config, semantickitti=args.eval_semantickitti, kitti_boxes=args.eval_kitti_boxes,
                    backend=args.backend, out=args.out)
        if not args.bags:
            return 0
    if not args.bags or args.out is None:
        raise DriveSegmentError("proposals: give BAG(s) and --out DIR (or --eval-semantickitti / --eval-kitti-boxes)")
    index = run_proposals(
        args.bags, args.out, proposal_config=args.config, projection_config=args.projection_config,
        image_topics=args.image_topic, backend=args.backend, max_frames=args.max_frames, overlays=not args.no_overlay,
        **reader_options_from_args(args),  # --lidar-topic, --camera-info-topic, --calibration, --max-dt-ms, --ego-motion
    )
    fr = index["frames"]
    if fr:
        cov = sum(f["coverage"] for f in fr) / len(fr)
        nseg = sum(f["n_segments"] for f in fr) / len(fr)
        print(f"{len(fr)} frames, mean {nseg:.1f} segments, mean coverage {cov:.3f} -> {Path(args.out) / 'index.json'}")
    else:
        print(f"no paired frames -> {Path(args.out) / 'index.json'}")
    return 0


def add_cli(sub) -> None:
    """Register ``drive-segment proposals BAG [BAG...] --out DIR`` on an argparse subparsers object."""
    p = sub.add_parser(
        "proposals",
        help="LiDAR ground removal + segments, projected to per-image segment maps (+ overlays)",
        description=(
            "For each image paired with a LiDAR scan: ground removal and segmentation of the scan "
            "(segment_scan), ground cut into cells, projection into the image with a depth buffer and "
            "densification. Writes OUT/<frame>_segments.npy (int32, -1 = unlabelled), "
            "OUT/<frame>_overlay.png and OUT/index.json."
        ),
    )
    p.add_argument("bags", nargs="*", metavar="BAG", help="ROS 2 bag directory (sqlite3 / mcap) or ROS 1 .bag")
    p.add_argument("--out", default=None, help="output directory (required with BAGs)")
    p.add_argument("--config", default=None, help="proposal config YAML, e.g. config/proposals.yaml (default: built-in defaults)")
    p.add_argument("--projection-config", default=None,
                   help="projection config YAML, e.g. config/projection.yaml (default: built-in defaults)")
    add_bag_reading_args(p)  # --image-topic, --camera-info-topic, --lidar-topic, --calibration, --max-dt-ms, --ego-motion
    p.add_argument("--backend", choices=_BACKENDS, default=None, help="segmentation backend (overrides the config)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames in total")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--eval-semantickitti", metavar="DIR", default=None,
                   help="score the config's ground on SemanticKITTI labels (DIR: [sequences/]SEQ/{velodyne,labels}); "
                        "Patchwork++ protocol: precision / recall / F1")
    p.add_argument("--eval-kitti-boxes", metavar="DIR", default=None,
                   help="score object recall on KITTI 3D boxes (DIR: [training/]{velodyne,label_2,calib}); "
                        "with --out, scores go to OUT/proposal_quality.json")
    p.set_defaults(func=_cmd_proposals)
