"""On-vehicle inference: one interface over torch, ONNX Runtime and TensorRT.

* :mod:`.preprocess`: :class:`Preprocessor` (RGB uint8 -> normalized NCHW float32),
  :func:`postprocess` (logits -> uint8 class ids), :func:`colorize_mask`.
* :mod:`.backends`: :func:`create_backend`, :func:`load_model`, :class:`SegmentationModel`.
* :mod:`.export`: :func:`~.export.export_onnx` and the ``export`` / ``build-engine`` CLI.
* :mod:`.tensorrt_engine`: :func:`~.tensorrt_engine.build_engine`, :func:`~.tensorrt_engine.engine_is_stale`.

torch, onnxruntime and tensorrt are imported only when a backend needs them.
"""
from drive_segment_ros.inference.backends import (
    BACKEND_KINDS,
    InferenceBackend,
    SegmentationModel,
    backend_kind_for,
    create_backend,
    load_model,
)
from drive_segment_ros.inference.preprocess import Preprocessor, colorize_mask, get_palette, postprocess

__all__ = [
    "BACKEND_KINDS",
    "InferenceBackend",
    "Preprocessor",
    "SegmentationModel",
    "backend_kind_for",
    "colorize_mask",
    "create_backend",
    "get_palette",
    "load_model",
    "postprocess",
]
