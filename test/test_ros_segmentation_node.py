"""segmentation_node with real rclpy pub/sub on the real KITTI and nuScenes frames.

The node's mask must equal ``SegmentationModel.predict`` on the same image (class ids),
its semantic points must equal ``labels_to_points`` offline, headers must be carried over,
and bad input must be logged without stopping the node.
"""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import RosHarness, camera_model, frame_messages, kitti_frame, nuscenes_frame, tiny_model  # noqa: E402

from drive_segment_ros.nodes.segmentation_node import SegmentationNode  # noqa: E402
from drive_segment_ros.projection import labels_to_points  # noqa: E402
from drive_segment_ros.ros.image import encoded_to_compressed_msg, image_msg_to_array, image_msg_to_rgb  # noqa: E402
from drive_segment_ros.ros.msgtypes import rclpy_types  # noqa: E402
from drive_segment_ros.ros.pointcloud2 import pointcloud2_to_array, points_to_pointcloud2  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402


@pytest.fixture(scope="module")
def ros(tmp_path_factory, kitti_dir):
    h = RosHarness("segmentation")
    T = rclpy_types()
    ckpt = tmp_path_factory.mktemp("tiny_model")
    h.model = tiny_model(ckpt)
    h.kitti = kitti_frame(kitti_dir)
    remap = ["--ros-args", "-r", "~/image:=/t/kitti/image", "-r", "~/camera_info:=/t/kitti/camera_info", "-r", "~/points:=/t/kitti/points"]
    h.node = h.add(SegmentationNode(
        "seg_kitti", model=h.model, context=h.context, cli_args=remap,
        parameter_overrides=[Parameter("use_lidar", value=True), Parameter("T_cam_lidar", value=[float(v) for v in h.kitti["T_cam_lidar"].ravel()])],
    ))
    # second node: loads the same checkpoint from its model_path parameter, compressed input
    remap2 = ["--ros-args", "-r", "~/image:=/t/nus/image/compressed", "-r", "~/camera_info:=/t/nus/camera_info", "-r", "~/points:=/t/nus/points"]
    h.nus_node = h.add(SegmentationNode(
        "seg_nus", context=h.context, cli_args=remap2,
        parameter_overrides=[Parameter("model_path", value=str(ckpt)), Parameter("backend", value="torch"),
                             Parameter("image_transport", value="compressed"), Parameter("use_lidar", value=True),
                             Parameter("color_mode", value="color"), Parameter("slop_s", value=0.1)],
    ))
    h.pubs = {
        "image": h.publisher(T.Image, "/t/kitti/image"), "info": h.publisher(T.CameraInfo, "/t/kitti/camera_info"),
        "cloud": h.publisher(T.PointCloud2, "/t/kitti/points"), "nus_image": h.publisher(T.CompressedImage, "/t/nus/image/compressed"),
        "nus_info": h.publisher(T.CameraInfo, "/t/nus/camera_info"), "nus_cloud": h.publisher(T.PointCloud2, "/t/nus/points"),
    }
    h.mask = h.record(T.Image, "/seg_kitti/mask")
    h.color = h.record(T.Image, "/seg_kitti/mask_color")
    h.points = h.record(T.PointCloud2, "/seg_kitti/semantic_points")
    h.nus_mask = h.record(T.Image, "/seg_nus/mask")
    h.nus_color = h.record(T.Image, "/seg_nus/mask_color")
    h.nus_points = h.record(T.PointCloud2, "/seg_nus/semantic_points")
    assert h.wait_matched(pubs=list(h.pubs.values()), subs=list(h.probe.subscriptions))
    yield h
    h.close()


def send(h, msgs, prefix=""):
    """Publish camera_info, cloud, image (in that order)."""
    h.pubs[prefix + "info"].publish(msgs["info"])
    if msgs.get("cloud") is not None:
        h.pubs[prefix + "cloud"].publish(msgs["cloud"])
    h.pubs[prefix + "image"].publish(msgs["image"])


