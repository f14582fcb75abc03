"""Open and read rosbags (ROS 2 sqlite3 / mcap, ROS 1 ``.bag``) with one clear error line.

Built on :class:`rosbags.highlevel.AnyReader` (https://ternaris.gitlab.io/rosbags/topics/highlevel.html),
which reads

* a ROS 2 bag directory (``metadata.yaml`` + ``*.db3`` or ``*.mcap``) or its single storage
  file (the directory is opened instead when the file sits next to its ``metadata.yaml``);
* a ROS 1 ``.bag`` file (message definitions are embedded; ROS 1 field names such as
  ``CameraInfo.K`` are kept).

ROS 2 bags that carry no message definitions are decoded with this package's typestore
(:func:`drive_segment_ros.ros.msgtypes.rosbags_typestore`: ROS 2 Kilted, else Jazzy), the same
one it writes bags with. Every failure of rosbags / sqlite3 / mcap (missing file, not a bag,
truncated or corrupt data, undecodable message) becomes ONE :class:`DriveSegmentError` line that
names the bag. Used by the offline drive reader (``drive_segment_training.drives``) and the
``bag_player_node``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, List, Tuple, Union

from rosbags.highlevel import AnyReader

from drive_segment_ros.ros.bag_repair import open_paths_with_recovery
from drive_segment_ros.ros.msgtypes import rosbags_typestore
from drive_segment_ros.types import DriveSegmentError, error_line

__all__ = ["bag_paths", "open_bag", "iter_messages", "deserialize"]

#: suffixes of ROS 2 single storage files
ROS2_STORAGE_SUFFIXES = (".db3", ".mcap")


def bag_paths(path: Union[str, Path]) -> List[Path]:
    """The path(s) to hand to :class:`~rosbags.highlevel.AnyReader` for ``path``.

    Args:
        path: a ROS 2 bag directory, one of its ``.db3`` / ``.mcap`` files, or a ROS 1 ``.bag``.

    Returns:
        ``[path]``, or ``[path.parent]`` for a storage file next to its bag's ``metadata.yaml``.

    Raises:
        DriveSegmentError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise DriveSegmentError(f"bag {str(path)!r} not found")
    if path.is_file() and path.suffix in ROS2_STORAGE_SUFFIXES and (path.parent / "metadata.yaml").is_file():
        return [path.parent]
    return [path]


def open_bag(path: Union[str, Path]) -> AnyReader:
    """Open a bag for reading; close it with ``reader.close()``.

    Args:
        path: as :func:`bag_paths`.

    Returns:
        an opened :class:`rosbags.highlevel.AnyReader` (``default_typestore`` =
        :func:`~drive_segment_ros.ros.msgtypes.rosbags_typestore`); ``reader.connections`` lists
        the topics (``topic``, ``msgtype``, ``msgcount``).

    Raises:
        DriveSegmentError: missing path; not a bag, unreadable or corrupt (first line of the
        rosbags / sqlite3 / mcap error, ``cannot read bag '<path>': ...``).
    """
    paths = bag_paths(path)
    try:
        paths = open_paths_with_recovery(paths)  # truncated mcap -> its complete chunks; ROS 1 profile mcap -> ROS 2
        reader = AnyReader(paths, default_typestore=rosbags_typestore())
        reader.open()
    except Exception as exc:  # rosbags AnyReaderError / ReaderError, sqlite3 / mcap / struct errors ...
        raise DriveSegmentError(f"cannot read bag {str(path)!r}: {error_line(exc)}") from None
    return reader


def iter_messages(reader: AnyReader, connections: Iterable[Any], path: Union[str, Path] = "") -> Iterator[Tuple[Any, int, bytes]]:
    """``reader.messages(connections)`` with read failures turned into one-line errors.

    Args:
        reader: an opened reader (:func:`open_bag`).
        connections: the connections (topics) to read; an empty list yields nothing (rosbags
            itself would read *every* connection).
        path: the bag, for the error message.

    Yields:
        ``(connection, bag time in ns, raw serialized bytes)`` in bag time order.

    Raises:
        DriveSegmentError: corrupt or truncated data (``cannot read bag '<path>' (corrupt or truncated?): ...``).
    """
    connections = list(connections)
    if not connections:
        return
    it = reader.messages(connections=connections)
    while True:
        try:
            conn, stamp, raw = next(it)
        except StopIteration:
            return
        except Exception as exc:  # rosbags ReaderError, sqlite3.DatabaseError, mcap errors, struct errors ...
            raise DriveSegmentError(f"cannot read bag {str(path)!r} (corrupt or truncated?): {error_line(exc)}") from None
        yield conn, int(stamp), raw


def deserialize(reader: AnyReader, raw: bytes, conn: Any, path: Union[str, Path] = "") -> Any:
    """Decode one raw message of ``conn`` into a rosbags message dataclass.

    Raises:
        DriveSegmentError: undecodable bytes (``cannot decode a <type> message on '<topic>' in '<path>': ...``).
    """
    try:
        return reader.deserialize(raw, conn.msgtype)
    except Exception as exc:
        raise DriveSegmentError(f"cannot decode a {conn.msgtype} message on {conn.topic!r} in {str(path)!r}: {error_line(exc)}") from None
