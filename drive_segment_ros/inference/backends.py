"""One inference interface over three runtimes: torch, ONNX Runtime and TensorRT.

Every backend implements :class:`InferenceBackend` (``infer(batch) -> logits``), carries the
model metadata it needs (classes, normalization, input size, palette) *inside* the model
artifact (checkpoint ``config``, ONNX ``metadata_props``, engine ``.json`` sidecar), and shares
:mod:`drive_segment_ros.inference.preprocess`, so that :class:`SegmentationModel` gives the
same class ids whatever runs underneath.

* ``"torch"``: a checkpoint directory (:func:`drive_segment_ros.models.checkpoint.load_segmenter`);
  CPU or CUDA; on CUDA bf16 autocast (``torch.autocast``), channels-last and optional
  ``torch.compile`` (PyTorch docs, "Automatic Mixed Precision", "torch.compile").
* ``"onnxruntime"``: an ``.onnx`` file; CPU execution provider, CUDA EP when the installed
  onnxruntime has it (ONNX Runtime docs, "Execution Providers").
* ``"tensorrt"``: a serialized ``.engine`` / ``.plan`` (TensorRT >= 10 Python API:
  ``Runtime.deserialize_cuda_engine``, ``IExecutionContext.set_tensor_address`` /
  ``execute_async_v3``), device buffers are torch CUDA tensors, host staging buffers pinned.
  Needs the ``tensorrt`` package and a CUDA GPU (JetPack on Jetson, ``pip install tensorrt``).

:func:`load_model` picks the backend from the file type.
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Tuple, Union, runtime_checkable

import numpy as np
import torch

from drive_segment_ros.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor, postprocess
from drive_segment_ros.devices import resolve_device
from drive_segment_ros.inference.sliding_window import INFERENCE_MODES, METADATA_KEY as SLIDING_KEY, SlidingWindowConfig, sliding_logits
from drive_segment_ros.models.checkpoint import load_segmenter
from drive_segment_ros.models.integrity import check_onnx_finite, verify_digest
from drive_segment_ros.types import DriveSegmentError, error_line
from drive_segment_ros.visualization import colorize, palette

LOG = logging.getLogger(__name__)

BACKEND_KINDS = ("torch", "onnxruntime", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
TENSORRT_MISSING = "TensorRT backend needs the `tensorrt` Python package (JetPack / pip install tensorrt) and a CUDA GPU"

#: Keys written into ONNX ``metadata_props`` / the engine sidecar (values are JSON strings).
#: Name stored in the model metadata for :func:`drive_segment_ros.visualization.palette`.
PALETTE_NAME = "drive_segment"
#: ``sliding_window`` (optional): the model's :class:`~drive_segment_ros.inference.sliding_window.SlidingWindowConfig` dict.
METADATA_KEYS = ("n_classes", "mean", "std", "input_size", "backbone", "decoder", "palette", "dynamic_hw", SLIDING_KEY)

PathLike = Union[str, Path]


# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------
def _cfg_get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def model_metadata(config: Any, n_classes: Optional[int] = None, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Model metadata from a ``SegmenterConfig`` (or an equivalent dict).

    Returns a dict with ``n_classes`` (int), ``mean``/``std`` (3 floats, [0, 1] units),
    ``input_size`` ([H, W] pixels), ``backbone`` and ``decoder`` (str), ``palette`` (palette
    name: ``"drive_segment"`` = :func:`drive_segment_ros.visualization.palette`), ``dynamic_hw`` (bool),
    and ``sliding_window`` (validated settings dict) when the checkpoint ``extra`` holds one.
    """
    size = _cfg_get(config, "input_size") or (512, 512)
    k = int(n_classes if n_classes is not None else _cfg_get(config, "n_classes"))
    meta = {
        "n_classes": k,
        "mean": [float(v) for v in (_cfg_get(config, "mean") or IMAGENET_MEAN)],
        "std": [float(v) for v in (_cfg_get(config, "std") or IMAGENET_STD)],
        "input_size": [int(size[0]), int(size[1])],
        "backbone": str(_cfg_get(config, "backbone", "")),
        "decoder": str(_cfg_get(config, "decoder", "")),
        "palette": PALETTE_NAME,
        "dynamic_hw": False,
    }
    if extra and extra.get(SLIDING_KEY):
        meta[SLIDING_KEY] = SlidingWindowConfig.from_dict(extra[SLIDING_KEY]).to_dict()
    return meta


