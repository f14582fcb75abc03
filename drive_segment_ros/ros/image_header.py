"""Width and height of a JPEG / PNG byte string from its header, without decoding the pixels.

Used to refuse decompression bombs before ``cv2.imdecode`` allocates them (a 389 KB PNG can
decode to 20000x20000x3 = 1.2 GB). Pure Python over at most the first markers of the data:

* PNG: 8-byte signature, then the ``IHDR`` chunk (width, height: big-endian uint32 at offsets
  16 and 20). Source: PNG specification (W3C, 3rd ed.) section 11.2.2 "IHDR Image header".
* JPEG: ``FFD8`` then marker segments; the first start-of-frame marker (``SOF0``-``SOF15``
  except ``DHT`` C4, ``JPG`` C8, ``DAC`` CC) holds precision (1 byte), height, width (big-endian
  uint16). Source: ITU-T T.81 (JPEG) Annex B.2.2 "Frame header syntax".
"""
from __future__ import annotations

import struct
from typing import Any, Tuple

import numpy as np

from drive_segment_ros.types import DriveSegmentError

__all__ = ["compressed_image_size"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_SCAN = 1 << 20  # the SOF marker sits within the first segments; EXIF thumbnails are < 64 KB


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data[:_MAX_SCAN])
    return np.asarray(data, dtype=np.uint8).reshape(-1)[:_MAX_SCAN].tobytes()


def compressed_image_size(data: Any) -> Tuple[int, int, str]:
    """``(width, height, format)`` of JPEG or PNG bytes, read from the header only.

    Args:
        data: bytes, bytearray, ``array.array('B')`` / list / numpy uint8 (a CompressedImage's ``data``).

    Returns:
        (width, height, ``"png"`` | ``"jpeg"``), pixels.

    Raises:
        DriveSegmentError: neither PNG nor JPEG, truncated header, no start-of-frame marker,
        or a zero size.
    """
    buf = _as_bytes(data)
    if buf.startswith(_PNG_SIGNATURE):
        if len(buf) < 24 or buf[12:16] != b"IHDR":
            raise DriveSegmentError("PNG without an IHDR header chunk")
        width, height = struct.unpack(">II", buf[16:24])
        fmt = "png"
    elif buf[:2] == b"\xff\xd8":
        width = height = 0
        i = 2
        n = len(buf)
        while i + 2 <= n:
            if buf[i] != 0xFF:
                raise DriveSegmentError(f"JPEG header corrupt at byte {i} (no marker)")
            marker = buf[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
                i += 2
                continue
            if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
                break
            if i + 4 > n:
                raise DriveSegmentError("JPEG header truncated before the frame header")
            (length,) = struct.unpack(">H", buf[i + 2:i + 4])
            if marker in _SOF_MARKERS:
                if i + 9 > n:
                    break
                height, width = struct.unpack(">HH", buf[i + 5:i + 9])
                break
            i += 2 + length
        else:
            raise DriveSegmentError("JPEG header truncated before the frame header")
        if width == 0 and height == 0:
            raise DriveSegmentError("JPEG without a start-of-frame header")
        fmt = "jpeg"
    else:
        raise DriveSegmentError("compressed image is neither PNG nor JPEG (unknown signature)")
    if width <= 0 or height <= 0:
        raise DriveSegmentError(f"{fmt} header gives an empty size {width}x{height}")
    return int(width), int(height), fmt
