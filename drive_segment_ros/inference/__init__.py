"""On-vehicle inference: one interface over torch, ONNX Runtime and TensorRT.

* :mod:`.preprocess`: :class:`Preprocessor` (RGB uint8 -> normalized NCHW float32),
  :func:`postprocess` (logits -> uint8 class ids), ``IMAGENET_MEAN`` / ``IMAGENET_STD`` /
  :func:`normalize_image` (the one RGB normalisation of the package).
* :mod:`.backends`: :func:`create_backend`, :func:`load_model`, :class:`SegmentationModel`.
* :mod:`.export`: :func:`~.export.export_onnx` (its ``export`` / ``build-engine`` CLI is
  ``drive_segment_training.export_cli``).
* :mod:`.tensorrt_engine`: :func:`~.tensorrt_engine.build_engine`, :func:`~.tensorrt_engine.engine_is_stale`.

The names below are re-exported lazily (PEP 562 ``__getattr__``): importing
``drive_segment_ros.inference.preprocess`` (as the backbones do) does not load the backends,
and onnxruntime / tensorrt are imported only when a backend needs them.
"""
import importlib

__all__ = [
    "BACKEND_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InferenceBackend",
    "Preprocessor",
    "SegmentationModel",
    "backend_kind_for",
    "create_backend",
    "load_model",
    "normalize_image",
    "postprocess",
]

_WHERE = {
    **{n: "backends" for n in ("BACKEND_KINDS", "InferenceBackend", "SegmentationModel", "backend_kind_for",
                               "create_backend", "load_model")},
    **{n: "preprocess" for n in ("IMAGENET_MEAN", "IMAGENET_STD", "Preprocessor", "normalize_image", "postprocess")},
}


def __getattr__(name):
    """Lazy re-export of the public names of :mod:`.backends` and :mod:`.preprocess`."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