def encode_metadata(meta: Dict[str, Any]) -> Dict[str, str]:
    """Metadata dict -> ``{key: json string}`` (ONNX ``metadata_props`` hold strings only)."""
    return {k: json.dumps(meta[k]) for k in METADATA_KEYS if k in meta}


def decode_metadata(props: Dict[str, str], source: str = "model") -> Dict[str, Any]:
    """Inverse of :func:`encode_metadata`; raises DriveSegmentError when keys are missing/invalid."""
    missing = [k for k in ("n_classes", "mean", "std", "input_size") if k not in props]
    if missing:
        raise DriveSegmentError(
            f"{source} lacks drive_segment metadata {missing} (export it with `drive-segment export`)"
        )
    out: Dict[str, Any] = {}
    for k in METADATA_KEYS:
        if k in props:
            try:
                out[k] = json.loads(props[k])
            except json.JSONDecodeError as exc:
                raise DriveSegmentError(f"{source}: metadata {k!r}={props[k]!r} is not valid JSON") from exc
    return out


def _check_batch(batch: np.ndarray, fixed_size: Optional[Tuple[int, int]], who: str) -> np.ndarray:
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
        raise DriveSegmentError(f"{who}: expected a float32 (B, 3, H, W) numpy batch, got {getattr(batch, 'shape', type(batch))}")
    if batch.dtype != np.float32:
        raise DriveSegmentError(f"{who}: expected float32 input, got {batch.dtype}")
    if fixed_size is not None and tuple(batch.shape[2:]) != tuple(fixed_size):
        raise DriveSegmentError(f"{who}: model input is fixed at {fixed_size[0]}x{fixed_size[1]}, got {batch.shape[2]}x{batch.shape[3]}")
    return np.ascontiguousarray(batch)


# --------------------------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------------------------
@runtime_checkable
class InferenceBackend(Protocol):
    """What every backend provides.

    Attributes:
        name: ``"torch"``, ``"onnxruntime"`` or ``"tensorrt"``.
        device: where it runs, e.g. ``"cpu"``, ``"cuda:0"``.
        input_size: ``(H, W)`` the network expects (the export / training size).
        metadata: see :func:`model_metadata`.
    """

    name: str
    device: str
    input_size: Tuple[int, int]
    metadata: Dict[str, Any]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 normalized -> ``(B, K, H, W)`` float32 logits (host memory)."""
        ...


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------
class TorchBackend:
    """PyTorch eager (optionally compiled) Segmenter from a checkpoint directory.

    Args:
        checkpoint_dir: directory written by ``save_checkpoint`` (safetensors + JSON config).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        bf16: bf16 autocast (default: on for CUDA, off on CPU). Logits are returned as float32.
        compile: wrap the model in ``torch.compile`` (first call compiles; CUDA recommended).
        channels_last: NHWC memory format (default: on for CUDA; helps conv backbones).
        input_size: (H, W) network input in pixels; default the checkpoint config's ``input_size``.

    Raises:
        DriveSegmentError: missing checkpoint, unknown / unavailable device.
    """

    name = "torch"

    def __init__(
        self,
        checkpoint_dir: PathLike,
        device: str = "auto",
        bf16: Optional[bool] = None,
        compile: bool = False,
        channels_last: Optional[bool] = None,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        path = Path(checkpoint_dir)
        if not path.is_dir():
            raise DriveSegmentError(f"torch backend needs a checkpoint directory, {path} is not one")

        dev = resolve_device(device)
        loaded = load_segmenter(path, dev)
        model, config = loaded[0], loaded[1]
        extra = loaded[2] if len(loaded) > 2 else None
        self.config = config
        self.torch_device = dev
        self.device = str(dev)
        is_cuda = dev.type == "cuda"
        self.bf16 = is_cuda if bf16 is None else bool(bf16)
        self.channels_last = is_cuda if channels_last is None else bool(channels_last)
        model = model.to(dev).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        n_classes = _cfg_get(config, "n_classes")
        self.metadata = model_metadata(config, n_classes, extra)
        if input_size is not None:  # torch runs any size; e.g. match an exported ONNX model's fixed size
            self.metadata["input_size"] = [int(v) for v in input_size]
        self.input_size = tuple(self.metadata["input_size"])
        self.model = model
        self._forward = torch.compile(model) if compile else model
        self.compiled = bool(compile)
        LOG.info("torch backend: %s on %s (bf16=%s, channels_last=%s, compile=%s)", path, dev, self.bf16, self.channels_last, compile)

    def infer_device(self, batch: np.ndarray):
        """Like :meth:`infer` but returns the logits as a torch tensor on :attr:`device` (float32)."""
        batch = _check_batch(batch, None, "torch backend")
        x = torch.from_numpy(batch)
        if self.torch_device.type == "cuda":
            x = x.pin_memory().to(self.torch_device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(
            device_type=self.torch_device.type, dtype=torch.bfloat16, enabled=self.bf16
        ):
            y = self._forward(x)
        return y.float()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 -> ``(B, K, H, W)`` float32 logits on the host."""
        return self.infer_device(batch).cpu().numpy()


