"""Networks: backbones (feature extractors), the Segmenter teacher/student, checkpoints.

Public API (see docs/ARCHITECTURE.md):

* :mod:`.backbones`: ``BACKBONES``, ``DEFAULT``, ``OFFLINE``, ``build_backbone``, ``Backbone``,
  ``extract_features``, ``normalize_image`` (from :mod:`drive_segment_ros.inference.preprocess`).
* :mod:`.weights`: ``load_state_dict_file``, hub / local file / deep-sort weight loading.
* :mod:`.segmenter`: ``SegmenterConfig``, ``Segmenter``, ``build_segmenter``.
* :mod:`.checkpoint`: ``save_checkpoint``, ``load_segmenter``, ``read_checkpoint_config``.

torch / torchvision / timm are imported only when these submodules are imported.
"""
import importlib

__all__ = [
    "BACKBONES", "DEFAULT", "OFFLINE", "Backbone", "build_backbone", "extract_features", "normalize_image",
    "load_state_dict_file", "SegmenterConfig", "Segmenter", "build_segmenter", "save_checkpoint",
    "load_segmenter", "read_checkpoint_config",
]

_WHERE = {
    **{n: "backbones" for n in ("BACKBONES", "DEFAULT", "OFFLINE", "Backbone", "build_backbone",
                                "extract_features", "normalize_image")},
    "load_state_dict_file": "weights",
    **{n: "segmenter" for n in ("SegmenterConfig", "Segmenter", "build_segmenter")},
    **{n: "checkpoint" for n in ("save_checkpoint", "load_segmenter", "read_checkpoint_config")},
}


def __getattr__(name):
    """Lazy re-export (keeps ``import drive_segment_ros.models`` free of torch)."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
