"""MCAP files in the ROS 1 profile (``ros1msg`` schemas, ``ros1`` message encoding), read as ROS 2.

Foxglove's nuScenes converter (``nuscenes2mcap``, its ROS-message variant) and ``mcap convert`` of a
ROS 1 ``.bag`` write MCAP with the *ROS 1* profile; rosbags reads only the ROS 2 profile (CDR) from
MCAP. :func:`convert_ros1_mcap` rewrites such a file as a ROS 2 MCAP: each schema's ROS 1 definition
is parsed (:func:`rosbags.typesys.get_types_from_msg`), each message decoded from ROS 1 bytes and
converted field by field into the ROS 2 type of the same name in this package's typestore
(``header.seq`` dropped, ``CameraInfo.K/D/R/P`` -> ``k/d/r/p``, ``time`` -> ``builtin_interfaces/Time``),
then CDR-encoded. Channels whose type has no ROS 2 counterpart (``foxglove_msgs/ImageMarkerArray``,
JSON channels, ...) are left out and listed. :func:`ros1_profile` tells the profile from the header.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, TypeVar, Union

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from drive_segment_ros.ros.msgtypes import rosbags_typestore
from drive_segment_ros.types import DriveSegmentError, error_line

log = logging.getLogger(__name__)


def ros1_profile(path: Union[str, Path]) -> bool:
    """True when the MCAP file's header says ``profile: ros1`` (False for ros2 / other / unreadable)."""
    try:
        from mcap.records import Header  # optional heavy dependency
        from mcap.stream_reader import StreamReader  # optional heavy dependency
    except ImportError:
        return False
    try:
        with open(path, "rb") as f:
            for record in StreamReader(f, skip_magic=False).records:
                return isinstance(record, Header) and record.profile == "ros1"
    except Exception:  # not an MCAP / torn header: not ours to judge here
        return False
    return False


def _ros2_name(name: str) -> str:
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def _convert(value: Any, target_type: str, store2) -> Any:
    """A ROS 1 message dataclass -> the ROS 2 dataclass ``target_type`` (field names matched case-insensitively)."""
    cls = store2.types[target_type]
    fields = store2.fielddefs[target_type][1]
    src = {f.lower(): getattr(value, f) for f in getattr(value, "__dataclass_fields__", {}) if f != "__msgtype__"}
    kwargs = {}
    for fname, fdesc in fields:
        if fname.lower() not in src:
            raise DriveSegmentError(f"{target_type}: the ROS 1 message has no field {fname!r}")
        v = src[fname.lower()]
        kind = fdesc[0]
        if kind == Nodetype.NAME:  # a nested message type
            kwargs[fname] = _convert(v, fdesc[1], store2)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            inner = fdesc[1][0]
            if inner[0] == Nodetype.NAME:  # of messages
                kwargs[fname] = [_convert(x, inner[1], store2) for x in v]
            else:
                kwargs[fname] = v
        else:
            kwargs[fname] = v
    return cls(**kwargs)


@dataclass
class Ros1McapConversion:
    """What :func:`convert_ros1_mcap` wrote: messages per topic, and the channels it left out (topic -> reason)."""

    source: Path
    output: Path
    messages: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)


