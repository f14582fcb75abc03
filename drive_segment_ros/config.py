"""The one configuration base of the package, and YAML reading with one clear error.

Every configuration dataclass (``ProposalConfig``, ``ProjectionConfig``, ``SegmenterConfig``,
``PseudoLabelConfig``, ``TrainConfig``, ``AugmentConfig``, ``DemoConfig``) derives from
:class:`ConfigBase`, so they all load, validate and fail the same way:

* :meth:`ConfigBase.from_dict` takes a flat mapping (or ``{SECTION: {...}}`` with the class's
  section name as the sole key), rejects unknown keys, checks the type of every scalar field
  (``int`` / ``float`` / ``bool`` / ``str``, optionally ``None``; integers are accepted for float
  fields and converted) and mapping fields, then builds the dataclass, whose ``__post_init__``
  runs :meth:`ConfigBase.validate`. Every failure is one :class:`DriveSegmentError` line that
  names the config and the key.
* :meth:`ConfigBase.from_yaml` reads a YAML mapping (:func:`load_yaml_mapping`), selects the
  section (see :meth:`ConfigBase.select_section`) and calls :meth:`from_dict`.
* :meth:`ConfigBase.to_dict` gives plain Python values (tuples become lists).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from pathlib import Path
from typing import Any, ClassVar, Dict, FrozenSet, Mapping, Optional, Union

import yaml

from drive_segment_ros.types import DriveSegmentError, error_line

__all__ = ["ConfigBase", "load_yaml_mapping"]


def load_yaml_mapping(path: Union[str, Path], what: str) -> Dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file gives ``{}``).

    Args:
        path: the file.
        what: what the file is, for the error message (e.g. ``"projection config"``).

    Returns:
        The mapping (``yaml.safe_load``: plain Python types, no arbitrary objects).

    Raises:
        DriveSegmentError: the file is missing, is not valid YAML (first line of the parser's
        message) or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"{what} {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DriveSegmentError(f"{what} {path}: invalid YAML ({error_line(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DriveSegmentError(f"{what} {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


_SCALARS = (bool, int, float, str)


def _type_name(hint: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _check_value(name: str, key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a scalar / mapping type hint; return it (int -> float for float fields).

    Hints other than ``bool``/``int``/``float``/``str``/``Dict``/``Mapping`` (optionally
    ``Optional[...]``) are left to the class's ``__post_init__`` / ``validate``.
    """
    origin = typing.get_origin(hint)
    if origin is Union:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return value
        hint, origin = inner[0], typing.get_origin(inner[0])
    elif value is None and hint in _SCALARS:
        raise DriveSegmentError(f"{name}: {key} must be {_type_name(hint)}, got None")
    if value is None:
        return value
    if hint is bool:
        ok = isinstance(value, (bool,)) or type(value).__name__ == "bool_"
    elif hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint in (dict, Dict, Mapping) or origin in (dict, Mapping, typing.Mapping, Dict):
        ok = isinstance(value, Mapping)
    else:
        return value
    if not ok:
        what = "a mapping" if hint not in _SCALARS else _type_name(hint)
        raise DriveSegmentError(f"{name}: {key} must be {what}, got {value!r}")
    return value