# --------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------
class OnnxRuntimeBackend:
    """ONNX Runtime session over an exported ``.onnx`` model (metadata from ``metadata_props``).

    Args:
        onnx_path: file written by :func:`drive_segment_ros.inference.export.export_onnx`.
        device: ``"auto"`` (CUDA EP when onnxruntime provides it, else CPU), ``"cpu"``,
            ``"cuda"`` / ``"cuda:N"`` (error when the CUDA EP is not installed).
        threads: intra-op threads (default: onnxruntime's choice, one per core).

    A model exported with a fixed batch of 1 is run image by image for larger batches.

    Raises:
        DriveSegmentError: missing / invalid file, missing metadata, unavailable CUDA EP.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: PathLike, device: str = "auto", threads: Optional[int] = None) -> None:
        import onnxruntime as ort  # optional heavy dependency (onnx extra)

        path = Path(onnx_path)
        if not path.is_file():
            raise DriveSegmentError(f"ONNX model {path} not found")
        verify_digest(path, what="ONNX model")  # <file>.sha256 from export_onnx; IntegrityError: one line
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if device == "auto":
            device = "cuda" if has_cuda else "cpu"
        if device.startswith("cuda"):
            if not has_cuda:
                raise DriveSegmentError(f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); available: {available}")
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            providers: list = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
            self.device = f"cuda:{dev_id}"
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
            self.device = "cpu"
        else:
            raise DriveSegmentError(f"unsupported device {device!r} for onnxruntime (use auto, cpu, cuda or cuda:N)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise DriveSegmentError(f"onnxruntime cannot load {path}: {error_line(exc)}") from exc
        check_onnx_finite(path)  # NaN / inf initializers: IntegrityError (after ORT parsed the file)
        self.metadata = decode_metadata(self.session.get_modelmeta().custom_metadata_map, f"ONNX model {path}")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = inp.shape  # e.g. [1, 3, 512, 512] or ['batch', 3, 'height', 'width']
        self.static_batch = shape[0] if isinstance(shape[0], int) else None
        static_hw = tuple(shape[2:]) if all(isinstance(v, int) for v in shape[2:]) else None
        self._fixed_hw = static_hw
        self.input_size = tuple(int(v) for v in (static_hw or self.metadata["input_size"]))
        self.providers = self.session.get_providers()
        LOG.info("onnxruntime backend: %s on %s (providers %s, input %s)", path, self.device, self.providers, shape)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 -> ``(B, K, H, W)`` float32 logits."""
        batch = _check_batch(batch, self._fixed_hw, "onnxruntime backend")
        if self.static_batch is not None and batch.shape[0] != self.static_batch:
            if self.static_batch != 1:
                raise DriveSegmentError(f"onnxruntime backend: model batch is fixed at {self.static_batch}, got {batch.shape[0]}")
            outs = [self.session.run([self.output_name], {self.input_name: batch[i : i + 1]})[0] for i in range(len(batch))]
            return np.concatenate(outs, axis=0).astype(np.float32, copy=False)
        return self.session.run([self.output_name], {self.input_name: batch})[0].astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# TensorRT
