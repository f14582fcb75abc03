"""TensorRT engine build from an exported ONNX model, with a provenance sidecar and staleness check.

A TensorRT engine is only valid for the GPU model (compute capability) and the TensorRT version
that built it (TensorRT Developer Guide, "Engine compatibility"), and of course for the ONNX
model it came from. :func:`build_engine` therefore writes ``<engine>.json`` beside the engine
with the GPU name, compute capability, TensorRT version and the ONNX file's sha256, plus the
model metadata copied from the ONNX ``metadata_props`` (so the TensorRT backend needs no other
file); :func:`engine_is_stale` compares that record with the current machine, and
:func:`ensure_engine` rebuilds when anything changed.

Build (TensorRT >= 8.6 Python API, ``tensorrt.Builder`` / ``OnnxParser`` / ``IBuilderConfig``):
explicit-batch network, workspace memory-pool limit, optional FP16, a persistent timing
cache (load before, save after: rebuilds after an ONNX change take seconds instead of minutes),
and an optimization profile for every dynamic input dimension.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from drive_segment_ros.inference.backends import TENSORRT_MISSING, decode_metadata, import_tensorrt
from drive_segment_ros.models.integrity import file_sha256
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
Shape = Tuple[int, int, int, int]

#: Fields of the sidecar that must match the current machine for an engine to be reused.
ENVIRONMENT_KEYS = ("gpu_name", "compute_capability", "tensorrt_version")


def sidecar_path(engine_path: PathLike) -> Path:
    """``<engine>.json`` beside the engine file."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def current_environment(device: int = 0) -> Dict[str, Optional[str]]:
    """What an engine depends on, for this machine.

    Returns:
        ``{"gpu_name", "compute_capability" ("major.minor"), "tensorrt_version"}``; a value is
        ``None`` when it cannot be known (no CUDA GPU visible to torch, ``tensorrt`` not installed).
    """
    env: Dict[str, Optional[str]] = {k: None for k in ENVIRONMENT_KEYS}
    try:
        import torch  # optional heavy dependency (CUDA query)

        if torch.cuda.is_available():
            env["gpu_name"] = torch.cuda.get_device_name(device)
            major, minor = torch.cuda.get_device_capability(device)
            env["compute_capability"] = f"{major}.{minor}"
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    try:
        import tensorrt as trt  # type: ignore[import-not-found]  # optional heavy dependency

        env["tensorrt_version"] = str(trt.__version__)
    except ImportError:
        pass
    return env


def stale_reasons(engine_path: PathLike, onnx_path: PathLike, env: Optional[Dict[str, Optional[str]]] = None) -> List[str]:
    """Why the engine must be rebuilt (empty list: it is up to date).

    Checks, in order: engine file present, sidecar present and readable, ONNX sha256 equal to
    the one recorded, and GPU name / compute capability / TensorRT version equal to ``env``
    (default :func:`current_environment`; an unknown current value counts as a mismatch).

    Raises:
        DriveSegmentError: the ONNX file does not exist.
    """
    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    if not onnx_path.is_file():
        raise DriveSegmentError(f"ONNX model {onnx_path} not found")
    if not engine_path.is_file():
        return [f"engine {engine_path} does not exist"]
    side = sidecar_path(engine_path)
    try:
        info = json.loads(side.read_text())
    except FileNotFoundError:
        return [f"sidecar {side.name} is missing"]
    except (OSError, json.JSONDecodeError) as exc:
        return [f"sidecar {side.name} is unreadable ({exc})"]
    reasons = []
    sha = file_sha256(onnx_path)
    if info.get("onnx_sha256") != sha:
        reasons.append(f"ONNX changed (sha256 {str(info.get('onnx_sha256'))[:12]} -> {sha[:12]})")
    env = current_environment() if env is None else env
    for key in ENVIRONMENT_KEYS:
        if info.get(key) != env.get(key) or env.get(key) is None:
            reasons.append(f"{key} changed ({info.get(key)!r} -> {env.get(key)!r})")
    return reasons


def engine_is_stale(engine_path: PathLike, onnx_path: PathLike, env: Optional[Dict[str, Optional[str]]] = None) -> bool:
    """True when the engine is missing or was built from another ONNX, GPU or TensorRT version.

    See :func:`stale_reasons` (``env`` defaults to :func:`current_environment`).
    """
    reasons = stale_reasons(engine_path, onnx_path, env)
    if reasons:
        LOG.info("engine %s is stale: %s", engine_path, "; ".join(reasons))
    return bool(reasons)


