"""JPEG / PNG sizes from the header only (drive_segment_ros.ros.image_header)."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from drive_segment_ros.ros.image_header import compressed_image_size
from drive_segment_ros.types import DriveSegmentError


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("shape", [(37, 53, 3), (1, 1, 3), (900, 1600, 3), (21, 8)])
def test_size_equals_decoded_size(ext, shape):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    ok, enc = cv2.imencode(ext, img)
    assert ok
    w, h, fmt = compressed_image_size(enc)  # numpy buffer
    assert (h, w) == shape[:2] and fmt == ("png" if ext == ".png" else "jpeg")
    assert compressed_image_size(enc.tobytes())[:2] == (w, h)  # bytes
    assert compressed_image_size(list(enc.tobytes()[:4096]))[:2] == (w, h)  # header only is enough


def test_real_sample_files(kitti_dir, nuscenes_dir):
    assert compressed_image_size((kitti_dir / "000008.png").read_bytes()) == (1242, 375, "png")
    jpg = next(nuscenes_dir.glob("*CAM_FRONT__*.jpg"))
    assert compressed_image_size(jpg.read_bytes()) == (1600, 900, "jpeg")


def test_progressive_jpeg_and_exif():
    img = np.zeros((40, 70, 3), np.uint8)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert compressed_image_size(enc)[:2] == (70, 40)
    # an APP1 segment before the frame header is skipped by its length
    raw = enc.tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 1000) + bytes(1000)
    assert compressed_image_size(raw[:2] + app1 + raw[2:])[:2] == (70, 40)


@pytest.mark.parametrize("data, text", [
    (b"", "neither PNG nor JPEG"),
    (b"GIF89a....", "neither PNG nor JPEG"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "IHDR"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
    (b"\xff\xd8\xff\xd9", "start-of-frame"),
    (b"\xff\xd8\x00\x00\x00\x00", "corrupt"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x00\x00\x00\x00\x05", "empty size"),
])
def test_bad_headers_raise_one_line(data, text):
    with pytest.raises(DriveSegmentError, match=text) as info:
        compressed_image_size(data)
    assert "\n" not in str(info.value)