# --------------------------------------------------------------------------------------------
def import_tensorrt():
    """Import and return the ``tensorrt`` module, or raise DriveSegmentError(TENSORRT_MISSING)."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]  # optional heavy dependency
    except ImportError as exc:
        raise DriveSegmentError(TENSORRT_MISSING) from exc
    return trt


class TensorRTBackend:
    """Serialized TensorRT engine (TensorRT >= 10 tensor-address API).

    Args:
        engine_path: ``.engine`` / ``.plan`` from
            :func:`drive_segment_ros.inference.tensorrt_engine.build_engine`; its ``<engine>.json``
            sidecar supplies the model metadata.
        device: ``"auto"`` / ``"cuda"`` / ``"cuda:N"`` (TensorRT needs a CUDA GPU).

    Input and output live in torch CUDA tensors (reused while the shape is unchanged); the host
    input is staged through a pinned buffer and the copy, the engine and the output copy run on
    one CUDA stream.

    Raises:
        DriveSegmentError: no ``tensorrt`` / no CUDA (:data:`TENSORRT_MISSING`), missing files,
            an engine that does not deserialize (built for another GPU or TensorRT version).
    """

    name = "tensorrt"

    def __init__(self, engine_path: PathLike, device: str = "auto") -> None:
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise DriveSegmentError(TENSORRT_MISSING)
        path = Path(engine_path)
        if not path.is_file():
            raise DriveSegmentError(f"TensorRT engine {path} not found")
        dev = resolve_device("cuda" if device == "auto" else device)
        if dev.type != "cuda":
            raise DriveSegmentError(f"TensorRT runs on CUDA only, got device {device!r}")
        self.torch_device = dev
        self.device = f"cuda:{dev.index or 0}"
        sidecar = path.with_name(path.name + ".json")
        if not sidecar.is_file():
            raise DriveSegmentError(f"TensorRT engine {path} has no {sidecar.name} sidecar (build it with `drive-segment build-engine`)")
        info = json.loads(sidecar.read_text())
        self.build_info = info
        verify_digest(path, info.get("engine_sha256"), what="TensorRT engine")  # recorded by build_engine
        self.metadata = decode_metadata(info.get("metadata", {}), f"engine sidecar {sidecar}")
        with torch.cuda.device(dev):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise DriveSegmentError(
                    f"TensorRT cannot deserialize {path} (built for another GPU or TensorRT version?); rebuild it with `drive-segment build-engine`"
                )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=dev)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise DriveSegmentError(f"engine {path}: expected one input and one output, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self._in_dtype = _trt_to_torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self._out_dtype = _trt_to_torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self._fixed_hw = tuple(shape[2:]) if min(shape[2:]) > 0 else None
        self.input_size = tuple(int(v) for v in (self._fixed_hw or self.metadata["input_size"]))
        self._shape: Optional[Tuple[int, ...]] = None
        LOG.info("tensorrt backend: %s on %s (input %s %s)", path, self.device, self.input_name, shape)

    def _prepare(self, shape: Tuple[int, ...]) -> None:
        if shape == self._shape:
            return
        if not self.context.set_input_shape(self.input_name, shape):
            raise DriveSegmentError(f"TensorRT engine does not accept input shape {shape} (outside its optimization profile)")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self._host_in = torch.empty(shape, dtype=torch.float32, pin_memory=True)
        self._dev_in = torch.empty(shape, dtype=self._in_dtype, device=self.torch_device)
        self._dev_out = torch.empty(out_shape, dtype=self._out_dtype, device=self.torch_device)
        self._host_out = torch.empty(out_shape, dtype=torch.float32, pin_memory=True)
        self.context.set_tensor_address(self.input_name, self._dev_in.data_ptr())
        self.context.set_tensor_address(self.output_name, self._dev_out.data_ptr())
        self._shape = shape

    def infer_device(self, batch: np.ndarray):
        """Run the engine; returns the logits as a CUDA torch tensor (float32, synchronized)."""
        batch = _check_batch(batch, self._fixed_hw, "tensorrt backend")
        self._prepare(tuple(batch.shape))
        self._host_in.numpy()[...] = batch
        with torch.cuda.stream(self.stream):
            self._dev_in.copy_(self._host_in, non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise DriveSegmentError("TensorRT execute_async_v3 failed")
            out = self._dev_out.float()
        self.stream.synchronize()
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 -> ``(B, K, H, W)`` float32 logits on the host."""
        out = self.infer_device(batch)
        with _torch_stream(self.stream):
            self._host_out.copy_(out, non_blocking=True)
        self.stream.synchronize()
        return self._host_out.numpy().copy()


def _torch_stream(stream):
    """``torch.cuda.stream(stream)`` (one place to patch in tests)."""
    return torch.cuda.stream(stream)


