"""``sensor_msgs/Image`` / ``CompressedImage`` <-> numpy RGB, for rosbags and rclpy messages.

Encodings follow ``sensor_msgs/image_encodings.hpp`` (REP 118 style names ``rgb8``, ``bgr8``,
``rgba8``, ``bgra8``, ``mono8``, ``mono16``; OpenCV aliases ``8UC1``/``8UC3``/``8UC4``/``16UC1``).
Every row is ``step`` bytes (row padding allowed). ``mono16`` is scaled to 8 bit as cv_bridge
does (``convertTo(alpha=255/65535)``, i.e. ``round(v / 257)``). Compressed images are decoded
with ``cv2.imdecode`` (JPEG / PNG). There is ONE decoder for rosbags and rclpy messages alike
(``cv_bridge`` is not used, so the result never depends on what else is installed).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from drive_segment_ros.ros.msgtypes import make_header, types_for
from drive_segment_ros.ros.pointcloud2 import as_uint8_buffer
from drive_segment_ros.types import DriveSegmentError

#: encoding -> (channels, bytes per channel, channel order)
ENCODINGS = {
    "rgb8": (3, 1, "rgb"),
    "bgr8": (3, 1, "bgr"),
    "rgba8": (4, 1, "rgba"),
    "bgra8": (4, 1, "bgra"),
    "mono8": (1, 1, "mono"),
    "mono16": (1, 2, "mono"),
    "8UC1": (1, 1, "mono"),
    "8UC3": (3, 1, "bgr"),
    "8UC4": (4, 1, "bgra"),
    "16UC1": (1, 2, "mono"),
}


def _pixels(msg: Any) -> np.ndarray:
    """(H, W, C) array (uint8 or native uint16) of an uncompressed Image, honouring ``step``."""
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise DriveSegmentError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    channels, depth, _ = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise DriveSegmentError(f"image has empty size {width}x{height}")
    if step < row_bytes:
        raise DriveSegmentError(f"image step {step} < width {width} x {channels * depth} bytes for {encoding}")
    buf = as_uint8_buffer(msg.data)
    need = (height - 1) * step + row_bytes
    if buf.size < need:
        raise DriveSegmentError(f"image data has {buf.size} bytes, {width}x{height} {encoding} with step {step} needs {need}")
    if buf.size < height * step:
        buf = np.concatenate([buf, np.zeros(height * step - buf.size, np.uint8)])
    rows = buf[: height * step].reshape(height, step)[:, :row_bytes]
    if depth == 1:
        return np.ascontiguousarray(rows).reshape(height, width, channels)
    dt = np.dtype(">u2" if bool(getattr(msg, "is_bigendian", False)) else "<u2")
    return np.ascontiguousarray(rows).view(dt).astype(np.uint16).reshape(height, width, channels)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into RGB.

    Args:
        msg: rosbags or rclpy Image with encoding rgb8, bgr8, rgba8, bgra8, mono8, mono16
            (or the 8UC1/8UC3/8UC4/16UC1 aliases; 8UC3 is taken as BGR like OpenCV).

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous (alpha dropped, mono replicated, mono16 -> round(v/257)).

    Raises:
        DriveSegmentError: unsupported encoding, empty size, ``step``/data size mismatch.
    """
    px = _pixels(msg)
    order = ENCODINGS[str(msg.encoding)][2]
    if px.dtype == np.uint16:
        px = np.round(px.astype(np.float32) / 257.0).astype(np.uint8)
    conversion = {
        "mono": cv2.COLOR_GRAY2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgr": cv2.COLOR_BGR2RGB, "bgra": cv2.COLOR_BGRA2RGB,
    }.get(order)
    if conversion is None:  # rgb8
        return px
    return np.ascontiguousarray(cv2.cvtColor(px, conversion))


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Raw pixels of an Image without colour conversion: (H, W) for 1 channel, else (H, W, C).

    mono16 / 16UC1 come back as native uint16 (e.g. label or depth images), 8-bit as uint8.
    """
    px = _pixels(msg)
    return px[:, :, 0] if px.shape[2] == 1 else px


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG bytes) with ``cv2.imdecode``.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        DriveSegmentError: empty or undecodable data.
    """
    buf = as_uint8_buffer(msg.data)
    if buf.size == 0:
        raise DriveSegmentError("compressed image has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DriveSegmentError(f"cannot decode compressed image (format {getattr(msg, 'format', '')!r}, {buf.size} bytes)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def any_image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image (has ``encoding``) or a CompressedImage (has ``format``).

    Raises:
        DriveSegmentError: as :func:`image_msg_to_rgb` / :func:`compressed_msg_to_rgb`.
    """
    if hasattr(msg, "encoding"):
        return image_msg_to_rgb(msg)
    return compressed_msg_to_rgb(msg)


def _make_image(types, frame_id, stamp_ns, height, width, encoding, step, payload: np.ndarray):
    data = np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
    return types.Image(
        header=make_header(frame_id, stamp_ns, types),
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(step),
        data=data if types.kind == "rosbags" else data.tobytes(),
    )


def rgb_to_image_msg(rgb: np.ndarray, frame_id: str, stamp_ns: int, types: Any = None, encoding: str = "rgb8") -> Any:
    """Encode an RGB image as a ``sensor_msgs/Image``.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        frame_id: camera optical frame; stamp_ns: header stamp (ns).
        types: ``rosbags_types()`` / ``rclpy_types()`` namespace (or "rosbags"/"rclpy"); default rosbags.
        encoding: ``rgb8`` or ``bgr8`` (channels swapped for bgr8).

    The ARCHITECTURE order ``rgb_to_image_msg(rgb, encoding, frame_id, stamp_ns, types)`` is
    accepted too (detected when the second argument is an encoding name).

    Returns:
        Image message, ``step = 3 * W``, little endian.

    Raises:
        DriveSegmentError: wrong shape/dtype, unsupported encoding.
    """
    if isinstance(frame_id, str) and frame_id in ("rgb8", "bgr8") and isinstance(stamp_ns, str):
        # called as (rgb, encoding, frame_id, stamp_ns, types)
        encoding, frame_id, stamp_ns, types = frame_id, stamp_ns, types, (encoding if encoding not in ("rgb8", "bgr8") else None)
    types = types_for(types if types is not None else "rosbags")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DriveSegmentError(f"rgb_to_image_msg needs an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    if encoding == "rgb8":
        px = rgb
    elif encoding == "bgr8":
        px = rgb[:, :, ::-1]
    else:
        raise DriveSegmentError(f"rgb_to_image_msg: unsupported encoding {encoding!r} (use rgb8 or bgr8)")
    h, w = rgb.shape[:2]
    return _make_image(types, frame_id, stamp_ns, h, w, encoding, 3 * w, px)


def mono8_to_image_msg(mask: np.ndarray, frame_id: str, stamp_ns: int, types: Any = None) -> Any:
    """Encode an (H, W) uint8 mask / label image as a ``mono8`` Image (``step = W``).

    Raises:
        DriveSegmentError: not a 2-D uint8 array (cast label maps yourself, values must fit 0..255).
    """
    types = types_for(types if types is not None else "rosbags")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DriveSegmentError(f"mono8_to_image_msg needs an (H, W) uint8 array, got {mask.shape} {mask.dtype}")
    h, w = mask.shape
    return _make_image(types, frame_id, stamp_ns, h, w, "mono8", w, mask)


def mono16_to_image_msg(image: np.ndarray, frame_id: str, stamp_ns: int, types: Any = None) -> Any:
    """Encode an (H, W) uint16 image (e.g. label ids > 255) as little-endian ``mono16``."""
    types = types_for(types if types is not None else "rosbags")
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint16:
        raise DriveSegmentError(f"mono16_to_image_msg needs an (H, W) uint16 array, got {image.shape} {image.dtype}")
    h, w = image.shape
    return _make_image(types, frame_id, stamp_ns, h, w, "mono16", 2 * w, image.astype("<u2"))


def encoded_to_compressed_msg(data: bytes, fmt: str, frame_id: str, stamp_ns: int, types: Any = None) -> Any:
    """``sensor_msgs/CompressedImage`` around already-encoded bytes (``fmt``: "jpeg" / "png")."""
    types = types_for(types if types is not None else "rosbags")
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    return types.CompressedImage(
        header=make_header(frame_id, stamp_ns, types),
        format=str(fmt),
        data=buf.copy() if types.kind == "rosbags" else buf.tobytes(),
    )


def rgb_to_compressed_msg(
    rgb: np.ndarray, frame_id: str, stamp_ns: int, types: Any = None, fmt: str = "jpeg", quality: int = 90
) -> Any:
    """Encode (H, W, 3) uint8 RGB to JPEG/PNG (``cv2.imencode``) in a CompressedImage.

    Raises:
        DriveSegmentError: bad array or unknown ``fmt``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DriveSegmentError(f"rgb_to_compressed_msg needs an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise DriveSegmentError(f"unsupported compressed format {fmt!r} (jpeg or png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, enc = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:  # pragma: no cover
        raise DriveSegmentError("cv2.imencode failed")
    return encoded_to_compressed_msg(enc.tobytes(), "jpeg" if ext == ".jpg" else "png", frame_id, stamp_ns, types)