def write_sidecar(engine_path: PathLike, onnx_path: PathLike, env: Dict[str, Optional[str]], **fields: Any) -> Dict[str, Any]:
    """Write ``<engine>.json``: ``env`` (GPU name, compute capability, TensorRT version), the
    ONNX path and sha256, a UTC build time and ``fields`` (fp16, shapes, metadata, ...).

    Returns the record written.
    """
    record: Dict[str, Any] = {k: env.get(k) for k in ENVIRONMENT_KEYS}
    record.update(
        {
            "onnx_path": str(Path(onnx_path).resolve()),
            "onnx_sha256": file_sha256(onnx_path),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    record.update(fields)
    if Path(engine_path).is_file():
        record["engine_sha256"] = file_sha256(engine_path)  # verified by TensorRTBackend (models/integrity.py)
    sidecar_path(engine_path).write_text(json.dumps(record, indent=2))
    return record


def read_onnx_metadata(onnx_path: PathLike) -> Dict[str, str]:
    """``metadata_props`` of an ONNX model as ``{key: value}`` strings (weights not loaded)."""
    import onnx  # optional heavy dependency (onnx extra)

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError variants
        raise DriveSegmentError(f"cannot read ONNX model {onnx_path}: {exc}") from exc
    return {p.key: p.value for p in model.metadata_props}


def default_profile(input_shape: Sequence[Any], input_size: Sequence[int], max_batch: int = 4) -> Tuple[Shape, Shape, Shape]:
    """(min, opt, max) shapes for an input with dynamic dims (``-1`` or names).

    Batch: 1 / 1 / ``max_batch``. Height, width: half / 1x / 2x the metadata ``input_size``
    (rounded to multiples of 32, the coarsest backbone stride). Static dims are kept.
    """
    def dyn(v: Any) -> bool:
        return not isinstance(v, int) or v < 0

    h, w = int(input_size[0]), int(input_size[1])
    lo = [1, 3, max(32, (h // 2) // 32 * 32), max(32, (w // 2) // 32 * 32)]
    opt = [1, 3, h, w]
    hi = [max_batch, 3, 2 * h, 2 * w]
    shapes = []
    for ref in (lo, opt, hi):
        shapes.append(tuple(int(r) if dyn(v) else int(v) for v, r in zip(input_shape, ref)))
    return shapes[0], shapes[1], shapes[2]


def build_engine(
    onnx_path: PathLike,
    engine_path: Optional[PathLike] = None,
    fp16: bool = True,
    workspace_gb: float = 4.0,
    timing_cache: Optional[PathLike] = None,
    profile: Optional[Tuple[Shape, Shape, Shape]] = None,
    max_batch: int = 4,
) -> Dict[str, Any]:
    """Build and serialize a TensorRT engine from an ONNX model written by ``export_onnx``.

    Args:
        onnx_path: the ``.onnx`` (must carry drive_segment ``metadata_props``).
        engine_path: output (default: ``onnx_path`` with suffix ``.engine``).
        fp16: allow FP16 kernels (``BuilderFlag.FP16``) when the GPU has fast FP16.
        workspace_gb: ``MemoryPoolType.WORKSPACE`` limit in GiB.
        timing_cache: file to load the timing cache from (if it exists) and save it to
            (default ``<engine>.timing.cache``).
        profile: (min, opt, max) NCHW shapes for dynamic inputs (default :func:`default_profile`).
        max_batch: largest batch of the default profile.

    Returns:
        The sidecar record written to ``<engine>.json`` (GPU, compute capability, TensorRT
        version, ONNX sha256, shapes, build seconds, metadata).

    Raises:
        DriveSegmentError: no ``tensorrt`` / CUDA GPU, unreadable ONNX, parser or build failure.
    """
    trt = import_tensorrt()
    env = current_environment()
    if env["gpu_name"] is None:
        raise DriveSegmentError(TENSORRT_MISSING)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise DriveSegmentError(f"ONNX model {onnx_path} not found")
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    cache_path = Path(timing_cache) if timing_cache else engine_path.with_name(engine_path.name + ".timing.cache")
    if workspace_gb <= 0:
        raise DriveSegmentError(f"workspace_gb must be positive, got {workspace_gb}")
    props = read_onnx_metadata(onnx_path)
    meta = decode_metadata(props, f"ONNX model {onnx_path}")

    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DriveSegmentError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        # platform_has_fast_fp16 is deprecated since TensorRT 10.5 (removed later): fall back to
        # the compute capability (native FP16 arithmetic from sm_53 / sm_60 on).
        fast = getattr(builder, "platform_has_fast_fp16", None)
        if fast is None:
            fast = tuple(int(v) for v in str(env["compute_capability"]).split(".")) >= (5, 3)
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if fast and flag is not None:
            config.set_flag(flag)
        else:
            LOG.warning("FP16 unavailable (GPU without fast FP16 or TensorRT without BuilderFlag.FP16); building FP32")
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    inp = network.get_input(0)
    in_shape = [int(v) for v in inp.shape]
    shapes: Dict[str, Any] = {"input": in_shape}
    if any(v < 0 for v in in_shape):
        lo, opt, hi = profile or default_profile(in_shape, meta["input_size"], max_batch)
        prof = builder.create_optimization_profile()
        prof.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(prof)
        shapes.update({"min": list(lo), "opt": list(opt), "max": list(hi)})
    LOG.info("building TensorRT engine from %s (fp16=%s, workspace %.1f GiB, shapes %s)", onnx_path, fp16, workspace_gb, shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DriveSegmentError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    record = write_sidecar(
        engine_path,
        onnx_path,
        env,
        fp16=bool(fp16),
        workspace_gb=float(workspace_gb),
        shapes=shapes,
        build_s=round(time.perf_counter() - t0, 3),
        timing_cache=str(cache_path),
        metadata=props,
    )
    LOG.info("wrote %s (%.1f MB) in %.1f s", engine_path, engine_path.stat().st_size / 1e6, record["build_s"])
    return record


def ensure_engine(onnx_path: PathLike, engine_path: Optional[PathLike] = None, **build_opts: Any) -> Path:
    """Return an up-to-date engine for ``onnx_path``, building it when :func:`engine_is_stale`.

    ``build_opts`` go to :func:`build_engine`. Raises what :func:`build_engine` raises.
    """
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    if engine_is_stale(engine_path, onnx_path):
        build_engine(onnx_path, engine_path, **build_opts)
    return engine_path