def convert_ros1_mcap(src: Union[str, Path], dst: Union[str, Path]) -> Ros1McapConversion:
    """Rewrite a ROS 1 profile MCAP as a ROS 2 (CDR) MCAP that rosbags reads (see the module doc).

    Raises:
        DriveSegmentError: ``mcap`` not installed, unreadable file, no convertible channel.
    """
    try:
        from mcap.reader import make_reader  # optional heavy dependency
        from mcap.writer import CompressionType, Writer  # optional heavy dependency
    except ImportError:
        raise DriveSegmentError("reading a ROS 1 profile mcap needs the 'mcap' package (pip install mcap)") from None
    src, dst = Path(src), Path(dst)
    store1 = get_typestore(Stores.ROS1_NOETIC)
    store2 = rosbags_typestore()
    conv = Ros1McapConversion(source=src, output=dst)
    tmp = dst.with_name(dst.name + ".part")
    channels: Dict[int, Tuple[int, str, str]] = {}  # source channel -> (dst channel, topic, ros2 type)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        reader = make_reader(fin)
        writer = Writer(fout, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library="drive_segment ros1->ros2")
        schemas_out: Dict[str, int] = {}
        try:
            for schema, channel, message in reader.iter_messages():
                if channel.id not in channels:
                    channels[channel.id] = (-1, channel.topic, "")
                    if schema is None or schema.encoding != "ros1msg" or channel.message_encoding != "ros1":
                        conv.skipped[channel.topic] = f"encoding {channel.message_encoding!r} (not ROS 1)"
                        continue
                    name = _ros2_name(schema.name)
                    try:
                        store1.register(get_types_from_msg(schema.data.decode(), name))
                    except Exception as exc:  # conflicting / unparsable definition
                        conv.skipped[channel.topic] = f"cannot parse the {schema.name} definition: {exc}"
                        continue
                    if name not in store2.types:
                        conv.skipped[channel.topic] = f"{schema.name} has no ROS 2 counterpart here"
                        continue
                    if name not in schemas_out:
                        text, _ = store2.generate_msgdef(name, ros_version=2)
                        schemas_out[name] = writer.register_schema(name=name, encoding="ros2msg", data=text.encode())
                    cid = writer.register_channel(topic=channel.topic, message_encoding="cdr", schema_id=schemas_out[name])
                    channels[channel.id] = (cid, channel.topic, name)
                cid, topic, name = channels[channel.id]
                if cid < 0:
                    continue
                msg2 = _convert(store1.deserialize_ros1(message.data, name), name, store2)
                writer.add_message(channel_id=cid, log_time=message.log_time, publish_time=message.publish_time,
                                   data=bytes(store2.serialize_cdr(msg2, name)), sequence=message.sequence)
                conv.messages[topic] = conv.messages.get(topic, 0) + 1
        except DriveSegmentError:
            raise
        except Exception as exc:
            raise DriveSegmentError(f"cannot convert ROS 1 mcap {str(src)!r}: {error_line(exc)}") from None
        finally:
            writer.finish()
    if not conv.messages:
        tmp.unlink()
        raise DriveSegmentError(f"ROS 1 mcap {str(src)!r}: no channel with a ROS 2 counterpart ({conv.skipped})")
    os.replace(tmp, dst)
    return conv


_R = TypeVar("_R")
_DERIVED: Dict[Tuple[str, str, int, int], Tuple[Path, Any]] = {}
#: temporary directory of each derived copy -> pid of the process that made it
_OWNER: Dict[Path, int] = {}


@atexit.register
def remove_derived_copies() -> None:
    """Delete the temporary directories that this process made in :func:`derived_copy` (run at
    interpreter exit; a converted or recovered copy is as large as its bag, so none is left in
    temp). A forked child that inherited the cache leaves its parent's copies alone."""
    pid = os.getpid()
    for key, (out, _) in list(_DERIVED.items()):
        if _OWNER.get(out.parent) == pid:
            shutil.rmtree(out.parent, ignore_errors=True)
            del _DERIVED[key]


def derived_copy(path: Union[str, Path], prefix: str, make: Callable[[Path, Path], _R]) -> Tuple[Path, _R]:
    """A file derived from ``path`` (a recovered or converted copy), made once per process per file version.

    Args:
        path: the source file; its version is (resolved path, size, mtime ns).
        prefix: prefix of the new temporary directory (also separates the kinds of copy).
        make: ``make(source, out)`` writes ``out`` (``<new temp dir>/<source name>``) and returns a
            result; an exception it raises is passed on and nothing is cached.

    Returns:
        ``(out, result of make)``, the cached pair on later calls for the same file version.
        The temporary directory lives as long as the process may read it: it is removed at
        interpreter exit (:func:`remove_derived_copies`), or right away when ``make`` fails.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (prefix, str(path), int(st.st_size), int(st.st_mtime_ns))
    if key not in _DERIVED:
        out = Path(tempfile.mkdtemp(prefix=prefix)) / path.name
        try:
            _DERIVED[key] = (out, make(path, out))
            _OWNER[out.parent] = os.getpid()
        except BaseException:
            shutil.rmtree(out.parent, ignore_errors=True)
            raise
    return _DERIVED[key]


def _convert_and_log(path: Path, out: Path) -> Ros1McapConversion:
    conv = convert_ros1_mcap(path, out)
    left = f"; left out {sorted(conv.skipped)}" if conv.skipped else ""
    log.info("%s is a ROS 1 profile mcap: converted %d messages on %d topics to ROS 2%s",
             path.name, sum(conv.messages.values()), len(conv.messages), left)
    return conv


def ros2_copy(path: Union[str, Path]) -> Path:
    """The ROS 2 copy of a ROS 1 profile MCAP (converted once per process per file version, in a temp dir).

    Raises:
        DriveSegmentError: as :func:`convert_ros1_mcap`."""
    return derived_copy(path, "drive_segment_ros1mcap_", _convert_and_log)[0]


def as_ros2_paths(paths: List[Path]) -> List[Path]:
    """Replace ROS 1 profile ``.mcap`` files in ``paths`` by their ROS 2 copies; others unchanged."""
    return [ros2_copy(p) if Path(p).is_file() and Path(p).suffix == ".mcap" and ros1_profile(p) else Path(p) for p in paths]
