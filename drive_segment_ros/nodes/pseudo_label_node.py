"""``pseudo_label_node``: partial pseudo-labels from a live (or replayed) drive.

Subscribes ``~/image`` (Image, or CompressedImage with ``image_transport: compressed``) and
``~/points`` (PointCloud2), approximately synchronised (``slop_s``,
:mod:`drive_segment_ros.ros.sync`), plus ``~/camera_info`` (cached, nearest stamp). Each pair
becomes a :class:`~drive_segment_ros.types.DriveFrame` and is labelled with the fitted
:class:`drive_segment_ros.pseudo_labeling.PseudoLabeler` loaded from ``labeler_dir`` (the
output directory of the offline ``drive-segment pseudo-label`` run: ``centroids.npy`` +
``pseudo_label_config.yaml``; docs/METHOD.md stage 4). The node writes the offline layout to
``out_dir`` so training reads both alike::

    out_dir/index.json            same keys as the offline run; frames[] gain one entry per frame
    out_dir/images/<name>.png     RGB image
    out_dir/labels/<name>.png     uint8 partial label map, 255 = ignore
    out_dir/segments/<name>.npy   int32 segment map, -1 = unlabelled
    out_dir/previews/<name>.png   colour overlay (``previews``)
    out_dir/centroids.npy, pseudo_label_config.yaml   copied from labeler_dir

with ``<name> = safe(source_name + "__" + <image topic>_<index:06d>)``, exactly the offline
naming when ``source_name`` is the bag's directory name. ``index.json`` is rewritten
atomically after every frame. ``T_cam_lidar`` comes from the parameter, a
``calibration_yaml`` or ``/tf_static`` (when ``tf2_msgs`` is importable). Labelling runs in
the subscription callback (the backbone is slow on CPU); bad frames are logged and skipped.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from drive_segment_ros.nodes import run_nodes
from drive_segment_ros.nodes.camera_lidar import CAMERA_LIDAR_PARAMETERS, CameraLidarMixin
from drive_segment_ros.nodes.lifecycle import ManagedNode, destroy_subscriptions
from drive_segment_ros.nodes.transport import qos_from_parameters, qos_parameter_specs
from drive_segment_ros.pseudo_label_store import INDEX_FILE, frame_record, safe_name, write_json, write_npy, write_png
from drive_segment_ros.ros.image import any_image_to_rgb
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types
from drive_segment_ros.ros.pointcloud2 import read_points_xyzi
from drive_segment_ros.ros.sync import make_synchronizer
from drive_segment_ros.types import DriveFrame, DriveSegmentError, IGNORE_INDEX

LOG = logging.getLogger(__name__)

__all__ = ["PseudoLabelNode", "PARAMETERS", "main"]

PARAMETERS: Dict[str, tuple] = {
    "labeler_dir": ("", "offline pseudo-label output directory with centroids.npy and pseudo_label_config.yaml"),
    "out_dir": ("pseudo_labels_live", "where images/, labels/, segments/, previews/ and index.json are written"),
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
        DriveSegmentError: no labeler (empty ``labeler_dir``), unwritable ``out_dir``, bad parameters.

    Attributes: ``n_frames`` (labelled), ``index`` (the ``index.json`` dict), ``n_errors``, ``last_error``.
    """

    def __init__(self, node_name: str = "pseudo_label_node", labeler: Any = None, **kwargs: Any) -> None:
        self._given_labeler = labeler
        self.labeler = None
        self.n_frames = 0
        self.subs: list = []
        self.sync = None
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
        try:
            for sub in ("images", "labels", "segments", "previews"):
                (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DriveSegmentError(f"cannot create out_dir {self.out_dir}: {exc}") from exc
        self.index = self._initial_index(labeler_dir)
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
        """Stop the image / cloud subscriptions."""
        destroy_subscriptions(self, self.subs)
        self.subs, self.sync = [], None

    def cleanup(self) -> None:
        """Drop the labeler and the calibration subscriptions."""
        self.deactivate()
        self.teardown_camera_lidar()
        self.labeler = None

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
            "k": k,
            "backbone": base.get("backbone", getattr(self.labeler.config, "backbone", getattr(backbone, "name", ""))),
            "backbone_description": base.get("backbone_description", getattr(backbone, "description", "")),
            "self_supervised": bool(base.get("self_supervised", getattr(backbone, "self_supervised", False))),
            "ignore_index": IGNORE_INDEX,
            "n_clustered_segments": int(base.get("n_clustered_segments", 0)),
            "cluster_pixel_counts": [0] * k,
            "frames": [],
        }

    def write_index(self) -> Path:
        """Write ``out_dir/index.json`` atomically (:func:`~drive_segment_ros.pseudo_label_store.write_json`:
        temp file + rename; an OSError leaves the previous index); returns its path."""
        return write_json(self.out_dir / INDEX_FILE, self.index)

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
        """Label one pair, write its files, append to and rewrite ``index.json``; returns the frame record."""
        from drive_segment_ros.pseudo_labeling import preview_image  # deferred: imports torch

        frame = self.make_frame(img, cloud)
        label, segments = self.labeler.label_frame(frame)
        name = safe_name(f"{self.params['source_name']}__{frame.name}")
        rec = frame_record(name, self.params["source_name"], frame.image_topic, frame.image_stamp_ns, frame.lidar_stamp_ns)
        write_png(self.out_dir / rec["image"], frame.image)
        write_png(self.out_dir / rec["label"], label)
        write_npy(self.out_dir / rec["segments"], np.asarray(segments, dtype=np.int32))
        if self.params["previews"]:
            write_png(self.out_dir / "previews" / f"{name}.png", preview_image(frame.image, label, self.labeler.k))
        labelled = label != IGNORE_INDEX
        rec["n_segments"] = int(np.unique(segments[labelled]).size)
        rec["coverage"] = float(labelled.mean())
        counts = np.bincount(label[labelled], minlength=256)[: self.labeler.k]
        self.index["cluster_pixel_counts"] = (np.asarray(self.index["cluster_pixel_counts"]) + counts).tolist()
        self.index["frames"].append(rec)
        self.write_index()
        self.n_frames += 1
        self.get_logger().info(f"labelled {name}: {rec['n_segments']} segments, coverage {rec['coverage']:.3f}")
        return rec


def main(args: Optional[list] = None) -> int:
    """Console script ``pseudo_label_node`` (``-p labeler_dir:=... -p out_dir:=...``)."""
    return run_nodes([PseudoLabelNode], args=args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