class ConfigBase:
    """Mixin of every configuration dataclass: ``from_dict`` / ``from_yaml`` / ``to_dict`` / ``validate``.

    Subclasses are ``@dataclass`` classes and may set:

    * ``CONFIG_NAME``: prefix of every error message (e.g. ``"projection config"``).
    * ``SECTION``: name of the YAML section that holds the fields (e.g. ``"projection"``);
      ``None`` = the fields are at the top level.
    * ``IGNORED_KEYS``: keys accepted and dropped (metadata written next to the fields).

    The dataclass ``__post_init__`` calls :meth:`validate`; subclasses that coerce values first
    override ``__post_init__`` and call ``super().__post_init__()`` (or ``self.validate()``) last.
    """

    CONFIG_NAME: ClassVar[str] = "config"
    SECTION: ClassVar[Optional[str]] = None
    IGNORED_KEYS: ClassVar[FrozenSet[str]] = frozenset()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self):
        """Check (and coerce) every value; raise :class:`DriveSegmentError` (one line) on the first bad one.

        Returns ``self``. The base implementation checks nothing.
        """
        return self

    def check_field_types(self) -> None:
        """Type-check every field with a scalar hint (``int`` / ``float`` / ``bool`` / ``str``, optionally
        ``Optional``) as :meth:`from_dict` does, and require float fields to be finite; values are not
        converted. For :meth:`validate` of classes also built directly (``Config(key=value)``,
        ``dataclasses.replace``), which bypasses :meth:`from_dict`.

        Raises:
            DriveSegmentError: ``"<CONFIG_NAME>: <key> must be an integer / a number / a finite number /
            a boolean / a string, got <value>"``.
        """
        hints = self._type_hints()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            hint, value = hints.get(f.name, Any), getattr(self, f.name)
            inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is Union else [hint]
            if len(inner) != 1 or inner[0] not in _SCALARS:
                continue
            _check_value(self.CONFIG_NAME, f.name, value, hint)
            if inner[0] is float and value is not None and not math.isfinite(value):
                raise DriveSegmentError(f"{self.CONFIG_NAME}: {f.name} must be a finite number, got {value!r}")

    # ------------------------------------------------------------------------------ building
    @classmethod
    def field_names(cls) -> list:
        """Names of every configurable key, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def _type_hints(cls) -> Dict[str, Any]:
        try:
            return typing.get_type_hints(cls)
        except Exception:  # unresolvable forward reference: skip the type checks
            return {}

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]] = None, **overrides: Any):
        """Build the config from a mapping, then ``overrides`` on top.

        Args:
            data: the fields (flat), or ``{SECTION: {...}}`` (the class's section name as the sole
                key, unwrapped); ``None`` = defaults.
            overrides: final values; ``None`` values are skipped (argparse defaults pass through).

        Returns:
            The validated config.

        Raises:
            DriveSegmentError: ``data`` is not a mapping, has unknown keys, a value of the wrong type
            or an invalid value (the message names the config and the key).
        """
        name = cls.CONFIG_NAME
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise DriveSegmentError(f"{name}: config must be a mapping, got {type(data).__name__}")
        if cls.SECTION is not None and set(data) == {cls.SECTION} and (
                data[cls.SECTION] is None or isinstance(data[cls.SECTION], Mapping)):
            data = data[cls.SECTION] or {}
        values = {k: v for k, v in data.items() if k not in cls.IGNORED_KEYS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = cls.field_names()
        unknown = sorted(str(k) for k in set(values) - set(known))
        if unknown:
            raise DriveSegmentError(f"{name}: unknown keys {unknown}; known keys: {', '.join(known)}")
        hints = cls._type_hints()
        kwargs = {key: _check_value(name, key, value, hints.get(key, Any)) for key, value in values.items()}
        try:
            return cls(**kwargs)
        except DriveSegmentError:
            raise
        except (TypeError, ValueError) as exc:
            raise DriveSegmentError(f"{name}: invalid value ({exc})") from exc

    @classmethod
    def default_yaml_path(cls) -> Optional[Path]:
        """YAML file read by ``from_yaml(None)``; ``None`` (the base) = no file, the defaults."""
        return None

    @classmethod
    def select_section(cls, data: Dict[str, Any], section: Optional[str]) -> Dict[str, Any]:
        """The part of a YAML mapping that holds this config's fields.

        ``section=None``: the whole mapping (``{SECTION: {...}}`` is unwrapped by :meth:`from_dict`).
        A named section must be present and be a mapping (or empty); other top-level keys are ignored,
        so one file may hold several sections.

        Raises:
            DriveSegmentError: the named section is missing or not a mapping.
        """
        if section is None:
            return data
        if section not in data:
            raise DriveSegmentError(f"{cls.CONFIG_NAME}: no section {section!r} (top-level keys: {sorted(data)})")
        value = data[section]
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise DriveSegmentError(f"{cls.CONFIG_NAME}: section {section!r} must be a mapping, got {type(value).__name__}")
        return dict(value)

    @classmethod
    def from_yaml(cls, path: Optional[Union[str, Path]] = None, section: Optional[str] = None, **overrides: Any):
        """Read the config from a YAML file.

        Args:
            path: the file; ``None`` = :meth:`default_yaml_path` (defaults when that is ``None`` too).
            section: top-level key holding the fields (see :meth:`select_section`); ``None`` = the
                fields are at the top level or under ``SECTION`` as the sole key.
            overrides: as in :meth:`from_dict`.

        Raises:
            DriveSegmentError: the file is missing / not YAML / not a mapping, the section is missing,
            or :meth:`from_dict` fails.
        """
        if path is None:
            path = cls.default_yaml_path()
        data: Dict[str, Any] = {} if path is None else load_yaml_mapping(path, cls.CONFIG_NAME)
        return cls.from_dict(cls.select_section(data, section), **overrides)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form (YAML / JSON serialisable: tuples become lists)."""

        def plain(value: Any) -> Any:
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, list):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