def restamp(msgs, dt_ns):
    """Shift every header stamp by ``dt_ns`` (new frames for the stale-frame filter)."""
    for m in msgs.values():
        if m is None:
            continue
        t = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec + dt_ns
        m.header.stamp.sec, m.header.stamp.nanosec = t // 10**9, t % 10**9
    return msgs


def test_kitti_mask_color_and_semantic_points(ros):
    f = ros.kitti
    msgs = frame_messages(f)
    n = len(ros.mask)
    send(ros, msgs)
    assert ros.spin_until(lambda: len(ros.mask) > n and len(ros.points) > n and len(ros.color) > n, 60.0), ros.node.last_error
    mask, color, cloud = ros.mask[-1], ros.color[-1], ros.points[-1]
    assert mask.encoding == "mono8" and (mask.height, mask.width) == (375, 1242)
    assert mask.header.stamp == msgs["image"].header.stamp and mask.header.frame_id == "camera_color_left_optical"
    assert color.encoding == "rgb8" and color.header == mask.header
    expected, _ = ros.model.predict(f["rgb"])
    got = image_msg_to_array(mask)
    assert np.array_equal(got, expected), "node class ids differ from SegmentationModel.predict"
    # overlay = alpha * palette + (1 - alpha) * image
    overlay = image_msg_to_rgb(color).astype(np.float32)
    want = 0.5 * ros.model.colorize(expected).astype(np.float32) + 0.5 * f["rgb"].astype(np.float32)
    assert np.abs(overlay - want).max() <= 1.0
    # semantic points: same header as the cloud, class_id == labels_to_points offline
    assert cloud.header == msgs["cloud"].header
    arr = pointcloud2_to_array(cloud)
    assert "class_id" in arr.dtype.names and arr.shape == (f["points"].shape[0],)
    want_ids = labels_to_points(expected, f["points"], camera_model(f), f["T_cam_lidar"])
    assert np.array_equal(arr["class_id"], want_ids)
    assert (want_ids >= 0).mean() > 0.5  # the KITTI scan is cropped to the camera FOV
    print(f"kitti: node timing {ros.node.last_timing}, labelled points {(want_ids >= 0).mean():.2f}")


def test_nuscenes_compressed_with_model_path(ros, nuscenes_dir):
    import cv2

    f = nuscenes_frame(nuscenes_dir)
    msgs = frame_messages(f)
    jpeg = (nuscenes_dir / next(p.name for p in nuscenes_dir.glob("*CAM_FRONT__*.jpg"))).read_bytes()
    stamp = msgs["image"].header.stamp.sec * 10**9 + msgs["image"].header.stamp.nanosec
    msgs["image"] = encoded_to_compressed_msg(jpeg, "jpeg", f["camera_frame"], stamp, rclpy_types())
    ros.nus_node.T_param = f["T_cam_lidar"]  # nuScenes extrinsics (the parameter path is covered by the KITTI node)
    n = len(ros.nus_mask)
    send(ros, msgs, prefix="nus_")
    assert ros.spin_until(lambda: len(ros.nus_mask) > n and len(ros.nus_points) > n, 60.0), ros.nus_node.last_error
    mask = ros.nus_mask[-1]
    assert (mask.height, mask.width) == (900, 1600) and mask.header.stamp == msgs["image"].header.stamp
    rgb = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    expected, _ = ros.model.predict(np.ascontiguousarray(rgb))  # same checkpoint, loaded separately
    assert np.array_equal(image_msg_to_array(mask), expected)
    assert np.array_equal(image_msg_to_rgb(ros.nus_color[-1]), ros.model.colorize(expected))  # color_mode: color
    arr = pointcloud2_to_array(ros.nus_points[-1])
    want = labels_to_points(expected, f["points"], camera_model(f), f["T_cam_lidar"])
    assert np.array_equal(arr["class_id"], want)
    assert 0.05 < (want >= 0).mean() < 0.6  # a 360 deg scan: only the front camera's wedge is labelled


