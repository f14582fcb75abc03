"""Calibration: CameraInfo <-> CameraModel, /tf_static tree composition in the ONE transform tree
(TransformBuffer, known answers), calibration YAML, the ONE transform validator behind every path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drive_segment_ros.calibration import load_calibration_yaml
from drive_segment_ros.geometry import invert_transform, quaternion_to_matrix, validate_transform
from drive_segment_ros.nodes import transform_from_parameter
from drive_segment_ros.projection import labels_to_points, project_points, transform_points
from drive_segment_ros.ros.camera_info import camera_info_fields, camera_info_msg, camera_model_from_info, transform_stamped
from drive_segment_ros.segment_map import segment_map
from drive_segment_ros.tf_buffer import TransformBuffer, TransformLookupError
from drive_segment_ros.ros.msgtypes import rclpy_types, rosbags_types
from drive_segment_ros.types import CameraModel, DriveSegmentError

REPO = Path(__file__).resolve().parents[1]
CAM = CameraModel(K=np.array([[700.0, 0, 620], [0, 710, 180], [0, 0, 1]]), D=np.array([-0.1, 0.02, 0.001, 0.0, 0.0]),
                  width=1242, height=375, frame_id="cam_optical")


def _T(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
def test_camera_info_round_trip(kind):
    types = rosbags_types() if kind == "rosbags" else rclpy_types()
    P = np.hstack([CAM.K, [[44.8], [0.2], [0.0027]]])
    msg = camera_info_msg(CAM, 77, types, P=P)
    assert isinstance(msg, types.CameraInfo)
    np.testing.assert_array_equal(np.asarray(msg.p), P.reshape(-1))
    back = camera_model_from_info(msg, "/cam/camera_info", image_size=(1242, 375))
    np.testing.assert_array_equal(back.K, CAM.K)
    np.testing.assert_array_equal(back.D, CAM.D)
    assert (back.width, back.height, back.frame_id, back.distortion_model) == (1242, 375, "cam_optical", "plumb_bob")
    fields = camera_info_fields(CAM)
    assert fields["p"].tolist() == [700, 0, 620, 0, 0, 710, 180, 0, 0, 0, 1, 0]
    assert fields["r"].tolist() == np.eye(3).reshape(-1).tolist()


def test_camera_info_validation_names_topic():
    msg = camera_info_msg(CAM, 0)
    with pytest.raises(DriveSegmentError, match=r"'/front/camera_info'.*1242x375 does not match.*1600x900"):
        camera_model_from_info(msg, "/front/camera_info", image_size=(1600, 900))
    msg.k = np.zeros(9)
    with pytest.raises(DriveSegmentError, match="/front/camera_info.*fx, fy must be > 0"):
        camera_model_from_info(msg, "/front/camera_info")
    msg.k = np.array([np.nan] + [1.0] * 8)
    with pytest.raises(DriveSegmentError, match="finite"):
        camera_model_from_info(msg, "/x")
    msg = camera_info_msg(CAM, 0)
    msg.width = 0
    with pytest.raises(DriveSegmentError, match="positive"):
        camera_model_from_info(msg, "/x")


def test_quaternion_known_answer():
    # 90 deg about z: x axis -> y axis
    s = np.sqrt(0.5)
    R = quaternion_to_matrix((0, 0, s, s))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(DriveSegmentError, match="quaternion"):
        quaternion_to_matrix((0, 0, 0, 0))


def test_tree_composes_both_directions():
    T_base_lidar = _T([0, 0, 0.1], [1.0, 0.0, 1.8])
    # REP 103 optical frame: z forward = base x, x right = -base y, y down = -base z
    R_base_opt = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = R_base_opt
    T_base_cam[:3, 3] = [1.5, 0.2, 1.6]
    types = rosbags_types()
    tf = types.TFMessage(transforms=[transform_stamped(T_base_lidar, "base_link", "lidar", 0),
                                     transform_stamped(T_base_cam, "base_link", "cam_optical", 0)])
    tree = TransformBuffer.from_messages([tf], static=True)
    assert tree.frames == ["base_link", "cam_optical", "lidar"]
    assert "/lidar" in tree and "nope" not in tree
    T_cam_lidar = tree.lookup_transform("cam_optical", "lidar")
    np.testing.assert_allclose(T_cam_lidar, invert_transform(T_base_cam) @ T_base_lidar, atol=1e-9)
    np.testing.assert_allclose(tree.lookup_transform("lidar", "cam_optical") @ T_cam_lidar, np.eye(4), atol=1e-9)
    # a point 10 m ahead of the base, at camera height, lands on the optical axis, depth 8.5 m
    p_base = np.array([10.0, 0.2, 1.6, 1.0])
    p_cam = T_cam_lidar @ invert_transform(T_base_lidar) @ p_base
    np.testing.assert_allclose(p_cam[:3], [0, 0, 8.5], atol=1e-9)
    np.testing.assert_allclose(tree.lookup_transform("base_link", "lidar"), T_base_lidar, atol=1e-12)
    np.testing.assert_allclose(tree.lookup_transform("lidar", "lidar"), np.eye(4))
    # a chain of three edges with the child declared before the parent
    tree.set_transform(_T([0.3, 0, 0], [0, 1, 0]), "cam_optical", "cam_sub", static=True)
    np.testing.assert_allclose(tree.lookup_transform("cam_sub", "lidar"),
                               invert_transform(_T([0.3, 0, 0], [0, 1, 0])) @ T_cam_lidar, atol=1e-9)


def test_tree_errors():
    tree = TransformBuffer()
    tree.set_transform(np.eye(4), "a", "b", static=True)
    tree.set_transform(np.eye(4), "c", "d", static=True)
    with pytest.raises(TransformLookupError, match="frames 'a' and 'd' are not connected"):
        tree.lookup_transform("a", "d")
    with pytest.raises(TransformLookupError, match="frame 'zz' does not exist"):
        tree.lookup_transform("a", "zz")
    with pytest.raises(DriveSegmentError, match="4x4"):
        tree.set_transform(np.eye(3), "a", "x", static=True)
    bad = np.eye(4)
    bad[0, 0] = 2
    with pytest.raises(DriveSegmentError, match="rotation"):
        tree.set_transform(bad, "a", "x", static=True)
    for call in (lambda: tree.lookup_transform("a", "d"), lambda: tree.set_transform(bad, "a", "x")):
        with pytest.raises(DriveSegmentError) as err:
            call()
        assert "\n" not in str(err.value)  # one-line errors


def test_rclpy_transform_stamped():
    types = rclpy_types()
    T = _T([0.1, -0.2, 0.3], [1, 2, 3])
    ts = transform_stamped(T, "base_link", "x", 5, types)
    tree = TransformBuffer()
    tree.add_transform_stamped(ts, static=True)
    np.testing.assert_allclose(tree.lookup_transform("base_link", "x"), T, atol=1e-12)


def test_example_yaml_matches_kitti_calib(kitti_dir):
    cal = load_calibration_yaml(REPO / "config" / "calibration_example.yaml")
    assert cal.lidar_frame == "velo_link"
    cam = cal.for_camera(frame_id="camera_color_left_optical")
    c = json.loads((kitti_dir / "calib.json").read_text())["cameras"]["CAM2"]
    P = np.array(c["cam2img"])
    lidar2img = np.array(c["lidar2img"])
    np.testing.assert_allclose(cam.K, P[:3, :3])
    pts = np.fromfile(kitti_dir / "000008.bin", np.float32).reshape(-1, 4)[:, :3].astype(np.float64)
    X = np.hstack([pts, np.ones((len(pts), 1))])
    a = (cam.K @ (cam.T_cam_lidar @ X.T)[:3]).T
    b = (lidar2img @ X.T)[:3].T
    np.testing.assert_allclose(a[:, :2] / a[:, 2:], b[:, :2] / b[:, 2:], atol=2e-3)  # pixels


def test_yaml_errors(tmp_path):
    p = tmp_path / "c.yaml"
    with pytest.raises(DriveSegmentError, match="not found"):
        load_calibration_yaml(p)
    p.write_text("cameras: {cam: {T_cam_lidar: [[1, 0, 0], [0, 1, 0]]}}")
    with pytest.raises(DriveSegmentError, match="camera 'cam' T_cam_lidar: expected a 4x4"):
        load_calibration_yaml(p)
    p.write_text("cameras: {cam: {T_cam_lidar: [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1], K: [1, 2]}}")
    with pytest.raises(DriveSegmentError, match="K must be 3x3"):
        load_calibration_yaml(p)
    p.write_text("foo: 1")
    with pytest.raises(DriveSegmentError, match="'cameras'"):
        load_calibration_yaml(p)
    p.write_text("cameras: [unclosed")
    with pytest.raises(DriveSegmentError, match="invalid YAML"):
        load_calibration_yaml(p)
    p.write_text("cameras: {/cam/image_raw: {T_cam_lidar: [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1], D: [0.1, 0, 0, 0, 0]}}")
    cal = load_calibration_yaml(p)
    entry = cal.for_camera(frame_id="other", topic="/cam/image_raw")
    assert entry is not None and entry.K is None and entry.D.tolist() == [0.1, 0, 0, 0, 0]
    assert entry.apply(CAM).D.tolist() == [0.1, 0, 0, 0, 0] and entry.apply(CAM).K is not None


def _reflection() -> np.ndarray:
    """An orthonormal matrix with det = -1 (y axis mirrored): a left-handed 'calibration'."""
    T = _T([0.1, -0.2, 0.3], [1.0, 2.0, 3.0])
    T[:3, 1] *= -1.0
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3)) and np.linalg.det(T[:3, :3]) < 0
    return T


def test_reflection_rejected_by_every_transform_path(tmp_path):
    """ONE validator (geometry.validate_transform) behind every way a transform enters the package."""
    T = _reflection()
    pts = np.array([[5.0, 0.0, 0.0], [6.0, 1.0, 0.5]])
    cam = CameraModel(K=np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]]), D=np.zeros(5), width=64, height=48)
    paths = {
        "validate_transform": lambda: validate_transform(T, "T"),
        "TransformBuffer.set_transform": lambda: TransformBuffer().set_transform(T, "a", "b", static=True),
        "transform_stamped": lambda: transform_stamped(T, "a", "b", 0),
        "transform_from_parameter": lambda: transform_from_parameter(T.reshape(-1).tolist()),
        "transform_points": lambda: transform_points(pts, T),
        "project_points": lambda: project_points(pts, cam, T),
        "labels_to_points": lambda: labels_to_points(np.zeros((48, 64), int), pts, cam, T),
        "segment_map": lambda: segment_map(pts, np.zeros(2, int), cam, T),
    }
    (tmp_path / "cal.yaml").write_text(f"cameras:\n  cam:\n    T_cam_lidar: {T.reshape(-1).tolist()}\n")
    paths["load_calibration_yaml"] = lambda: load_calibration_yaml(tmp_path / "cal.yaml")
    for name, call in paths.items():
        with pytest.raises(DriveSegmentError, match="det < 0"):
            call()
            pytest.fail(f"{name} accepted a reflection")
    # the proper rotation with the same numbers otherwise is accepted everywhere
    good = T.copy()
    good[:3, 1] *= -1.0
    np.testing.assert_array_equal(validate_transform(good), good)
    np.testing.assert_array_equal(transform_from_parameter(good.reshape(-1).tolist()), good)
    assert project_points(pts, cam, good).uv.shape == (2, 2)


@pytest.mark.parametrize("bad, match", [
    (np.eye(3), "4x4"),
    (np.full((4, 4), np.nan), "finite"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "rotation"),
    (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "last row"),
])
def test_validate_transform_rejects(bad, match):
    with pytest.raises(DriveSegmentError, match=match):
        validate_transform(bad, "T")
    with pytest.raises(DriveSegmentError, match=match):
        transform_points(np.zeros((1, 3)), bad)


def test_camera_model_from_ros1_info_field_names():
    from types import SimpleNamespace

    ros1 = SimpleNamespace(K=CAM.K.reshape(-1).tolist(), D=CAM.D.tolist(), width=1242, height=375, distortion_model="plumb_bob",
                           header=SimpleNamespace(frame_id="cam_optical"))
    back = camera_model_from_info(ros1, "/cam/camera_info")
    np.testing.assert_array_equal(back.K, CAM.K)
    np.testing.assert_array_equal(back.D, CAM.D)
    with pytest.raises(DriveSegmentError, match=r"CameraInfo on '/x' has none of the fields \['k', 'K'\]"):
        camera_model_from_info(SimpleNamespace(width=1, height=1), "/x")


def test_node_tf_static_uses_the_transform_buffer():
    """The camera + LiDAR nodes' /tf_static path (CameraLidarMixin) fills the ONE transform tree: a
    re-published frame replaces its old edge (also under a new parent), a bad message is one counted
    error, and a missing frame is a one-line DriveSegmentError."""
    from types import SimpleNamespace as NS

    from drive_segment_ros.nodes.camera_lidar import CameraLidarMixin

    class FakeNode(CameraLidarMixin):
        def __init__(self):
            self.errors = []

        def create_subscription(self, msg_type, topic, callback, qos):
            return NS(topic_name=topic)

        def report_error(self, text):
            self.errors.append(text)

    node = FakeNode()
    params = {"T_cam_lidar": [], "calibration_yaml": "", "use_tf_static": True, "max_image_pixels": 1 << 24}
    node.setup_camera_lidar(params, NS(CameraInfo=object, TFMessage=object))
    assert isinstance(node._tf_tree, TransformBuffer) and node.sub_tf.topic_name == "/tf_static"
    types = rosbags_types()
    T_base_lidar, T_base_cam = _T([0, 0, 0.1], [1.0, 0.0, 1.8]), _T([0.1, -0.2, 0.3], [1.5, 0.2, 1.6])
    node.on_tf_static(types.TFMessage(transforms=[transform_stamped(T_base_lidar, "base_link", "lidar", 0),
                                                  transform_stamped(T_base_cam, "base_link", "cam", 0)]))
    np.testing.assert_allclose(node.lookup_T_cam_lidar("cam", "lidar"), invert_transform(T_base_cam) @ T_base_lidar, atol=1e-9)
    T_mount_cam = _T([0, 0.2, 0], [0.0, 0.1, 0.0])  # the camera re-published under a mount frame
    node.on_tf_static(types.TFMessage(transforms=[transform_stamped(np.eye(4), "base_link", "mount", 0),
                                                  transform_stamped(T_mount_cam, "mount", "cam", 0)]))
    np.testing.assert_allclose(node.lookup_T_cam_lidar("cam", "lidar"), invert_transform(T_mount_cam) @ T_base_lidar, atol=1e-9)
    assert node.errors == []
    node.on_tf_static(types.TFMessage(transforms=[transform_stamped(np.eye(4), "cam", "base_link", 0)]))  # a loop
    assert len(node.errors) == 1 and "would close a loop" in node.errors[0] and "\n" not in node.errors[0]
    with pytest.raises(DriveSegmentError, match="frame 'other_cam' does not exist") as err:
        node.lookup_T_cam_lidar("other_cam", "lidar")
    assert "\n" not in str(err.value)
