"""Image / CompressedImage <-> numpy: every encoding, row padding, both message kinds, real images."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from drive_segment_ros.ros.image import (
    compressed_msg_to_rgb,
    encoded_to_compressed_msg,
    image_msg_to_array,
    image_msg_to_rgb,
    mono8_to_image_msg,
    mono16_to_image_msg,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)
from drive_segment_ros.ros.msgtypes import header_stamp_ns, make_header, rclpy_types, rosbags_types
from drive_segment_ros.types import DriveSegmentError

RGB = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _img(types, pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    h, w = pixels.shape[:2]
    row = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)
    data = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1).reshape(-1)
    return types.Image(
        header=make_header("cam", 42, types), height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
        step=row.shape[1] + pad, data=data if types.kind == "rosbags" else data.tobytes(),
    )


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
@pytest.mark.parametrize("pad", [0, 5])
def test_color_encodings(kind, pad):
    t = rosbags_types() if kind == "rosbags" else rclpy_types()
    alpha = np.full((5, 7, 1), 77, np.uint8)
    cases = {
        "rgb8": RGB,
        "bgr8": RGB[:, :, ::-1],
        "rgba8": np.concatenate([RGB, alpha], axis=2),
        "bgra8": np.concatenate([RGB[:, :, ::-1], alpha], axis=2),
    }
    for enc, px in cases.items():
        out = image_msg_to_rgb(_img(t, px, enc, pad))
        assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, RGB, err_msg=enc)


def test_mono8_and_mono16_scaled():
    t = rosbags_types()
    gray = RGB[:, :, 0]
    out = image_msg_to_rgb(_img(t, gray, "mono8", pad=3))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    m16 = np.array([[0, 257, 65535, 128, 129, 1000]], np.uint16)
    expected = np.array([0, 1, 255, 0, 1, 4], np.uint8)  # round(v / 257): 1000/257 = 3.89 -> 4
    for bigendian in (False, True):
        px = m16.astype(">u2" if bigendian else "<u2")
        out = image_msg_to_rgb(_img(t, px, "mono16", pad=2, bigendian=bigendian))
        np.testing.assert_array_equal(out[0, :, 0], expected)
        np.testing.assert_array_equal(image_msg_to_array(_img(t, px, "mono16", bigendian=bigendian)), m16)


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
def test_round_trips(kind):
    t = rosbags_types() if kind == "rosbags" else rclpy_types()
    msg = rgb_to_image_msg(RGB, "cam_optical", 1_000_000_007, t)
    assert isinstance(msg, t.Image) and msg.encoding == "rgb8" and msg.step == 21
    assert header_stamp_ns(msg) == 1_000_000_007 and msg.header.frame_id == "cam_optical"
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)
    bgr = rgb_to_image_msg(RGB, "c", 0, t, encoding="bgr8")
    assert bgr.encoding == "bgr8"
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), RGB)
    np.testing.assert_array_equal(np.frombuffer(bytes(bgr.data), np.uint8).reshape(5, 7, 3), RGB[:, :, ::-1])
    mask = (np.arange(35, dtype=np.uint8) * 7).reshape(5, 7)
    m = mono8_to_image_msg(mask, "c", 3, t)
    assert m.encoding == "mono8" and m.step == 7
    np.testing.assert_array_equal(image_msg_to_array(m), mask)
    lab = (np.arange(35, dtype=np.uint16) * 1000).reshape(5, 7)
    np.testing.assert_array_equal(image_msg_to_array(mono16_to_image_msg(lab, "c", 3, t)), lab)
    png = rgb_to_compressed_msg(RGB, "c", 9, t, fmt="png")
    assert png.format == "png"
    np.testing.assert_array_equal(compressed_msg_to_rgb(png), RGB)  # lossless
    jpg = rgb_to_compressed_msg(np.full((16, 16, 3), (200, 30, 90), np.uint8), "c", 9, t, fmt="jpeg", quality=95)
    assert np.abs(compressed_msg_to_rgb(jpg).astype(int) - (200, 30, 90)).max() <= 4  # RGB order kept


def test_architecture_argument_order_is_accepted():
    msg = rgb_to_image_msg(RGB, "bgr8", "cam", 5, rosbags_types())
    assert msg.encoding == "bgr8" and msg.header.frame_id == "cam" and header_stamp_ns(msg) == 5
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


def test_errors():
    t = rosbags_types()
    with pytest.raises(DriveSegmentError, match="unsupported image encoding 'yuv422'"):
        image_msg_to_rgb(_img(t, RGB, "yuv422"))
    bad = _img(t, RGB, "rgb8")
    bad.height = 6
    with pytest.raises(DriveSegmentError, match="needs"):
        image_msg_to_rgb(bad)
    bad = _img(t, RGB, "rgb8")
    bad.step = 20
    with pytest.raises(DriveSegmentError, match="step 20"):
        image_msg_to_rgb(bad)
    with pytest.raises(DriveSegmentError, match="cannot decode"):
        compressed_msg_to_rgb(encoded_to_compressed_msg(b"not a jpeg", "jpeg", "c", 0, t))
    with pytest.raises(DriveSegmentError, match=r"\(H, W, 3\) uint8"):
        rgb_to_image_msg(RGB.astype(np.float32), "c", 0, t)
    with pytest.raises(DriveSegmentError, match="uint8"):
        mono8_to_image_msg(np.zeros((2, 2), np.int32), "c", 0, t)
    with pytest.raises(DriveSegmentError, match="encoding"):
        rgb_to_image_msg(RGB, "c", 0, t, encoding="rgba8")


def test_real_kitti_png_round_trip(kitti_dir):
    rgb = cv2.imread(str(kitti_dir / "000008.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert rgb.shape == (375, 1242, 3)
    for t in (rosbags_types(), rclpy_types()):
        np.testing.assert_array_equal(image_msg_to_rgb(rgb_to_image_msg(rgb, "cam", 1, t)), rgb)


def test_real_nuscenes_jpeg_decodes_like_opencv(nuscenes_dir):
    path = next(nuscenes_dir.glob("*CAM_FRONT__*.jpg"))
    raw = path.read_bytes()
    msg = encoded_to_compressed_msg(raw, "jpeg", "CAM_FRONT_optical", 1, rosbags_types())
    rgb = compressed_msg_to_rgb(msg)
    assert rgb.shape == (900, 1600, 3)
    np.testing.assert_array_equal(rgb, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_one_decoder_even_when_cv_bridge_is_importable(monkeypatch):
    """cv_bridge (when installed) must not change what an rclpy Image decodes to: ONE tested decoder."""
    import importlib
    import sys
    import types as pytypes

    import drive_segment_ros.ros.image as image_mod

    class FakeBridge:  # stands for a bridge whose result differs from ours (e.g. ignoring ``step`` padding)
        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            return np.zeros((int(msg.height), int(msg.width), 3), np.uint8)

    monkeypatch.setitem(sys.modules, "cv_bridge", pytypes.SimpleNamespace(CvBridge=FakeBridge))
    try:
        reloaded = importlib.reload(image_mod)
        msg = _img(rclpy_types(), RGB[:, :, ::-1], "bgr8", pad=3)
        np.testing.assert_array_equal(reloaded.image_msg_to_rgb(msg), RGB)
    finally:
        monkeypatch.delitem(sys.modules, "cv_bridge")
        importlib.reload(image_mod)
