"""Damaged bags: recover a truncated MCAP, check a sqlite3 bag, find what a bag directory holds.

* A recording cut short (power loss, full disk) leaves an MCAP file without its summary and end
  magic; rosbags then refuses the whole file ("File end magic is invalid"). :func:`recover_mcap`
  does what ``mcap recover`` (the MCAP CLI) does: stream the records with the ``mcap`` library's
  :class:`mcap.stream_reader.StreamReader`, keep every schema, channel and message of each
  *complete* chunk (a torn last chunk is dropped; its CRC is checked), and write them to a new,
  well-formed MCAP (zstd chunks) with a summary. :func:`open_paths_with_recovery` does that on the
  fly for the bag reader and logs one warning with how much was recovered.
* :func:`sqlite_integrity` runs ``PRAGMA integrity_check`` on a ``.db3`` (``inspect --check``).
* :func:`check_bag` checks every storage file of a bag (mcap end magic + readable records,
  sqlite integrity) and returns one line per file.

The ``mcap`` package (PyPI ``mcap``, MIT) is needed only for recovery; without it a truncated
mcap stays an error that says to install it.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from rosbags.highlevel import AnyReader

from drive_segment_ros.ros.mcap_ros1 import as_ros2_paths, derived_copy
from drive_segment_ros.ros.msgtypes import rosbags_typestore
from drive_segment_ros.types import DriveSegmentError, error_line

log = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"


@dataclass
class McapRecovery:
    """What :func:`recover_mcap` kept.

    Attributes:
        source, output: the damaged file and the recovered one.
        messages, chunks: counts recovered; channels: topic -> messages recovered.
        bytes_used / bytes_total: file bytes read up to the last complete record / file size.
        start_ns, end_ns: log-time range of the recovered messages (None when nothing recovered).
        error: the reason reading stopped (first line), "" when the file was whole.
    """

    source: Path
    output: Path
    messages: int = 0
    chunks: int = 0
    bytes_used: int = 0
    bytes_total: int = 0
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    channels: Dict[str, int] = field(default_factory=dict)
    error: str = ""

    def summary(self) -> str:
        """One line: how much was recovered."""
        span = 0.0 if self.start_ns is None else (self.end_ns - self.start_ns) / 1e9
        pct = 100.0 * self.bytes_used / self.bytes_total if self.bytes_total else 0.0
        return (f"{self.source.name} is truncated ({self.error or 'no end magic'}): recovered {self.messages} messages "
                f"in {self.chunks} complete chunks, {span:.3f} s of log time, {pct:.1f}% of the file's "
                f"{self.bytes_total} bytes; the torn tail is dropped")


def mcap_is_complete(path: Union[str, Path]) -> bool:
    """True when an MCAP file starts and ends with the magic bytes (a cleanly closed file)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 2 * len(MCAP_MAGIC):
        return False
    with open(path, "rb") as f:
        head = f.read(len(MCAP_MAGIC))
        f.seek(size - len(MCAP_MAGIC))
        tail = f.read(len(MCAP_MAGIC))
    return head == MCAP_MAGIC and tail == MCAP_MAGIC


class _CountingFile:
    """Read-only file wrapper that remembers how many bytes were consumed."""

    def __init__(self, f) -> None:
        self._f = f
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.pos += len(b)
        return b

    def readable(self) -> bool:
        return True


