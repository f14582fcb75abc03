"""``sensor_msgs/PointCloud2`` <-> numpy, for rosbags and rclpy messages alike.

Layout rules follow the message definition (ros2/common_interfaces ``sensor_msgs/msg/PointCloud2.msg``
and ``PointField.msg``) and ``sensor_msgs_py.point_cloud2``: each point is ``point_step`` bytes,
each of the ``height`` rows is ``row_step`` bytes (trailing row padding allowed), every
``PointField`` sits at ``offset`` bytes inside the point with ``count`` elements of ``datatype``
(INT8=1 ... FLOAT64=8), byte order given by ``is_bigendian``. Bytes not covered by a field are
padding (e.g. Ouster / Velodyne drivers pad ``x y z`` to 16 bytes).

There is ONE decoder (this module's, tested on padded, organized, big-endian and ``count > 1``
clouds); ``sensor_msgs_py.point_cloud2`` is not used: its ``read_points`` ignores ``row_step``
padding of organized clouds and splits ``count > 1`` fields into ``name_0 .. name_k``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from drive_segment_ros.ros.msgtypes import make_header, types_for
from drive_segment_ros.types import DriveSegmentError

#: PointField datatype constants (sensor_msgs/PointField.msg)
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

#: PointField datatype -> numpy type (no byte order)
DATATYPES: Dict[int, np.dtype] = {
    INT8: np.dtype("i1"),
    UINT8: np.dtype("u1"),
    INT16: np.dtype("i2"),
    UINT16: np.dtype("u2"),
    INT32: np.dtype("i4"),
    UINT32: np.dtype("u4"),
    FLOAT32: np.dtype("f4"),
    FLOAT64: np.dtype("f8"),
}
_NUMPY_TO_DATATYPE = {(dt.kind, dt.itemsize): code for code, dt in DATATYPES.items()}

#: field names accepted as intensity / ring, in order of preference
INTENSITY_NAMES = ("intensity", "i", "reflectivity")
RING_NAMES = ("ring", "channel")


def as_uint8_buffer(data: Any) -> np.ndarray:
    """View a message ``data`` field (numpy uint8 array, ``array.array('B')``, bytes, list) as 1-D uint8."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)  # array.array('B')
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def pointcloud2_dtype(msg: Any) -> np.dtype:
    """The (possibly padded, possibly big-endian) numpy dtype of one point of ``msg``.

    Returns:
        structured dtype with the message's field names, offsets and ``itemsize == point_step``;
        fields with ``count > 1`` are sub-arrays of shape ``(count,)``.

    Raises:
        DriveSegmentError: unknown datatype, field beyond ``point_step``, no fields.
    """
    order = ">" if bool(msg.is_bigendian) else "<"
    names, formats, offsets = [], [], []
    point_step = int(msg.point_step)
    if not msg.fields:
        raise DriveSegmentError("PointCloud2 has no fields")
    for i, field in enumerate(msg.fields):
        code = int(field.datatype)
        if code not in DATATYPES:
            raise DriveSegmentError(f"PointCloud2 field {field.name!r} has unknown datatype {code} (expected 1..8)")
        base = DATATYPES[code].newbyteorder(order)
        count = max(int(field.count), 1)
        fmt = base if count == 1 else np.dtype((base, (count,)))
        if int(field.offset) + fmt.itemsize > point_step:
            raise DriveSegmentError(
                f"PointCloud2 field {field.name!r} (offset {field.offset}, {fmt.itemsize} bytes) exceeds point_step {point_step}"
            )
        name = str(field.name) or f"field_{i}"
        if name in names:
            name = f"{name}_{i}"
        names.append(name)
        formats.append(fmt)
        offsets.append(int(field.offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _packed_native(dtype: np.dtype) -> np.dtype:
    """Same fields as ``dtype``, native byte order, no padding."""
    out = []
    for name in dtype.names:
        sub = dtype.fields[name][0]
        if sub.subdtype is not None:
            base, shape = sub.subdtype
            out.append((name, base.newbyteorder("="), shape))
        else:
            out.append((name, sub.newbyteorder("=")))
    return np.dtype(out)


def _to_packed(view: np.ndarray) -> np.ndarray:
    out = np.empty(view.shape, dtype=_packed_native(view.dtype))
    for name in view.dtype.names:
        out[name] = view[name]
    return out


def _raw_view(msg: Any) -> np.ndarray:
    """(N,) view of the message bytes with the message's own (padded, maybe big-endian) dtype.

    No copy when rows are contiguous (``row_step == width * point_step``)."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    dtype = pointcloud2_dtype(msg)
    n = height * width
    if n == 0:
        return np.empty(0, dtype=dtype)
    if point_step <= 0 or row_step < width * point_step:
        raise DriveSegmentError(
            f"PointCloud2 row_step {row_step} < width {width} x point_step {point_step}"
        )
    buf = as_uint8_buffer(msg.data)
    need = (height - 1) * row_step + width * point_step
    if buf.size < need:
        raise DriveSegmentError(f"PointCloud2 data has {buf.size} bytes, layout needs {need} ({height}x{width} points)")
    if row_step == width * point_step:
        rows = buf[: n * point_step]
    else:
        padded = buf[: height * row_step] if buf.size >= height * row_step else np.concatenate(
            [buf, np.zeros(height * row_step - buf.size, np.uint8)]
        )
        rows = np.ascontiguousarray(padded.reshape(height, row_step)[:, : width * point_step]).reshape(-1)
    return rows.view(dtype)


def pointcloud2_to_array(msg: Any) -> np.ndarray:
    """Decode a PointCloud2 (rosbags or rclpy message) into a structured numpy array.

    Args:
        msg: ``sensor_msgs/PointCloud2``; organized clouds (``height > 1``) are flattened row-major.

    Returns:
        (N,) structured array, N = height * width, one field per PointField (``count > 1`` ->
        sub-array), **packed and native-endian** (padding dropped, big-endian data swapped).

    Raises:
        DriveSegmentError: inconsistent layout (row_step, point_step, data size), unknown datatype.

    Source: sensor_msgs/msg/PointCloud2.msg, PointField.msg.
    """
    return _to_packed(_raw_view(msg))


def _first_field(names, candidates) -> Optional[str]:
    for name in candidates:
        if name in names:
            return name
    return None


def read_points_xyzi(msg: Any, skip_nans: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``x, y, z, intensity`` of a PointCloud2 in its own frame (``msg.header.frame_id``).

    Args:
        msg: rosbags or rclpy ``sensor_msgs/PointCloud2`` with at least ``x, y, z`` fields.
        skip_nans: drop points whose x, y or z is NaN/inf (organized clouds use NaN for no return).

    Returns:
        points: (N, 4) float32 ``x, y, z, intensity`` (metres; intensity as stored, 0 when absent,
        non-finite intensity -> 0).
        rings: (N,) int16 from a ``ring`` (or ``channel``) field, else ``None``.

    Raises:
        DriveSegmentError: no x/y/z fields or an inconsistent layout.
    """
    arr = _raw_view(msg)  # fields are copied straight out of the message bytes (no full decode)
    names = arr.dtype.names or ()
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise DriveSegmentError(f"PointCloud2 has no {'/'.join(missing)} field(s); fields are {list(names)}")
    n = arr.shape[0]
    points = np.empty((n, 4), dtype=np.float32)
    fx, fy, fz = (arr.dtype.fields[c] for c in "xyz")
    if n and all(f[0] == np.dtype("<f4") for f in (fx, fy, fz)) and fy[1] == fx[1] + 4 and fz[1] == fx[1] + 8:
        # common layout: x y z adjacent float32 -> one (N, 3) strided view instead of three field copies
        points[:, :3] = np.ndarray((n, 3), dtype="<f4", buffer=arr, offset=fx[1], strides=(arr.dtype.itemsize, 4))
    else:
        for j, c in enumerate("xyz"):
            points[:, j] = arr[c]
    iname = _first_field(names, INTENSITY_NAMES)
    if iname is not None and arr.dtype.fields[iname][0].subdtype is None:
        points[:, 3] = arr[iname]
        bad = ~np.isfinite(points[:, 3])
        if bad.any():
            points[bad, 3] = 0.0
    else:
        points[:, 3] = 0.0
    rname = _first_field(names, RING_NAMES)
    rings = arr[rname].astype(np.int16) if rname is not None else None
    if skip_nans:
        keep = np.isfinite(points[:, 0]) & np.isfinite(points[:, 1]) & np.isfinite(points[:, 2])
        if not keep.all():
            points = points[keep]
            rings = rings[keep] if rings is not None else None
    return np.ascontiguousarray(points), rings


def _datatype_of(dt: np.dtype, name: str) -> int:
    if dt.kind == "b":
        return UINT8
    code = _NUMPY_TO_DATATYPE.get((dt.kind, dt.itemsize))
    if code is None:
        raise DriveSegmentError(f"field {name!r} has dtype {dt} which PointCloud2 cannot hold (use int8..int32, uint8..uint32, float32/64)")
    return code


def array_to_pointcloud2(arr: np.ndarray, frame_id: str, stamp_ns: int, types: Any = None) -> Any:
    """Encode a structured array as a dense little-endian PointCloud2.

    Args:
        arr: (N,) structured array (unorganized cloud) or (H, W) (organized); fields of
            int8..int32 / uint8..uint32 / float32 / float64 (bool -> uint8), sub-array fields
            become ``count > 1``.
        frame_id: the header frame (e.g. the LiDAR frame).
        stamp_ns: header stamp, integer ns.
        types: :func:`~drive_segment_ros.ros.msgtypes.rosbags_types` or ``rclpy_types()``
            namespace (or ``"rosbags"`` / ``"rclpy"``); default rosbags.

    Returns:
        PointCloud2 message of the requested kind, ``point_step`` = packed item size,
        ``is_dense`` = all float fields finite.

    Raises:
        DriveSegmentError: not a structured array, unsupported field dtype.
    """
    types = types_for(types if types is not None else "rosbags")
    arr = np.asarray(arr)
    if arr.dtype.names is None:
        raise DriveSegmentError(f"array_to_pointcloud2 needs a structured array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        height, width = 1, arr.shape[0]
    elif arr.ndim == 2:
        height, width = arr.shape
    else:
        raise DriveSegmentError(f"array_to_pointcloud2 needs a (N,) or (H, W) array, got shape {arr.shape}")
    out_fields, packed, fields = [], [], []
    offset = 0
    dense = True
    for name in arr.dtype.names:
        sub = arr.dtype.fields[name][0]
        base, shape = (sub.subdtype if sub.subdtype is not None else (sub, ()))
        count = int(np.prod(shape)) if shape else 1
        code = _datatype_of(base, name)
        le = DATATYPES[code].newbyteorder("<")
        packed.append((name, le, (count,)) if count > 1 else (name, le))
        fields.append(types.PointField(name=name, offset=offset, datatype=code, count=count))
        offset += le.itemsize * count
        if base.kind == "f" and arr.size:
            dense = dense and bool(np.isfinite(arr[name]).all())
        out_fields.append(name)
    out = np.empty(arr.shape, dtype=np.dtype(packed))
    for name in out_fields:
        sub = out.dtype.fields[name][0]
        src = arr[name]
        out[name] = src.reshape(src.shape[: arr.ndim] + sub.shape) if sub.shape else src
    data = out.reshape(-1).view(np.uint8)
    point_step = out.dtype.itemsize
    payload = np.ascontiguousarray(data) if types.kind == "rosbags" else data.tobytes()
    return types.PointCloud2(
        header=make_header(frame_id, stamp_ns, types),
        height=height,
        width=width,
        fields=fields,
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * width,
        data=payload,
        is_dense=dense,
    )


def points_to_pointcloud2(
    points: np.ndarray,
    frame_id: str,
    stamp_ns: int,
    types: Any = None,
    rings: Optional[np.ndarray] = None,
    extra: Optional[Dict[str, np.ndarray]] = None,
) -> Any:
    """PointCloud2 from an (N, 3) or (N, >=4) float array (``x y z [intensity]`` float32).

    Args:
        points: (N, 3) or (N, >=4); column 3 is intensity (0 when absent), metres in ``frame_id``.
        rings: optional (N,) laser ring -> ``ring`` field, uint16.
        extra: optional ``{name: (N,) array}`` appended as fields (e.g. ``segment`` int32).

    Raises:
        DriveSegmentError: wrong shapes.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise DriveSegmentError(f"points must be (N, >=3), got shape {pts.shape}")
    n = pts.shape[0]
    cols = [("x", np.float32), ("y", np.float32), ("z", np.float32), ("intensity", np.float32)]
    extra = dict(extra or {})
    if rings is not None:
        rings = np.asarray(rings)
        if rings.shape != (n,):
            raise DriveSegmentError(f"rings must be ({n},), got {rings.shape}")
        cols.append(("ring", np.uint16))
    for name, values in extra.items():
        values = np.asarray(values)
        if values.shape[:1] != (n,):
            raise DriveSegmentError(f"extra field {name!r} must have {n} rows, got shape {values.shape}")
        cols.append((name, values.dtype, values.shape[1:]) if values.ndim > 1 else (name, values.dtype))
    arr = np.empty(n, dtype=np.dtype(cols))
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    arr["intensity"] = pts[:, 3] if pts.shape[1] > 3 else 0.0
    if rings is not None:
        arr["ring"] = rings
    for name, values in extra.items():
        arr[name] = values
    return array_to_pointcloud2(arr, frame_id, stamp_ns, types)
