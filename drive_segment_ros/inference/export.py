"""ONNX export of a Segmenter checkpoint (checked against torch with ONNX Runtime).

:func:`export_onnx` traces the checkpoint's model (``torch.onnx.export``; the TorchScript-based
exporter by default because it needs no ``onnxscript``; ``exporter="dynamo"`` selects the
``torch.export`` one), stores the model metadata in the ONNX ``metadata_props`` (so every
backend runs from the one file), validates it with ``onnx.checker`` and compares ONNX Runtime
(CPU) logits with torch float32 logits on the same input: a real image when given, else a
seeded random one.

Graph I/O: input ``images`` float32 ``(B, 3, H, W)`` normalized (see
:class:`~drive_segment_ros.inference.preprocess.Preprocessor`), output ``logits`` float32
``(B, K, H, W)``.

The command line (``drive-segment export`` / ``build-engine``) is ``drive_segment_training.export_cli``.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import cv2
import numpy as np
import torch
from torch.onnx import symbolic_helper as sh

from drive_segment_ros.inference.backends import encode_metadata, model_metadata
from drive_segment_ros.inference.preprocess import Preprocessor
from drive_segment_ros.models.integrity import digest_path, write_digest
from drive_segment_ros.models.checkpoint import load_segmenter
from drive_segment_ros.types import DriveSegmentError, error_line

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _bicubic_aa_symbolic(g, input, output_size, align_corners, *scales):
    """ONNX ``Resize`` for ``aten::_upsample_bicubic2d_aa`` (antialiased bicubic, timm's ViT
    position-embedding resampling), which the TorchScript exporter does not translate.

    PyTorch's antialiased bicubic uses Keys' kernel with ``a = -0.5`` and renormalizes the
    taps inside the image (PIL convention); ONNX ``Resize`` reproduces that with
    ``cubic_coeff_a=-0.5, exclude_outside=1`` (ONNX operator spec, Resize-18), and ``antialias=1``
    (opset >= 18) when down-sampling. Up-sampling needs no antialias (any opset, TensorRT).
    """
    out_hw = sh._maybe_get_const(output_size, "is")
    align = bool(sh._maybe_get_const(align_corners, "b"))
    sizes_in = sh._get_tensor_sizes(input)
    if sizes_in is None or any(v is None for v in sizes_in) or not isinstance(out_hw, (list, tuple)):
        raise DriveSegmentError("antialiased bicubic resize with dynamic shapes cannot be exported; export a fixed input size")
    n, c, h, w = (int(v) for v in sizes_in)
    attrs = dict(
        mode_s="cubic",
        cubic_coeff_a_f=-0.5,
        exclude_outside_i=1,
        coordinate_transformation_mode_s="align_corners" if align else "half_pixel",
    )
    if int(out_hw[0]) < h or int(out_hw[1]) < w:
        if g.opset < 18:
            raise DriveSegmentError(
                f"this input size down-samples the ViT position embedding ({h}x{w} -> {out_hw[0]}x{out_hw[1]} patches), "
                "which needs ONNX opset >= 18 (antialiased Resize); pass --opset 18 or a larger input size"
            )
        attrs["antialias_i"] = 1
    sizes = g.op("Constant", value_t=torch_tensor([n, c, int(out_hw[0]), int(out_hw[1])], "int64"))
    empty = g.op("Constant", value_t=torch_tensor([], "float32"))
    return g.op("Resize", input, empty, empty, sizes, **attrs)


def torch_tensor(values, dtype: str):
    """``torch.tensor(values, dtype=getattr(torch, dtype))``."""
    return torch.tensor(values, dtype=getattr(torch, dtype))


_SYMBOLICS_REGISTERED = False


def _register_symbolics() -> None:
    global _SYMBOLICS_REGISTERED
    if _SYMBOLICS_REGISTERED:
        return
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _bicubic_aa_symbolic, 11)
    _SYMBOLICS_REGISTERED = True


def _load_image(image: Union[PathLike, np.ndarray]) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DriveSegmentError(f"cannot read image {image}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort  # optional heavy dependency (onnx extra)

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors surface as exceptions; keep ORT's own log quiet
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def _compare(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    if ref.shape != got.shape:
        raise DriveSegmentError(f"ONNX output shape {got.shape} differs from torch {ref.shape}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "argmax_agreement": float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1))),
    }


def export_onnx(
    checkpoint_dir: PathLike,
    out_path: PathLike,
    height: Optional[int] = None,
    width: Optional[int] = None,
    opset: int = 17,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
    image: Optional[Union[PathLike, np.ndarray]] = None,
    exporter: str = "torchscript",
    seed: int = 0,
) -> Dict[str, Any]:
    """Export a Segmenter checkpoint to ONNX and check it with ONNX Runtime.

    Args:
        checkpoint_dir: directory written by ``save_checkpoint``.
        out_path: the ``.onnx`` file to write (parent directories are created).
        height, width: input size in pixels (default: the config's ``input_size``); a ViT
            needs multiples of its patch size.
        opset: ONNX opset (17 has LayerNormalization; TensorRT 8.6+ parses it).
        dynamic_batch: make the batch dimension dynamic (name ``batch``).
        dynamic_hw: make height / width dynamic (checked at a smaller and a larger size too;
            a graph whose trace fixed a shape is refused with DriveSegmentError).
        image: RGB uint8 (H0, W0, 3) array or image path for the check input (resized and
            normalized exactly as at inference); default a seeded standard-normal tensor.
        exporter: ``"torchscript"`` (default) or ``"dynamo"`` (needs ``onnxscript``).
        seed: seed of the random check input.

    Returns:
        Report dict: ``onnx_path``, ``opset``, ``input_shape``, ``output_shape``, ``n_classes``,
        ``dynamic_batch``, ``dynamic_hw``, ``check_input`` (``"random"`` or the image),
        ``max_abs_diff``, ``mean_abs_diff``, ``argmax_agreement`` (ORT vs torch float32 on CPU),
        ``dynamic_check`` (list of the same at other shapes: batch 2 when ``dynamic_batch``; a
        0.5x and a 1.5x size when ``dynamic_hw``), ``export_s``,
        ``size_mb``, ``metadata``.

    Raises:
        DriveSegmentError: missing checkpoint, bad size / opset / exporter, export failure.
    """
    import onnx  # optional heavy dependency (onnx extra)

    ckpt = Path(checkpoint_dir)
    if not ckpt.is_dir():
        raise DriveSegmentError(f"checkpoint directory {ckpt} not found")
    if exporter not in ("torchscript", "dynamo"):
        raise DriveSegmentError(f"unknown exporter {exporter!r}; use torchscript or dynamo")
    if not 11 <= int(opset) <= 23:
        raise DriveSegmentError(f"opset must be between 11 and 23, got {opset}")
    loaded = load_segmenter(ckpt, torch.device("cpu"))
    model, config = loaded[0], loaded[1]
    model = model.float().eval()
    meta = model_metadata(config, extra=loaded[2] if len(loaded) > 2 else None)  # + sliding_window settings
    h = int(height or meta["input_size"][0])
    w = int(width or meta["input_size"][1])
    if h <= 0 or w <= 0:
        raise DriveSegmentError(f"export size must be positive, got {h}x{w}")
    meta["input_size"] = [h, w]
    meta["dynamic_hw"] = bool(dynamic_hw)
    pre = Preprocessor((h, w), meta["mean"], meta["std"])

    if image is not None:
        x_np = pre(_load_image(image))
        check_input = str(image) if not isinstance(image, np.ndarray) else f"array{tuple(image.shape)}"
    else:
        x_np = np.random.default_rng(seed).standard_normal((1, 3, h, w)).astype(np.float32)
        check_input = "random"
    x = torch.from_numpy(x_np)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes: Dict[str, Dict[int, str]] = {}
    if dynamic_batch or dynamic_hw:
        for name in (INPUT_NAME, OUTPUT_NAME):
            axes: Dict[int, str] = {}
            if dynamic_batch:
                axes[0] = "batch"
            if dynamic_hw:
                axes.update({2: "height", 3: "width"})
            dynamic_axes[name] = axes

    t0 = time.perf_counter()
    with torch.inference_mode():
        ref = model(x).float().numpy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / tracer warnings
            kwargs: Dict[str, Any] = dict(
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=int(opset), do_constant_folding=True
            )
            if exporter == "dynamo":
                if dynamic_axes:
                    kwargs["dynamic_axes"] = dynamic_axes
                torch.onnx.export(model, (x,), str(out), dynamo=True, external_data=False, **kwargs)
            else:
                _register_symbolics()
                torch.onnx.export(model, (x,), str(out), dynamo=False, dynamic_axes=dynamic_axes or None, **kwargs)
    except DriveSegmentError:
        raise
    except Exception as exc:  # torch raises many exporter-specific error types
        raise DriveSegmentError(f"ONNX export of {ckpt} failed: {error_line(exc)}") from exc
    export_s = time.perf_counter() - t0

    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in encode_metadata(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "drive_segment_ros"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    digest = write_digest(out)  # <out>.sha256, verified when a backend loads the model (models/integrity.py)

    got = _ort_logits(out, x_np)
    report: Dict[str, Any] = {
        "onnx_path": str(out),
        "opset": int(opset),
        "input_shape": [1, 3, h, w],
        "output_shape": list(got.shape),
        "n_classes": int(meta["n_classes"]),
        "dynamic_batch": bool(dynamic_batch),
        "dynamic_hw": bool(dynamic_hw),
        "check_input": check_input,
        "export_s": round(export_s, 3),
        "size_mb": round(out.stat().st_size / 1e6, 3),
        "sha256": digest,
        "metadata": meta,
    }
    report.update(_compare(ref, got))
    if dynamic_hw or dynamic_batch:
        # a traced graph may silently keep example-input shapes (slices, resizes): check a
        # smaller AND a larger input, since a fixed crop can still "work" on a smaller one
        report["dynamic_check"] = []
        for k, scale in enumerate((0.5, 1.5) if dynamic_hw else (1.0,)):
            h2 = max(32, int(h * scale) // 32 * 32) if dynamic_hw else h
            w2 = max(32, int(w * scale) // 32 * 32) if dynamic_hw else w
            b2 = 2 if dynamic_batch else 1
            x2 = np.random.default_rng(seed + 1 + k).standard_normal((b2, 3, h2, w2)).astype(np.float32)
            with torch.inference_mode():
                ref2 = model(torch.from_numpy(x2)).float().numpy()
            try:
                got2 = _ort_logits(out, x2)
                if got2.shape != ref2.shape:
                    raise ValueError(f"output shape {got2.shape} instead of {ref2.shape}")
            except Exception as exc:  # onnxruntime errors or a wrong shape: the trace fixed a shape
                out.unlink()  # never leave a graph that silently mis-sizes behind
                digest_path(out).unlink(missing_ok=True)
                raise DriveSegmentError(
                    f"the exported graph does not run at {b2}x3x{h2}x{w2} (the trace fixed a shape; export without "
                    f"--dynamic-hw/--dynamic-batch): {error_line(exc)}"
                ) from exc
            report["dynamic_check"].append({"input_shape": [b2, 3, h2, w2], **_compare(ref2, got2)})
    LOG.info(
        "exported %s (%s, %.1f MB): ORT vs torch max |diff| %.3g, argmax agreement %.4f",
        out, "x".join(map(str, report["input_shape"])), report["size_mb"], report["max_abs_diff"], report["argmax_agreement"],
    )
    return report
