"""proposal_node with real rclpy pub/sub on the real KITTI and nuScenes scans."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import RosHarness, frame_messages, kitti_frame, nuscenes_frame  # noqa: E402

from drive_segment_ros.nodes.proposal_node import ProposalNode, segment_boxes, segments_cloud_array  # noqa: E402
from drive_segment_ros.proposals import ProposalConfig, segment_scan  # noqa: E402
from drive_segment_ros.ros.msgtypes import rclpy_types  # noqa: E402
from drive_segment_ros.ros.pointcloud2 import pointcloud2_to_array, points_to_pointcloud2  # noqa: E402


@pytest.fixture(scope="module")
def ros():
    h = RosHarness("proposals")
    node = h.add(ProposalNode("proposal_node_test", context=h.context,
                              cli_args=["--ros-args", "-r", "~/points:=/test/points"]))
    T = rclpy_types()
    h.pub = h.publisher(T.PointCloud2, "/test/points")
    h.segments = h.record(T.PointCloud2, "/proposal_node_test/segments")
    h.markers = h.record(T.MarkerArray, "/proposal_node_test/markers")
    h.node = node
    assert h.wait_matched(pubs=[h.pub], subs=list(h.probe.subscriptions))
    yield h
    h.close()


def publish_and_wait(h, msg, n_before):
    h.pub.publish(msg)
    return h.spin_until(lambda: len(h.segments) > n_before and len(h.markers) > n_before, timeout=30.0)


def test_box_helpers_known_answer():
    pts = np.array([[0, 0, 0], [1, 2, 3], [5, 5, 5], [9, 9, 9], [4, 4, 4]], dtype=np.float32)
    labels = np.array([3, 3, -1, 7, -2], dtype=np.int32)
    ids, mins, maxs, counts = segment_boxes(pts, labels)
    assert ids.tolist() == [3, 7] and counts.tolist() == [2, 1]
    assert mins.tolist() == [[0, 0, 0], [9, 9, 9]] and maxs.tolist() == [[1, 2, 3], [9, 9, 9]]
    arr = segments_cloud_array(np.c_[pts, np.arange(5)], labels)
    assert arr["ground"].tolist() == [0, 0, 1, 0, 0] and arr["intensity"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("dataset", ["kitti", "nuscenes"])
def test_real_scan_matches_offline_segment_scan(ros, dataset, request):
    frame = kitti_frame(request.getfixturevalue("kitti_dir")) if dataset == "kitti" else nuscenes_frame(request.getfixturevalue("nuscenes_dir"))
    msg = frame_messages(frame)["cloud"]
    n = len(ros.segments)
    assert publish_and_wait(ros, msg, n), f"no output for {dataset}: {ros.node.last_error}"
    out = ros.segments[-1]
    assert out.header.stamp == msg.header.stamp and out.header.frame_id == msg.header.frame_id
    assert [f.name for f in out.fields] == ["x", "y", "z", "intensity", "segment", "ground"]
    arr = pointcloud2_to_array(out)
    expected = segment_scan(frame["points"], ProposalConfig(), rings=frame["rings"])
    labels = np.asarray(expected.labels)
    assert arr.shape == (frame["points"].shape[0],)
    assert np.array_equal(arr["segment"], labels)
    assert np.array_equal(arr["ground"], (labels == -1).astype(np.uint8))
    assert np.allclose(arr["x"], frame["points"][:, 0]) and np.allclose(arr["intensity"], frame["points"][:, 3])
    assert expected.n_segments > 5 and (labels == -1).any()
    markers = ros.markers[-1].markers
    assert markers[0].action == markers[0].DELETEALL
    boxes = markers[1:]
    assert len(boxes) == int(expected.n_segments) == len(np.unique(labels[labels >= 0]))
    assert all(m.header.frame_id == msg.header.frame_id and m.header.stamp == msg.header.stamp for m in markers)
    # one box checked against the points of its segment
    k = boxes[0].id
    seg = frame["points"][labels == k, :3]
    centre = (seg.min(0) + seg.max(0)) / 2
    assert np.allclose([boxes[0].pose.position.x, boxes[0].pose.position.y, boxes[0].pose.position.z], centre, atol=1e-4)
    print(f"{dataset}: {arr.shape[0]} points, {expected.n_segments} segments, ground {np.mean(labels == -1):.2f}, node {ros.node.last_timing_ms:.0f} ms")


def test_empty_and_bad_clouds_keep_node_alive(ros, kitti_dir):
    T = rclpy_types()
    errors = ros.node.n_errors
    empty = points_to_pointcloud2(np.zeros((0, 4), np.float32), "velo_link", 5, T)
    ros.pub.publish(empty)
    assert ros.spin_until(lambda: ros.node.n_errors > errors, 10.0)
    assert "empty" in ros.node.last_error
    no_xyz = T.PointCloud2(header=empty.header, height=1, width=2, fields=[T.PointField(name="a", offset=0, datatype=7, count=1)],
                           point_step=4, row_step=8, data=bytes(8), is_dense=True)
    ros.pub.publish(no_xyz)
    assert ros.spin_until(lambda: ros.node.n_errors > errors + 1, 10.0)
    # the node still works on the next good scan
    frame = kitti_frame(kitti_dir)
    good = frame_messages(frame)["cloud"]
    assert publish_and_wait(ros, good, len(ros.segments))
    assert ros.segments[-1].header.stamp == good.header.stamp


def test_parameters_declared_with_descriptors_and_overridable(ros, tmp_path):
    from rclpy.parameter import Parameter

    node = ProposalNode("proposal_node_params", context=ros.context, parameter_overrides=[
        Parameter("proposals.segment_angle_deg", value=20.0), Parameter("proposals.backend", value="dbscan")])
    try:
        assert node.config.segment_angle_deg == 20.0 and node.config.backend == "dbscan"
        assert node.config.min_segment_size == ProposalConfig().min_segment_size
        desc = node.describe_parameters(["proposals.segment_angle_deg", "publish_markers"])
        assert all(d.description for d in desc)
        # a YAML config is the base; explicit parameters still win
        yml = tmp_path / "proposals.yaml"
        yml.write_text("min_segment_size: 33\nsegment_angle_deg: 12.0\n")
        if hasattr(ProposalConfig, "from_yaml"):
            node2 = ProposalNode("proposal_node_yaml", context=ros.context, parameter_overrides=[
                Parameter("proposals_config", value=str(yml)), Parameter("proposals.segment_angle_deg", value=15.0)])
            assert node2.config.min_segment_size == 33 and node2.config.segment_angle_deg == 15.0
            node2.destroy_node()
    finally:
        node.destroy_node()