def recover_mcap(src: Union[str, Path], dst: Union[str, Path]) -> McapRecovery:
    """Copy every complete chunk's schemas, channels and messages of ``src`` into a new MCAP ``dst``.

    Args:
        src: an MCAP file (typically truncated: no footer / end magic).
        dst: the file to write (overwritten; written to a temporary name, then renamed).

    Returns:
        :class:`McapRecovery` (``summary()`` is the warning line).

    Raises:
        DriveSegmentError: ``src`` missing / not an MCAP (bad start magic), ``mcap`` not installed.
    """
    try:
        from mcap.records import Channel, Chunk, Header, Message, Schema  # optional heavy dependency
        from mcap.stream_reader import StreamReader, breakup_chunk  # optional heavy dependency
        from mcap.writer import CompressionType, Writer  # optional heavy dependency
    except ImportError:
        raise DriveSegmentError("recovering a truncated mcap needs the 'mcap' package (pip install mcap)") from None
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DriveSegmentError(f"mcap {str(src)!r} not found")
    with open(src, "rb") as f:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise DriveSegmentError(f"{str(src)!r} is not an MCAP file (bad start magic)")
    rec = McapRecovery(source=src, output=dst, bytes_total=src.stat().st_size)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    schemas: Dict[int, int] = {}   # source schema id -> dst schema id
    channels: Dict[int, Tuple[int, str]] = {}  # source channel id -> (dst channel id, topic)
    pending_schemas: Dict[int, object] = {}
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        counting = _CountingFile(fin)
        writer = Writer(fout, compression=CompressionType.ZSTD)
        profile = ""
        reader = StreamReader(counting, skip_magic=False, emit_chunks=True, validate_crcs=True)
        started = False
        try:
            for record in reader.records:
                if isinstance(record, Header):
                    profile = record.profile
                    writer.start(profile=profile, library=record.library or "drive_segment recover")
                    started = True
                    continue
                if not started:
                    writer.start(profile=profile, library="drive_segment recover")
                    started = True
                inner = [record]
                if isinstance(record, Chunk):
                    inner = breakup_chunk(record, validate_crc=True)
                    rec.chunks += 1
                for r in inner:
                    if isinstance(r, Schema):
                        pending_schemas[r.id] = r
                        if r.id not in schemas:
                            schemas[r.id] = writer.register_schema(name=r.name, encoding=r.encoding, data=r.data)
                    elif isinstance(r, Channel):
                        if r.id not in channels:
                            sid = schemas.get(r.schema_id, 0)
                            cid = writer.register_channel(topic=r.topic, message_encoding=r.message_encoding,
                                                          schema_id=sid, metadata=dict(r.metadata))
                            channels[r.id] = (cid, r.topic)
                    elif isinstance(r, Message):
                        if r.channel_id not in channels:
                            continue
                        cid, topic = channels[r.channel_id]
                        writer.add_message(channel_id=cid, log_time=r.log_time, data=r.data,
                                           publish_time=r.publish_time, sequence=r.sequence)
                        rec.messages += 1
                        rec.channels[topic] = rec.channels.get(topic, 0) + 1
                        rec.start_ns = r.log_time if rec.start_ns is None else min(rec.start_ns, r.log_time)
                        rec.end_ns = r.log_time if rec.end_ns is None else max(rec.end_ns, r.log_time)
                rec.bytes_used = counting.pos
        except Exception as exc:  # torn record: struct.error / EndOfFile / CRC / decompression errors
            rec.error = error_line(exc)
        if not started:
            writer.start(profile=profile, library="drive_segment recover")
        writer.finish()
    os.replace(tmp, dst)
    return rec


_WARNED: set = set()


def _recover_and_warn(path: Path, out: Path) -> McapRecovery:
    rec = recover_mcap(path, out)
    if rec.messages == 0:
        raise DriveSegmentError(f"{path.name} is truncated ({rec.error or 'no end magic'}) and no complete chunk "
                                f"with messages could be recovered from its {rec.bytes_total} bytes")
    log.warning("%s", rec.summary())
    return rec


def recovered_copy(path: Union[str, Path]) -> Tuple[Path, McapRecovery]:
    """The recovered copy of a truncated MCAP (made once per process per file version, in a temp dir:
    :func:`~drive_segment_ros.ros.mcap_ros1.derived_copy`).

    Raises:
        DriveSegmentError: nothing recoverable (no complete chunk with messages), not an MCAP."""
    return derived_copy(path, "drive_segment_recovered_", _recover_and_warn)