def test_bad_inputs_logged_and_node_keeps_running(ros):
    T = rclpy_types()
    f = ros.kitti
    node = ros.node
    base = frame_messages(f)

    def expect_error(msgs, text, dt):
        errors = node.n_errors
        send(ros, restamp(msgs, dt))
        assert ros.spin_until(lambda: node.n_errors > errors, 30.0), f"no error for {text}"
        assert text in node.last_error, node.last_error

    # wrong encoding
    bad = frame_messages(f)
    bad["image"].encoding = "yuv422_yuy2"
    expect_error(bad, "encoding", 10**9)
    # image size mismatch vs CameraInfo
    bad = frame_messages(f)
    bad["info"].width = 1000
    expect_error(bad, "does not match CameraInfo", 2 * 10**9)
    # empty cloud / a cloud whose data length is wrong: only the semantic points are skipped
    for k, broken in enumerate(("empty", "data")):
        bad = frame_messages(f)
        if broken == "empty":
            bad["cloud"] = points_to_pointcloud2(np.zeros((0, 4), np.float32), f["lidar_frame"], f["lidar_stamp_ns"], T)
        else:
            bad["cloud"].data = bytes(bad["cloud"].data)[:-7]
        n_mask = len(ros.mask)
        expect_error(bad, "semantic points skipped", (3 + k) * 10**9 + 5 * 10**8)
        assert "mask published" in node.last_error and broken in node.last_error.lower(), node.last_error
        assert ros.spin_until(lambda: len(ros.mask) > n_mask, 10.0) and ros.mask[-1].header.stamp == bad["image"].header.stamp
    # next good frame still produces output
    n = len(ros.mask)
    good = restamp(frame_messages(f), 5 * 10**9)
    send(ros, good)
    assert ros.spin_until(lambda: len(ros.points) > 0 and ros.points[-1].header.stamp == good["cloud"].header.stamp, 60.0)
    assert len(ros.mask) > n and ros.mask[-1].header.stamp == good["image"].header.stamp


def test_stale_frames_dropped(ros):
    node = ros.node
    f = ros.kitti
    newest = node._last_stamp
    stale = restamp(frame_messages(f), newest - f["image_stamp_ns"] - 5 * 10**8)  # 0.5 s older than the last processed frame
    n_stale = node.n_stale
    send(ros, stale)
    assert ros.spin_until(lambda: node.n_stale > n_stale, 30.0)
    assert node._last_stamp == newest


def test_missing_camera_info(tmp_path, ros):
    """A node that never got CameraInfo logs an error per image and recovers once it arrives."""
    T = rclpy_types()
    node = ros.add(SegmentationNode("seg_noinfo", model=ros.model, context=ros.context,
                                    cli_args=["--ros-args", "-r", "~/image:=/t/noinfo/image", "-r", "~/camera_info:=/t/noinfo/camera_info"]))
    pub_img = ros.publisher(T.Image, "/t/noinfo/image")
    pub_info = ros.publisher(T.CameraInfo, "/t/noinfo/camera_info")
    masks = ros.record(T.Image, "/seg_noinfo/mask")
    assert ros.wait_matched(pubs=[pub_img, pub_info], subs=[ros.subs["/seg_noinfo/mask"]])
    msgs = frame_messages(ros.kitti)
    pub_img.publish(msgs["image"])
    assert ros.spin_until(lambda: node.n_errors > 0, 30.0)
    assert "no CameraInfo" in node.last_error and masks == []
    pub_info.publish(msgs["info"])
    ros.spin_until(lambda: len(node._infos) > 0, 10.0)
    pub_img.publish(restamp({"i": msgs["image"]}, 10**6)["i"])
    assert ros.spin_until(lambda: len(masks) > 0, 30.0)


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_other_encodings(ros, encoding):
    """bgr8 and mono8 inputs are decoded to RGB before the model (class ids as offline)."""
    from drive_segment_ros.ros.image import mono8_to_image_msg, rgb_to_image_msg

    f = ros.kitti
    T = rclpy_types()
    msgs = restamp(frame_messages(f), 10 * 10**9 + (1 if encoding == "bgr8" else 2) * 10**8)
    stamp = msgs["image"].header.stamp.sec * 10**9 + msgs["image"].header.stamp.nanosec
    if encoding == "bgr8":
        msgs["image"] = rgb_to_image_msg(f["rgb"], f["camera_frame"], stamp, T, encoding="bgr8")
        rgb = f["rgb"]
    else:
        gray = f["rgb"][:, :, 1].copy()
        msgs["image"] = mono8_to_image_msg(gray, f["camera_frame"], stamp, T)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    n = len(ros.mask)
    send(ros, msgs)
    assert ros.spin_until(lambda: len(ros.mask) > n and ros.mask[-1].header.stamp == msgs["image"].header.stamp, 60.0), ros.node.last_error
    assert np.array_equal(image_msg_to_array(ros.mask[-1]), ros.model.predict(rgb)[0])