def _trt_to_torch_dtype(trt, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise DriveSegmentError(f"unsupported TensorRT tensor dtype {dtype}")
    return table[dtype]


# --------------------------------------------------------------------------------------------
# factory + model
# --------------------------------------------------------------------------------------------
def create_backend(kind: str, path: PathLike, device: str = "auto", **opts: Any) -> InferenceBackend:
    """Build a backend.

    Args:
        kind: ``"torch"`` (checkpoint dir), ``"onnxruntime"`` (``.onnx``), ``"tensorrt"`` (engine).
        path: the model artifact.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        **opts: backend options (torch: ``bf16``, ``compile``, ``channels_last``;
            onnxruntime: ``threads``).

    Raises:
        DriveSegmentError: unknown kind, bad option, or the backend's own errors.
    """
    classes = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}
    if kind not in classes:
        raise DriveSegmentError(f"unknown inference backend {kind!r}; use one of {BACKEND_KINDS}")
    cls = classes[kind]
    # constructor parameters after (self, path), minus device: the backend's options
    options = [p for p in list(inspect.signature(cls.__init__).parameters)[2:] if p != "device"]
    unknown = sorted(set(opts) - set(options))
    if unknown:
        raise DriveSegmentError(f"bad option(s) {unknown} for the {kind} backend; it accepts {options}")
    return cls(path, device=device, **opts)


def backend_kind_for(path: PathLike) -> str:
    """Backend kind from the artifact: dir -> torch, ``.onnx`` -> onnxruntime, ``.engine/.plan/.trt`` -> tensorrt."""
    p = Path(path)
    if p.is_dir():
        return "torch"
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if not p.exists():
        raise DriveSegmentError(f"model {p} not found")
    raise DriveSegmentError(f"cannot tell the backend of {p}: expected a checkpoint directory, .onnx or {'/'.join(ENGINE_SUFFIXES)}")


def _max_batch(backend: Any) -> Optional[int]:
    """Largest batch a TensorRT engine accepts (fixed batch, or its profile's max); ``None`` = any."""
    engine = getattr(backend, "engine", None)
    name = getattr(backend, "input_name", None)
    if engine is None or name is None:
        return None
    try:
        shape = tuple(engine.get_tensor_shape(name))
        if shape[0] > 0:
            return int(shape[0])
        return int(engine.get_tensor_profile_shape(name, 0)[2][0])
    except Exception:  # noqa: BLE001 -- an engine API we cannot query: do not cap
        return None


