"""``pseudo_label_node``: partial pseudo-labels from a live (or replayed) drive.

Subscribes ``~/image`` (Image, or CompressedImage with ``image_transport: compressed``) and
``~/points`` (PointCloud2), approximately synchronised (``slop_s``,
:mod:`drive_segment_ros.ros.sync`), plus ``~/camera_info`` (cached, nearest stamp). Each pair
becomes a :class:`~drive_segment_ros.types.DriveFrame` and is labelled with the fitted
:class:`drive_segment_ros.pseudo_labeling.PseudoLabeler` loaded from ``labeler_dir`` (the
output directory of the offline ``drive-segment pseudo-label`` run: ``centroids.npy`` +
``pseudo_label_config.yaml``; docs/METHOD.md stage 4). The node writes the offline run's
scalable layout (:mod:`drive_segment_ros.pseudo_label_store`, format 2) to ``out_dir`` so
training (``drive_segment_training.datasets.PseudoLabelDataset``) reads both alike::

    out_dir/index.jsonl           one JSON line per frame, appended + flushed + fsynced per frame
                                  (:class:`~drive_segment_ros.pseudo_label_store.JsonlAppender`); the
                                  offline training record: {"name", "image", "image_ref" (null),
                                  "label", "segments", "bag" (= source_name), "image_topic",
                                  "stamp_ns", "lidar_stamp_ns", "n_segments", "coverage"}
    out_dir/images/<name>.png     RGB image (uint8)
    out_dir/labels/<name>.png     uint8 partial label map, 255 = ignore
    out_dir/segments/<name>.png   uint16 segment map, value = segment id + 1, 0 = unlabelled
                                  (``.npz`` compressed int32 when an id exceeds 65534, as offline)
    out_dir/previews/<name>.png   colour overlay (``previews``)
    out_dir/centroids.npy, pseudo_label_config.yaml   copied from labeler_dir
    out_dir/index.json            THE completion marker (written last, atomically, by
                                  :meth:`PseudoLabelNode.finalize`): {"format": 2, "k", "backbone",
                                  ..., "frames_file": "index.jsonl", "n_frames", "cluster_pixel_counts",
                                  "mean_coverage"}

with ``<name> = safe(source_name + "__" + <image topic>_<index:06d>)``, exactly the offline
naming when ``source_name`` is the bag's directory name. The cost per frame is constant: one
line is appended, earlier lines are never rewritten. As for the offline run, a directory
without ``index.json`` is an incomplete run that readers refuse (``open_frame_index``):
:meth:`~PseudoLabelNode.finalize` writes it when the node is deactivated (lifecycle
``deactivate`` / ``cleanup`` / ``shutdown``), at process shutdown (``shutdown_hook``) and when
``max_frames`` is reached; a frame labelled after that removes it again until the next
finalize. Configuring starts a new run: a stale ``index.json`` is removed and ``index.jsonl``
emptied first. ``T_cam_lidar`` comes from the parameter, a
``calibration_yaml`` or ``/tf_static`` (when ``tf2_msgs`` is importable). Labelling runs in
the subscription callback (the backbone is slow on CPU); bad frames are logged and skipped.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from drive_segment_ros.nodes import run_nodes
from drive_segment_ros.nodes.camera_lidar import CAMERA_LIDAR_PARAMETERS, CameraLidarMixin
from drive_segment_ros.nodes.lifecycle import ManagedNode, destroy_subscriptions
from drive_segment_ros.nodes.transport import qos_from_parameters, qos_parameter_specs
from drive_segment_ros import pseudo_label_store as store
from drive_segment_ros.pseudo_label_store import INDEX_FILE, safe_name
from drive_segment_ros.ros.image import any_image_to_rgb
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types
from drive_segment_ros.ros.pointcloud2 import read_points_xyzi
from drive_segment_ros.ros.sync import make_synchronizer
from drive_segment_ros.types import DriveFrame, DriveSegmentError, IGNORE_INDEX

LOG = logging.getLogger(__name__)

__all__ = ["PseudoLabelNode", "PARAMETERS", "FRAMES_FILE", "main"]

#: The node's per-frame JSON-lines index (relative to ``out_dir``; ``index.json["frames_file"]``).
FRAMES_FILE = "index.jsonl"

PARAMETERS: Dict[str, tuple] = {
    "labeler_dir": ("", "offline pseudo-label output directory with centroids.npy and pseudo_label_config.yaml"),
    "out_dir": ("pseudo_labels_live", "where images/, labels/, segments/, previews/, index.jsonl and index.json are written"),
    "source_name": ("live", "prefix of the frame names (the bag directory name reproduces the offline names)"),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage) on ~/image"),
    "slop_s": (0.05, "approximate-time synchronisation tolerance between image and point cloud (s)"),
    "queue_size": (10, "messages kept per input by the synchroniser"),
    "previews": (True, "write previews/<name>.png colour overlays"),
    "max_frames": (0, "stop labelling after this many frames; 0 = no limit"),
    **qos_parameter_specs("image", "best_effort", "volatile", 10),
    **qos_parameter_specs("camera_info", "best_effort", "volatile", 10),
    **qos_parameter_specs("points", "best_effort", "volatile", 10),
    **CAMERA_LIDAR_PARAMETERS,
}


class PseudoLabelNode(CameraLidarMixin, ManagedNode):
    """Synchronised image + cloud (+ CameraInfo) -> partial pseudo-labels on disk.

    Args:
        node_name: ROS node name.
        labeler: optional ready :class:`PseudoLabeler` (tests, composition); else ``labeler_dir``.
        **kwargs: ``rclpy.node.Node`` keyword arguments.

    Raises:
        DriveSegmentError: no labeler (empty ``labeler_dir``), unwritable ``out_dir``, ``out_dir`` =
            ``labeler_dir`` (it would replace the offline run's ``index.json``), bad parameters.

    Attributes: ``n_frames`` (labelled), ``index`` (the ``index.json`` metadata, no frame list:
    the frames are in ``index.jsonl``), ``frames_path``, ``n_errors``, ``last_error``.
    """

    def __init__(self, node_name: str = "pseudo_label_node", labeler: Any = None, **kwargs: Any) -> None:
        self._given_labeler = labeler
        self.labeler = None
        self.n_frames = 0
        self.subs: list = []
        self.sync = None
        self.appender: Optional[store.JsonlAppender] = None
        self._finalized = False
        super().__init__(node_name, PARAMETERS, task="pseudo-labels", **kwargs)

    def configure(self) -> None:
        """Load the labeler, create ``out_dir`` and the index, subscribe CameraInfo."""
        self.types = T = rclpy_types()
        p = self.params
        if p["image_transport"] not in ("raw", "compressed"):
            raise DriveSegmentError(f"image_transport must be raw or compressed, got {p['image_transport']!r}")
        self.qos = {name: qos_from_parameters(p, name) for name in ("image", "camera_info", "points")}
        labeler_dir = Path(p["labeler_dir"]) if p["labeler_dir"] else None
        labeler = self._given_labeler
        if labeler is None:
            if labeler_dir is None:
                raise DriveSegmentError("pseudo_label_node: parameter labeler_dir is empty (run drive-segment pseudo-label first)")
            from drive_segment_ros.pseudo_labeling import PseudoLabeler  # deferred: imports torch (signal handlers first)

            labeler = PseudoLabeler.from_dir(labeler_dir)
        self.labeler = labeler
        self.diagnostics.set_model(f"pseudo-labeler k={getattr(labeler, 'k', '?')}")
        self.out_dir = Path(p["out_dir"])
        if labeler_dir is not None and labeler_dir.resolve() == self.out_dir.resolve():
            raise DriveSegmentError(f"out_dir {self.out_dir} is labeler_dir: the node would replace the offline run's {INDEX_FILE}")
        store.make_dirs(self.out_dir, ("images", "labels", "segments", "previews"))
        self.index = self._initial_index(labeler_dir)
        self._start_run()
        self.setup_camera_lidar(p, T, info_qos=self.qos["camera_info"])

    def activate(self) -> None:
        """Subscribe ``~/image`` + ``~/points`` (synchronised)."""
        T, p = self.types, self.params
        image_type = T.CompressedImage if p["image_transport"] == "compressed" else T.Image
        self.sync, self.subs = make_synchronizer(
            self,
            [(image_type, "~/image", self.qos["image"]), (T.PointCloud2, "~/points", self.qos["points"])],
            self.on_pair,
            queue_size=int(p["queue_size"]),
            slop_s=float(p["slop_s"]),
        )
        self.get_logger().info(f"pseudo_label_node active: k={getattr(self.labeler, 'k', '?')}, writing {self.out_dir}")

    def deactivate(self) -> None:
        """Stop the image / cloud subscriptions and :meth:`finalize` the run (``index.json``)."""
        destroy_subscriptions(self, self.subs)
        self.subs, self.sync = [], None
        self.finalize()

    def cleanup(self) -> None:
        """Finalize, close ``index.jsonl``, drop the labeler and the calibration subscriptions."""
        self.deactivate()
        if self.appender is not None:
            self.appender.close()
            self.appender = None
        self.teardown_camera_lidar()
        self.labeler = None

    def shutdown_hook(self) -> None:
        """Process shutdown (``run_nodes``): write the completion marker of what was labelled."""
        self.finalize()

    # -- index ----------------------------------------------------------------------------
    def _initial_index(self, labeler_dir: Optional[Path]) -> dict:
        base: Dict[str, Any] = {}
        if labeler_dir is not None:
            for name in ("centroids.npy", "pseudo_label_config.yaml"):
                src = labeler_dir / name
                if src.is_file() and src.resolve() != (self.out_dir / name).resolve():
                    shutil.copy2(src, self.out_dir / name)
            if (labeler_dir / "index.json").is_file():
                base = json.loads((labeler_dir / "index.json").read_text())
        backbone = self.labeler.backbone
        k = int(self.labeler.k)
        return {
            "format": store.FORMAT,
            "k": k,
            "backbone": base.get("backbone", getattr(self.labeler.config, "backbone", getattr(backbone, "name", ""))),
            "backbone_description": base.get("backbone_description", getattr(backbone, "description", "")),
            "self_supervised": bool(base.get("self_supervised", getattr(backbone, "self_supervised", False))),
            "ignore_index": IGNORE_INDEX,
            "n_clustered_segments": int(base.get("n_clustered_segments", 0)),
            "cluster_pixel_counts": [0] * k,
            "frames_file": FRAMES_FILE,
            "n_frames": 0,
            "mean_coverage": 0.0,
        }

    def _start_run(self) -> None:
        """A new run: remove a stale ``index.json`` (the directory is incomplete until :meth:`finalize`),
        open ``index.jsonl`` and empty it (frame names restart at index 0)."""
        self._remove_marker()
        if self.appender is not None:
            self.appender.close()
        try:
            self.appender = store.JsonlAppender(self.out_dir / FRAMES_FILE)
            self.appender.truncate_to(0)
        except OSError as exc:
            raise DriveSegmentError(f"cannot write {self.out_dir / FRAMES_FILE}: {exc}") from exc
        self.n_frames = 0
        self._coverage_sum = 0.0
        self._finalized = False

    def _remove_marker(self) -> None:
        try:
            os.unlink(self.out_dir / INDEX_FILE)
        except FileNotFoundError:
            pass

    def finalize(self) -> Optional[Path]:
        """Write ``out_dir/index.json``, the completion marker, atomically and last (as the offline run).

        Every frame record is already on disk (``index.jsonl``, fsynced per frame), so this
        costs O(k), not O(frames). Nothing is written before the first frame (a run without frames
        is not a dataset) or when nothing was labelled since the last call.

        Returns:
            the path of ``index.json``, or None when nothing was written.

        Raises:
            OSError: the file system refused the write (the previous state is kept).
        """
        if self.n_frames == 0 or self._finalized or getattr(self, "out_dir", None) is None:
            return None
        self.index["n_frames"] = int(self.n_frames)
        self.index["mean_coverage"] = float(self._coverage_sum / self.n_frames)
        path = store.write_json(self.out_dir / INDEX_FILE, self.index)
        self._finalized = True
        self.get_logger().info(f"pseudo-label run complete: {self.n_frames} frames, {path}")
        return path

    # -- callbacks ------------------------------------------------------------------------
    def on_pair(self, img: Any, cloud: Any) -> None:
        """Synchronised image + cloud: label and write; errors are logged, the node keeps running."""
        limit = int(self.params["max_frames"])
        if limit > 0 and self.n_frames >= limit:
            return
        self.diagnostics.input()
        t0 = time.perf_counter()
        try:
            self.label(img, cloud)
        except DriveSegmentError as exc:
            self.diagnostics.dropped()
            self.report_error(f"dropped frame ({img.header.frame_id!r}): {exc}")
        except Exception as exc:
            self.diagnostics.dropped()
            self.report_error(f"dropped frame ({img.header.frame_id!r}): {type(exc).__name__}: {exc}")
        else:
            self.diagnostics.output((time.perf_counter() - t0) * 1e3)

    def make_frame(self, img: Any, cloud: Any):
        """Build the :class:`DriveFrame` of one synchronised pair (raises DriveSegmentError)."""
        stamp = header_stamp_ns(img)
        info = self.camera_info_for(stamp)
        if info is None:
            raise DriveSegmentError(f"no CameraInfo received on {self.sub_info.topic_name}")
        self.check_image_size(img, info)  # before decoding: a small PNG can expand to gigabytes
        rgb = any_image_to_rgb(img)
        camera, T = self.camera_and_extrinsics(info, img.header.frame_id, cloud.header.frame_id, (rgb.shape[1], rgb.shape[0]))
        points, rings = read_points_xyzi(cloud)
        if points.shape[0] == 0:
            raise DriveSegmentError("empty PointCloud2 (0 finite points)")
        topic = lambda s: getattr(s, "topic_name", "")  # noqa: E731
        return DriveFrame(
            image=rgb, points=points, camera=camera, T_cam_lidar=np.asarray(T, dtype=np.float64),
            image_stamp_ns=stamp, lidar_stamp_ns=header_stamp_ns(cloud), rings=rings,
            lidar_frame=cloud.header.frame_id, image_topic=topic(self.subs[0]), lidar_topic=topic(self.subs[1]),
            index=self.n_frames,
        )

    def label(self, img: Any, cloud: Any) -> dict:
        """Label one pair, write its files, append one line to ``index.jsonl``; returns the frame record.

        Files first (each atomic), the index line last, so a crash never indexes a missing file.
        """
        from drive_segment_ros.pseudo_labeling import preview_image  # deferred: imports torch

        frame = self.make_frame(img, cloud)
        label, segments = self.labeler.label_frame(frame)
        if self._finalized:  # the marker described fewer frames: incomplete again until the next finalize
            self._remove_marker()
            self._finalized = False
        name = safe_name(f"{self.params['source_name']}__{frame.name}")
        paths = store.frame_paths(name)
        store.write_png(self.out_dir / paths.image, frame.image)
        store.write_png(self.out_dir / paths.label, label)
        seg_rel = store.write_segment_map(self.out_dir, name, segments)  # .png uint16 (id + 1) or .npz, as offline
        if self.params["previews"]:
            store.write_png(self.out_dir / paths.preview, preview_image(frame.image, label, self.labeler.k))
        labelled = label != IGNORE_INDEX
        rec = {  # the offline training record (drive_segment_training.pseudo_labels.label_shard)
            "name": name, "image": paths.image, "image_ref": None, "label": paths.label, "segments": seg_rel,
            "bag": str(self.params["source_name"]), "image_topic": frame.image_topic,
            "stamp_ns": int(frame.image_stamp_ns), "lidar_stamp_ns": int(frame.lidar_stamp_ns),
            "n_segments": int(np.unique(segments[labelled]).size), "coverage": float(labelled.mean()),
        }
        self.appender.append(rec)
        counts = np.bincount(label[labelled], minlength=256)[: self.labeler.k]
        self.index["cluster_pixel_counts"] = (np.asarray(self.index["cluster_pixel_counts"]) + counts).tolist()
        self._coverage_sum += rec["coverage"]
        self.n_frames += 1
        if int(self.params["max_frames"]) > 0 and self.n_frames >= int(self.params["max_frames"]):
            self.finalize()
        self.get_logger().info(f"labelled {name}: {rec['n_segments']} segments, coverage {rec['coverage']:.3f}")
        return rec


def main(args: Optional[list] = None) -> int:
    """Console script ``pseudo_label_node`` (``-p labeler_dir:=... -p out_dir:=...``)."""
    return run_nodes([PseudoLabelNode], args=args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