def test_max_age_drops_old_frames(ros):
    """With max_age_s > 0 a frame stamped long before the node clock is dropped, not processed."""
    T = rclpy_types()
    node = ros.add(SegmentationNode("seg_maxage", model=ros.model, context=ros.context,
                                    cli_args=["--ros-args", "-r", "~/image:=/t/maxage/image"],
                                    parameter_overrides=[Parameter("max_age_s", value=1.0), Parameter("require_camera_info", value=False)]))
    pub = ros.publisher(T.Image, "/t/maxage/image")
    masks = ros.record(T.Image, "/seg_maxage/mask")
    assert ros.wait_matched(pubs=[pub], subs=[ros.subs["/seg_maxage/mask"]])
    old = frame_messages(ros.kitti)["image"]  # KITTI stamp: 2011, far older than 1 s
    pub.publish(old)
    assert ros.spin_until(lambda: node.n_stale == 1, 30.0)
    from drive_segment_ros.ros.image import rgb_to_image_msg

    fresh = rgb_to_image_msg(ros.kitti["rgb"], "cam", node.get_clock().now().nanoseconds, T)
    pub.publish(fresh)
    assert ros.spin_until(lambda: len(masks) == 1, 30.0) and node.n_stale == 1


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR chunk claiming ``width`` x ``height`` (no pixel data)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_compressed_images_sized_before_decoding(ros, nuscenes_dir):
    """A PNG claiming 20000x20000 or 3000x2000 is refused from its header (no decoding, no allocation)."""
    f = nuscenes_frame(nuscenes_dir)
    node = ros.nus_node
    node.T_param = f["T_cam_lidar"]
    T = rclpy_types()
    for k, (size, text) in enumerate((((20000, 20000), "max_image_pixels"), ((3000, 2000), "does not match CameraInfo 1600x900"))):
        msgs = restamp(frame_messages(f), (20 + k) * 10**9)
        stamp = msgs["image"].header.stamp.sec * 10**9 + msgs["image"].header.stamp.nanosec
        msgs["image"] = encoded_to_compressed_msg(_png_header(*size) + bytes(400_000), "png", f["camera_frame"], stamp, T)
        errors = node.n_errors
        send(ros, msgs, prefix="nus_")
        assert ros.spin_until(lambda: node.n_errors > errors, 30.0)
        assert "refused before decoding" in node.last_error and text in node.last_error, node.last_error
        assert f"{size[0]}x{size[1]}" in node.last_error


def test_time_jump_back_resets_stale_state(ros):
    """A stamp far behind the last processed one (bag restarted) is processed, not dropped as stale."""
    node = ros.node
    f = ros.kitti
    newest = node._last_stamp
    assert newest > 0
    back = restamp(frame_messages(f), f["image_stamp_ns"] - 10**9 - f["image_stamp_ns"])  # 1 s before the KITTI stamp
    n, n_stale = len(ros.mask), node.n_stale
    send(ros, back)
    assert ros.spin_until(lambda: len(ros.mask) > n, 30.0), node.last_error
    assert node.n_stale == n_stale and node._last_stamp == f["image_stamp_ns"] - 10**9