def open_paths_with_recovery(paths: List[Path]) -> List[Path]:
    """Replace truncated MCAP storage in ``paths`` (bag files or bag directories) by recovered copies.

    * a bare ``.mcap`` file without end magic -> its recovered copy;
    * a bag directory without ``metadata.yaml`` (the recorder died before writing it) -> its
      ``.mcap`` files (recovered where truncated), read as separate bags and merged by time;
    * a bag directory with ``metadata.yaml`` whose last ``.mcap`` is truncated -> that file's
      recovered copy plus the other (complete) files.
    Then a bare ``.mcap`` in the ROS 1 profile (Foxglove's nuScenes converter, ``mcap convert`` of a
    ROS 1 bag) is replaced by its ROS 2 copy (:mod:`drive_segment_ros.ros.mcap_ros1`).
    Other paths are returned unchanged. Logs one warning per recovered file.

    Raises:
        DriveSegmentError: a truncated MCAP with nothing recoverable; an unconvertible ROS 1 MCAP.
    """
    out: List[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.suffix == ".mcap" and not mcap_is_complete(p):
            out.append(recovered_copy(p)[0])
        elif p.is_dir():
            mcaps = sorted(p.glob("*.mcap"))
            bad = [m for m in mcaps if not mcap_is_complete(m)]
            if mcaps and (bad or not (p / "metadata.yaml").is_file()):
                if not (p / "metadata.yaml").is_file() and str(p.resolve()) not in _WARNED:
                    _WARNED.add(str(p.resolve()))
                    log.warning("bag directory %s has no metadata.yaml (recording not closed?): reading its %d .mcap file(s) directly",
                                p, len(mcaps))
                out.extend(recovered_copy(m)[0] if m in bad else m for m in mcaps)
            else:
                out.append(p)
        else:
            out.append(p)
    return as_ros2_paths(out)


def sqlite_integrity(path: Union[str, Path]) -> List[str]:
    """``PRAGMA integrity_check`` of a sqlite3 file: ``["ok"]`` when sound, else the problems reported.

    Raises nothing: an unopenable / non-database file gives ``["not a database: ..."]``."""
    try:
        con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            rows = [str(r[0]) for r in con.execute("PRAGMA integrity_check").fetchall()]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return [f"not a database: {exc}"]
    return rows or ["no result"]


def check_bag(path: Union[str, Path]) -> List[Tuple[str, bool, str]]:
    """Check each storage file of a bag: ``(file, ok, detail)`` per file.

    ``.db3``: ``PRAGMA integrity_check``; ``.mcap``: start/end magic, and for a complete file a full
    record pass with CRC validation (``mcap`` package); ``.bag`` (ROS 1): opened with rosbags.
    """
    path = Path(path)
    if not path.exists():
        raise DriveSegmentError(f"bag {str(path)!r} not found")
    files = sorted(q for q in path.iterdir() if q.suffix in (".db3", ".mcap", ".bag")) if path.is_dir() else [path]
    if not files:
        return [(str(path), False, "no .db3 / .mcap / .bag storage file")]
    out = []
    for f in files:
        if f.suffix == ".db3":
            rows = sqlite_integrity(f)
            out.append((f.name, rows == ["ok"], "; ".join(rows[:5]) + (f" (+{len(rows) - 5} more)" if len(rows) > 5 else "")))
        elif f.suffix == ".mcap":
            if not mcap_is_complete(f):
                with tempfile.TemporaryDirectory(prefix="drive_segment_check_") as tmp:  # the copy is only measured
                    try:
                        rec = recover_mcap(f, Path(tmp) / f.name)
                        out.append((f.name, False, rec.summary()))
                    except DriveSegmentError as exc:
                        out.append((f.name, False, str(exc)))
                continue
            try:
                from mcap.stream_reader import StreamReader  # optional heavy dependency

                with open(f, "rb") as fh:
                    n = sum(1 for _ in StreamReader(fh, skip_magic=False, emit_chunks=False, validate_crcs=True).records)
                out.append((f.name, True, f"ok ({n} records, CRCs valid)"))
            except ImportError:
                out.append((f.name, True, "ok (magic bytes; install 'mcap' for a record check)"))
            except Exception as exc:
                out.append((f.name, False, f"damaged: {error_line(exc)}"))
        else:
            try:
                with AnyReader([f], default_typestore=rosbags_typestore()) as reader:
                    n = sum(int(getattr(c, "msgcount", 0) or 0) for c in reader.connections)
                out.append((f.name, True, f"ok (ROS 1 bag opens, {n} messages indexed)"))
            except Exception as exc:  # rosbags ReaderError / struct errors on a damaged .bag
                out.append((f.name, False, f"cannot open: {error_line(exc)}"))
    return out