class SegmentationModel:
    """Image in, class ids out, whatever the backend.

    Args:
        backend: any :class:`InferenceBackend`.
        preprocessor: default built from the backend metadata (input size, mean, std).
        mode: post-processing mode (see :func:`~drive_segment_ros.inference.preprocess.postprocess`).
        inference_mode: ``"whole"`` (default: the image resized to the network input, one
            forward pass) or ``"sliding"`` (the released Drive&Segment protocol: windows over the
            image at the working scale, logits averaged over overlaps,
            :mod:`drive_segment_ros.inference.sliding_window`; the backend runs per window, so an
            exported ONNX model / TensorRT engine of the window size works unchanged).
        sliding: sliding-window settings replacing the model's own (``metadata["sliding_window"]``,
            else windows of the network input size, see
            :meth:`~drive_segment_ros.inference.sliding_window.SlidingWindowConfig.for_model`):
            a ``SlidingWindowConfig`` or a dict of some of its fields.

    Raises:
        DriveSegmentError: unknown ``inference_mode`` or invalid sliding settings.
    """

    def __init__(self, backend: InferenceBackend, preprocessor: Optional[Preprocessor] = None, mode: str = "nearest",
                 inference_mode: str = "whole", sliding: Union[SlidingWindowConfig, Dict[str, Any], None] = None) -> None:
        if inference_mode not in INFERENCE_MODES:
            raise DriveSegmentError(f"inference_mode must be one of {INFERENCE_MODES}, got {inference_mode!r}")
        self.backend = backend
        meta = backend.metadata
        self.preprocessor = preprocessor or Preprocessor(backend.input_size, meta["mean"], meta["std"])
        self.n_classes = int(meta["n_classes"])
        self.mode = mode
        self.inference_mode = inference_mode
        base = SlidingWindowConfig.for_model(backend.input_size, meta)
        if isinstance(sliding, SlidingWindowConfig):
            base = sliding
        elif sliding:
            base = SlidingWindowConfig.from_dict({**base.to_dict(), **dict(sliding)})
        cap = _max_batch(backend)
        if cap is not None and base.batch_size > cap:  # e.g. a TensorRT engine built for batch <= 4
            base = SlidingWindowConfig.from_dict({**base.to_dict(), "batch_size": cap})
        #: the sliding-window settings (used when ``inference_mode == "sliding"``)
        self.sliding = base
        self.palette = palette(max(self.n_classes, 256))

    @property
    def metadata(self) -> Dict[str, Any]:
        """The backend's model metadata (see :func:`model_metadata`)."""
        return self.backend.metadata

    def _forward(self):
        return getattr(self.backend, "infer_device", None) or self.backend.infer

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        """``(H0, W0, 3)`` uint8 -> ``(1, K, H, W)`` float32 numpy logits at model resolution
        (``whole``: the network input size; ``sliding``: the working scale)."""
        if self.inference_mode == "sliding":
            out = sliding_logits(rgb, self.preprocessor.normalize, self._forward(), self.sliding)
            return out if isinstance(out, np.ndarray) else out.float().cpu().numpy()
        return self.backend.infer(self.preprocessor(rgb))

    def predict(self, rgb: np.ndarray) -> Tuple[np.ndarray, Dict[str, float]]:
        """Segment one image.

        Args:
            rgb: ``(H0, W0, 3)`` uint8 RGB.

        Returns:
            ``(class_ids (H0, W0) uint8, timing)`` where ``timing`` holds ``preprocess_ms``,
            ``infer_ms``, ``postprocess_ms`` and ``total_ms`` (wall clock, milliseconds).
        """
        t0 = time.perf_counter()
        if self.inference_mode == "sliding":  # resize + normalise, then windows (timed as inference)
            t1 = t0
            logits = sliding_logits(rgb, self.preprocessor.normalize, self._forward(), self.sliding)
        else:
            x = self.preprocessor(rgb)
            t1 = time.perf_counter()
            logits = self._forward()(x)
        if hasattr(logits, "device") and getattr(logits.device, "type", "cpu") == "cuda":
            torch.cuda.synchronize(logits.device)
        t2 = time.perf_counter()
        ids = postprocess(logits, rgb.shape[:2], mode=self.mode)
        t3 = time.perf_counter()
        timing = {
            "preprocess_ms": (t1 - t0) * 1e3,
            "infer_ms": (t2 - t1) * 1e3,
            "postprocess_ms": (t3 - t2) * 1e3,
            "total_ms": (t3 - t0) * 1e3,
        }
        return ids, timing

    def colorize(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids (H, W) integer -> RGB (H, W, 3) uint8 with the project palette (:attr:`palette`).

        Every id in ``[0, len(palette))`` gets its colour (no id is treated as ignore); others are black.
        """
        return colorize(class_ids, self.palette, ignore_value=None)

    def __repr__(self) -> str:
        b = self.backend
        mode = self.inference_mode if self.inference_mode == "whole" else f"sliding {self.sliding.to_dict()}"
        return (f"SegmentationModel(backend={b.name}, device={b.device}, input_size={b.input_size}, n_classes={self.n_classes}, "
                f"inference={mode})")


def load_model(path: PathLike, backend: str = "auto", device: str = "auto", inference_mode: str = "whole",
               sliding: Union[SlidingWindowConfig, Dict[str, Any], None] = None, **opts: Any) -> SegmentationModel:
    """Load a model artifact behind :class:`SegmentationModel`.

    Args:
        path: checkpoint directory (torch), ``.onnx`` (onnxruntime) or ``.engine``/``.plan`` (tensorrt).
        backend: ``"auto"`` (by file type, see :func:`backend_kind_for`) or one of :data:`BACKEND_KINDS`.
        device, **opts: passed to :func:`create_backend`.
        inference_mode, sliding: see :class:`SegmentationModel`.

    Raises:
        DriveSegmentError: missing file, unknown type, backend errors, bad inference settings.
    """
    if inference_mode not in INFERENCE_MODES:
        raise DriveSegmentError(f"inference_mode must be one of {INFERENCE_MODES}, got {inference_mode!r}")
    kind = backend_kind_for(path) if backend == "auto" else backend
    return SegmentationModel(create_backend(kind, path, device=device, **opts), inference_mode=inference_mode, sliding=sliding)
