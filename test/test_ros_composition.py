"""segment_stack: bag_player -> proposal_node + segmentation_node in one executor (real KITTI bag)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import RosHarness, tiny_model  # noqa: E402

from drive_segment_ros.nodes.composition import DEFAULT_TOPICS, build_stack, default_params_file  # noqa: E402
from drive_segment_ros.ros.image import image_msg_to_array  # noqa: E402
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types  # noqa: E402
from drive_segment_ros.ros.pointcloud2 import pointcloud2_to_array  # noqa: E402
from drive_segment_ros.types import DriveSegmentError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_default_params_file_is_the_repo_config():
    assert Path(default_params_file()).resolve() == (ROOT / "config" / "segment.yaml").resolve()


def test_stack_on_kitti_bag(kitti_bag, tmp_path):
    from drive_segment_ros.calibration import load_calibration_yaml
    from drive_segment_training.drives import DriveReader
    from drive_segment_ros.projection import labels_to_points

    h = RosHarness("stack")
    try:
        T = rclpy_types()
        model = tiny_model(tmp_path / "ckpt")
        masks = h.record(T.Image, "/segmentation_node/mask")
        sem = h.record(T.PointCloud2, "/segmentation_node/semantic_points")
        segs = h.record(T.PointCloud2, "/proposal_node/segments")
        calib = ROOT / "config" / "calibration_example.yaml"
        nodes = build_stack(h.context, bag=str(kitti_bag), rate=0.0, model_path=str(tmp_path / "ckpt"), backend="torch",
                            calibration_yaml=str(calib))
        assert [n.get_name() for n in nodes] == ["proposal_node", "segmentation_node", "bag_player"]
        for n in nodes:
            h.add(n)
        assert h.spin_until(lambda: masks and sem and segs, 60.0), [getattr(n, "last_error", "") for n in nodes]
        frame = next(iter(DriveReader(kitti_bag, progress=False)))
        want, _ = model.predict(frame.image)
        assert np.array_equal(image_msg_to_array(masks[0]), want)
        assert header_stamp_ns(masks[0]) == frame.image_stamp_ns and masks[0].header.frame_id == frame.camera.frame_id
        T_cam_lidar = load_calibration_yaml(calib).cameras["camera_color_left_optical"].T_cam_lidar
        ids = pointcloud2_to_array(sem[0])["class_id"]
        assert np.array_equal(ids, labels_to_points(want, frame.points, frame.camera, T_cam_lidar))
        assert (ids >= 0).mean() > 0.5
        assert pointcloud2_to_array(segs[0]).shape == (frame.points.shape[0],)
        assert all(getattr(n, "n_errors", 0) == 0 for n in nodes)
        # no model and no bag: only the proposal node; a segmentation node without a model is refused
        only = build_stack(h.context, topics=DEFAULT_TOPICS)
        assert [n.get_name() for n in only] == ["proposal_node"]
        only[0].destroy_node()
        from drive_segment_ros.nodes.segmentation_node import SegmentationNode

        with pytest.raises(DriveSegmentError, match="model_path is empty"):
            SegmentationNode("seg_nomodel", context=h.context)
    finally:
        h.close()
