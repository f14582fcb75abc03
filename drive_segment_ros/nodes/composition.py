"""``segment_stack``: every node of the package in one process, one executor.

What the tests and the demo run on machines without ``launch`` / ``launch_ros`` (the
PyPI ROS 2 wheels); on a full ROS 2 install ``launch/segment.launch.py`` starts the same
nodes as separate processes. :func:`build_stack` creates the nodes with the parameters of
``config/segment.yaml`` (``--params-file``), per-node topic remaps and overrides::

    bag_player (optional) --image/camera_info/points--> proposal_node      -> ~/segments, ~/markers
                                                   \\-> segmentation_node  -> ~/mask, ~/mask_color, ~/semantic_points
                                                   \\-> pseudo_label_node  -> out_dir/ (optional)

Source: ROS 2 docs "Composing multiple nodes in a single process" (here with rclpy's
``SingleThreadedExecutor`` instead of C++ components).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from drive_segment_ros.nodes import run_nodes
from drive_segment_ros.nodes.bag_player_node import BagPlayerNode
from drive_segment_ros.nodes.proposal_node import ProposalNode
from drive_segment_ros.nodes.pseudo_label_node import PseudoLabelNode
from drive_segment_ros.nodes.segmentation_node import SegmentationNode
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = ["default_params_file", "build_stack", "main", "DEFAULT_TOPICS"]

#: topics of the KITTI bag written by ``drive-segment import-kitti``
DEFAULT_TOPICS = {
    "image": "/kitti/camera_color_left/image_raw",
    "camera_info": "/kitti/camera_color_left/camera_info",
    "points": "/kitti/velodyne/points",
}


def default_params_file() -> str:
    """``config/segment.yaml`` from the package share directory (ament index) or the source tree.

    Raises:
        DriveSegmentError: when neither exists.
    """
    try:
        from ament_index_python.packages import get_package_share_directory  # optional heavy dependency

        path = Path(get_package_share_directory("drive_segment_ros")) / "config" / "segment.yaml"
        if path.is_file():
            return str(path)
    except Exception:  # not installed through colcon / ament_index not importable
        pass
    path = Path(__file__).resolve().parents[2] / "config" / "segment.yaml"
    if path.is_file():
        return str(path)
    raise DriveSegmentError("config/segment.yaml not found (install the package or run from the source tree)")


def _remaps(topics: dict, keys: Sequence[str]) -> List[str]:
    out = []
    for key in keys:
        out += ["-r", f"~/{key}:={topics[key]}"]
    return out


def build_stack(
    context: Any = None,
    *,
    params_file: Optional[str] = None,
    bag: Optional[str] = None,
    rate: float = 1.0,
    loop: bool = False,
    model_path: Optional[str] = None,
    backend: Optional[str] = None,
    device: Optional[str] = None,
    model: Any = None,
    image_transport: str = "raw",
    use_lidar: bool = True,
    calibration_yaml: Optional[str] = None,
    labeler_dir: Optional[str] = None,
    labeler: Any = None,
    out_dir: Optional[str] = None,
    topics: Optional[dict] = None,
    proposals: bool = True,
) -> list:
    """Create the nodes (not yet spinning); returns them in start order.

    Args:
        context: rclpy Context (default: the global one).
        params_file: ROS 2 parameter YAML (default :func:`default_params_file`).
        bag, rate, loop: play this bag with ``bag_player`` (omitted when ``bag`` is None).
        model_path, backend, device / model: the segmentation model (``segmentation_node`` is
            omitted when neither is given).
        image_transport: ``raw`` or ``compressed`` for the image topic.
        use_lidar: segmentation_node publishes ``~/semantic_points``.
        calibration_yaml: T_cam_lidar for bags without usable ``/tf_static``.
        labeler_dir / labeler, out_dir: enable ``pseudo_label_node``.
        topics: ``{"image", "camera_info", "points"}`` (default :data:`DEFAULT_TOPICS`).
        proposals: include ``proposal_node``.

    Raises:
        DriveSegmentError: from the nodes (bad parameters, missing model / bag).
    """
    from rclpy.parameter import Parameter  # optional heavy dependency

    topics = {**DEFAULT_TOPICS, **(topics or {})}
    params_file = params_file or default_params_file()
    base = ["--ros-args", "--params-file", params_file]
    nodes = []
    try:
        if proposals:
            nodes.append(ProposalNode(context=context, cli_args=base + _remaps(topics, ["points"])))
        if model is not None or model_path:
            over = [Parameter("use_lidar", value=bool(use_lidar)), Parameter("image_transport", value=image_transport)]
            if model_path:
                over.append(Parameter("model_path", value=str(model_path)))
            if backend:
                over.append(Parameter("backend", value=backend))
            if device:
                over.append(Parameter("device", value=device))
            if calibration_yaml:
                over.append(Parameter("calibration_yaml", value=str(calibration_yaml)))
            nodes.append(SegmentationNode(model=model, context=context, parameter_overrides=over,
                                          cli_args=base + _remaps(topics, ["image", "camera_info", "points"])))
        if labeler is not None or labeler_dir:
            over = [Parameter("image_transport", value=image_transport)]
            if labeler_dir:
                over.append(Parameter("labeler_dir", value=str(labeler_dir)))
            if out_dir:
                over.append(Parameter("out_dir", value=str(out_dir)))
            if calibration_yaml:
                over.append(Parameter("calibration_yaml", value=str(calibration_yaml)))
            if bag:
                over.append(Parameter("source_name", value=Path(bag).name))
            nodes.append(PseudoLabelNode(labeler=labeler, context=context, parameter_overrides=over,
                                         cli_args=base + _remaps(topics, ["image", "camera_info", "points"])))
        if bag:
            # wait for the topics the nodes of this stack consume (a bag may carry more cameras)
            consumed = sorted({topics["points"]} | ({topics["image"], topics["camera_info"]} if len(nodes) > int(proposals) else set()))
            over = [Parameter("bag", value=str(bag)), Parameter("rate", value=float(rate)), Parameter("loop", value=bool(loop)),
                    Parameter("wait_for_subscribers", value=1), Parameter("wait_topics", value=consumed)]
            nodes.append(BagPlayerNode(context=context, parameter_overrides=over, cli_args=base))
    except Exception:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segment_stack", description="All drive_segment_ros nodes in one process (one executor).")
    p.add_argument("--bag", help="play this ROS 2 bag (bag_player)")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate; <= 0 as fast as possible")
    p.add_argument("--loop", action="store_true", help="loop the bag")
    p.add_argument("--model", help="segmentation model: checkpoint dir / .onnx / .engine")
    p.add_argument("--backend", default=None, help="auto | torch | onnxruntime | tensorrt")
    p.add_argument("--device", default=None, help="cpu | cuda | auto")
    p.add_argument("--params-file", default=None, help="parameter YAML (default config/segment.yaml)")
    p.add_argument("--calibration", default=None, help="calibration YAML (T_cam_lidar) for bags without /tf_static")
    p.add_argument("--labeler-dir", default=None, help="offline pseudo-label dir: enables pseudo_label_node")
    p.add_argument("--out-dir", default=None, help="pseudo_label_node output dir")
    p.add_argument("--image-topic", default=DEFAULT_TOPICS["image"])
    p.add_argument("--camera-info-topic", default=DEFAULT_TOPICS["camera_info"])
    p.add_argument("--points-topic", default=DEFAULT_TOPICS["points"])
    p.add_argument("--compressed", action="store_true", help="the image topic carries sensor_msgs/CompressedImage")
    p.add_argument("--no-lidar", action="store_true", help="segmentation without semantic points")
    p.add_argument("--exit-when-done", action="store_true", help="exit once the bag has been played and processed")
    return p


def main(args: Optional[list] = None) -> int:
    """Console script ``segment_stack``; ROS arguments (``--ros-args ...``) are passed to rclpy."""

    from rclpy.utilities import remove_ros_args  # optional heavy dependency

    argv = list(sys.argv if args is None else ["segment_stack", *args])
    opts = _parser().parse_args(remove_ros_args(argv)[1:])

    def build():
        return build_stack(
            params_file=opts.params_file, bag=opts.bag, rate=opts.rate, loop=opts.loop, model_path=opts.model,
            backend=opts.backend, device=opts.device, image_transport="compressed" if opts.compressed else "raw",
            use_lidar=not opts.no_lidar, calibration_yaml=opts.calibration, labeler_dir=opts.labeler_dir, out_dir=opts.out_dir,
            topics={"image": opts.image_topic, "camera_info": opts.camera_info_topic, "points": opts.points_topic},
        )

    done_at: list = []

    def bag_finished(nodes) -> bool:
        """With --exit-when-done: true 1 s after the bag player finished (last messages processed)."""
        player = next((n for n in nodes if hasattr(n, "done")), None)
        if not opts.exit_when_done or player is None or not player.done:
            return False
        done_at.append(time.monotonic())
        return done_at[-1] - done_at[0] > 1.0

    return run_nodes([build], args=argv, until=bag_finished)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
