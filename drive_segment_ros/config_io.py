"""Reading the package's YAML configuration files (``config/*.yaml``) with one clear error."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

from drive_segment_ros.types import DriveSegmentError


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
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"{what} {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DriveSegmentError(f"{what} {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DriveSegmentError(f"{what} {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
