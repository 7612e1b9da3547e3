"""TensorRT engines from the exported ONNX models, written once for both TensorRT flavours.

* ``tensorrt`` (full TensorRT: Jetson, data-centre GPUs) is used when importable;
* ``tensorrt_rtx`` (``pip install tensorrt-rtx-cu13``) otherwise. It builds **ahead of time
  without a GPU** for a chosen compute capability (``sm=86`` ...), which is how engines are
  built and tested on CPU-only machines and CI; the GPU finishes optimisation just in time.
  Set ``MASKFR_TRT=tensorrt_rtx`` (or ``tensorrt``) to force one.

Networks are **strongly typed** whenever the ONNX carries its own precision (always on
TensorRT-RTX, which only does strong typing): FP16 engines come from the FP16 ONNX and INT8
engines from the QDQ ONNX (:mod:`maskfr.export.quantize`), so the engine computes exactly what
ORT checked on the CPU. Every engine gets a JSON sidecar (``model.engine.json``: flavour and
version, GPU or "AOT (no GPU)", compute capability, ONNX sha256, precision, profile) that
:func:`load_engine` checks before deserialising, because a plan built for another GPU or
TensorRT version fails late and cryptically otherwise.

Unverified (written from the TensorRT documentation, never run here: no full TensorRT and no
GPU on the development machine): the weakly-typed full-TensorRT path (precision flags and the
implicit INT8 entropy calibrator, deprecated since TensorRT 10.1 and removed in 11), DLA cores
and workspace limits on Jetson. Engines run in the runtime's :class:`maskfr.backends.TensorRTRunner`.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from maskfr.export.onnx_export import INPUT_NAME, INPUT_SIZE, check_student_io, read_metadata, sha256
from maskfr.fileio import write_then_rename, written_then_renamed

FLAVOURS = ("tensorrt", "tensorrt_rtx")
PRECISIONS = ("fp32", "fp16", "int8", "best")
AOT = "AOT (no GPU)"
#: What :func:`check_sidecar` compares; build_engine writes them all.
SIDECAR_KEYS = ("flavour", "tensorrt_version", "sm", "gpu")

_LOGGERS: dict[str, Any] = {}


# ---------------------------------------------------------------- TensorRT and GPU discovery


def import_trt(flavour: str | None = None) -> Any:
    """The TensorRT module: ``flavour``, else ``$MASKFR_TRT``, else full TensorRT, else TensorRT-RTX."""
    want = flavour or os.environ.get("MASKFR_TRT")
    names = [want] if want else list(FLAVOURS)
    for name in names:
        if name not in FLAVOURS:
            raise ValueError(f"unknown TensorRT flavour {name!r}; use one of {FLAVOURS}")
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"no TensorRT found (tried {', '.join(names)}): pip install tensorrt-rtx-cu13 "
                      "(or 'maskfr[trt]'), or use the TensorRT of your JetPack/container")


def flavour_of(trt: Any) -> str:
    return trt.__name__.split(".")[0]


def _logger(trt: Any) -> Any:
    """One logger per flavour: TensorRT keeps the first one registered and warns about others."""
    name = flavour_of(trt)
    if name not in _LOGGERS:
        _LOGGERS[name] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[name]


def current_gpu() -> dict[str, Any] | None:
    """Name and compute capability (e.g. 86) of GPU 0, or None without a usable GPU.

    cuda-python first (works on Jetson, which has no nvidia-smi query support), then nvidia-smi.
    """
    try:
        try:
            from cuda.bindings import driver as cu
        except ImportError:
            from cuda import cuda as cu  # cuda-python < 12.6
        if cu.cuInit(0)[0] == cu.CUresult.CUDA_SUCCESS:
            err, dev = cu.cuDeviceGet(0)
            if err == cu.CUresult.CUDA_SUCCESS:
                name = cu.cuDeviceGetName(64, dev)[1].split(b"\0")[0].decode()
                attr = cu.CUdevice_attribute
                major = cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)[1]
                minor = cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)[1]
                return {"name": name, "sm": major * 10 + minor}
    except Exception:  # noqa: BLE001 - no driver, no device or no cuda-python: try nvidia-smi
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, cap = out.splitlines()[0].rsplit(",", 1)
    major, _, minor = cap.strip().partition(".")
    return {"name": name.strip(), "sm": int(major) * 10 + int(minor or 0)}


def onnx_precision(path: str | os.PathLike) -> str:
    """What a strongly-typed build of this ONNX computes in: int8 (QDQ), fp16 or fp32."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer):
        return "fp16"
    return "fp32"


# ---------------------------------------------------------------- building


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(os.fspath(engine) + ".json")


def _rebuild_hint(side: dict[str, Any], engine: str | os.PathLike, sm: int | None) -> str:
    b = side.get("profile", {}).get("batch", [1, 8, 32])
    return (f"maskfr build-engine {side.get('onnx', 'model.onnx')} --precision {side.get('precision', 'fp16')} "
            f"--batch {b[0]}:{b[1]}:{b[2]}" + (f" --sm {sm}" if sm else "") + f" -o {engine}")


def _parse(trt: Any, builder: Any, onnx_path: str, strongly_typed: bool) -> tuple[Any, Any]:
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, _logger(trt))
    if not parser.parse_from_file(onnx_path):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors))
    return network, parser


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike | None = None,
                 precision: str | None = None, batch: Sequence[int] = (1, 8, 32), workspace_mb: int | None = None,
                 timing_cache: str | os.PathLike | None = None, dla_core: int | None = None, sm: int | None = None,
                 calib_faces: np.ndarray | None = None, flavour: str | None = None) -> dict[str, Any]:
    """Build a serialized engine (default ``<onnx stem>.<precision>.engine``) plus its JSON sidecar.

    ``precision`` (default: the ONNX's own) must match the ONNX on strongly-typed builds (fp32 ONNX -> fp32, FP16 ONNX -> fp16,
    QDQ ONNX -> int8); with full TensorRT and an FP32 ONNX, fp16/int8/best use the weakly-typed
    builder flags instead, int8 then needs ``calib_faces`` (unverified). ``sm`` (e.g. 86) selects
    the target GPU for TensorRT-RTX ahead-of-time builds; default: the GPU present. Returns the sidecar.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    lo, opt, hi = (int(b) for b in batch)
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {lo}:{opt}:{hi}")
    onnx_path = os.fspath(onnx_path)
    check_student_io(onnx_path)  # a non-ONNX file or another model: say so, not TensorRT's parse/build failure
    have = onnx_precision(onnx_path)
    precision = precision or have  # the default TensorRT-RTX can build from any of our ONNX files
    stem = Path(onnx_path).with_suffix("")
    engine_path = Path(engine_path or (f"{stem}.engine" if stem.suffix == f".{precision}" else f"{stem}.{precision}.engine"))
    if engine_path.exists() and engine_path.resolve() == Path(onnx_path).resolve():
        raise ValueError(f"the engine path {engine_path} is the ONNX model itself; choose another -o")
    if engine_path.is_dir():  # else found by the final rename, after the whole build
        raise ValueError(f"the engine path {engine_path} is a folder; give a file name with -o")
    if have == "int8":  # the --target cpu flavour (uint8, asymmetric) fails deep in TensorRT's ONNX parser
        from maskfr.export.quantize import qdq_summary
        q = qdq_summary(onnx_path)
        if q["uint8"] or q["nonzero_zero_point"]:
            raise ValueError(f"{onnx_path} is the CPU INT8 flavour (uint8 / asymmetric QDQ), which TensorRT rejects; "
                             "quantize for TensorRT instead: maskfr quantize MODEL.onnx --int8 --target tensorrt")
    trt = import_trt(flavour)
    name = flavour_of(trt)
    strongly_typed = name == "tensorrt_rtx" or have != "fp32" or precision == "fp32"
    if strongly_typed and precision != have and not (precision == "best" and have != "fp32"):
        fix = {"fp16": f"the FP16 ONNX (maskfr quantize {onnx_path} --fp16)",
               "int8": f"the INT8 QDQ ONNX (maskfr quantize {onnx_path} --int8)"}.get(precision, "an FP32 ONNX")
        raise ValueError(f"{onnx_path} is a {have} model and {name} builds strongly typed networks, so the "
                         f"precision comes from the ONNX: build {precision} from {fix}, or ask for {have}")
    gpu = current_gpu()
    if gpu is None and name == "tensorrt":
        raise RuntimeError("full TensorRT needs a GPU to build; install tensorrt-rtx-cu13 for ahead-of-time builds")
    if sm is None and gpu is None:
        raise ValueError("no GPU here: give the target compute capability for an ahead-of-time build, e.g. --sm 86")
    if sm is not None and name == "tensorrt" and gpu is not None and gpu["sm"] != sm:
        raise ValueError(f"full TensorRT builds for the GPU present (SM{gpu['sm']}), not SM{sm}; "
                         "use tensorrt_rtx for ahead-of-time builds")

    builder = trt.Builder(_logger(trt))
    network, _parser = _parse(trt, builder, onnx_path, strongly_typed)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shape = lambda n: (n, 3, INPUT_SIZE, INPUT_SIZE)  # noqa: E731
    profile.set_shape(INPUT_NAME, shape(lo), shape(opt), shape(hi))
    config.add_optimization_profile(profile)
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if name == "tensorrt_rtx" and sm is not None:
        cc = getattr(trt.ComputeCapability, f"SM{sm}", None)
        if cc is None:
            known = [k for k in trt.ComputeCapability.__members__ if k.startswith("SM")]
            raise ValueError(f"TensorRT-RTX {trt.__version__} cannot target SM{sm}; it knows {known}")
        config.num_compute_capabilities = 1
        config.set_compute_capability(cc, 0)
    if not strongly_typed:  # full TensorRT, FP32 ONNX: weakly-typed precision flags (unverified)
        if precision in ("fp16", "best"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision in ("int8", "best"):
            if calib_faces is None:
                raise ValueError("an implicit INT8 build needs calibration faces; prefer the QDQ ONNX instead")
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _entropy_calibrator(trt, calib_faces, engine_path.with_suffix(".calib"))
    if dla_core is not None:  # Jetson only (unverified): DLA runs FP16/INT8 layers, the rest falls back
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    # TensorRT-RTX picks tactics just in time on the user's GPU, so a build-time timing cache has no
    # use there (and serialising one without a GPU fails): only full TensorRT gets it.
    cache = _load_timing_cache(config, timing_cache) if name == "tensorrt" else None

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT ({name} {trt.__version__}) failed to build {onnx_path}; see the log above")
    build_s = time.perf_counter() - t0
    if timing_cache and cache is not None:
        write_then_rename(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    target_sm = sm if sm is not None else gpu["sm"]
    side = {
        "flavour": name, "tensorrt_version": trt.__version__,
        "gpu": gpu["name"] if gpu and sm in (None, gpu["sm"]) else AOT,
        "compute_capability": f"{target_sm // 10}.{target_sm % 10}", "sm": target_sm,
        "onnx": Path(onnx_path).name, "onnx_sha256": sha256(onnx_path), "precision": precision,
        "model_metadata": read_metadata(onnx_path),
        "onnx_precision": have, "strongly_typed": strongly_typed,
        "profile": {"input": INPUT_NAME, "batch": [lo, opt, hi], "shape": [3, INPUT_SIZE, INPUT_SIZE]},
        "layers": network.num_layers, "timing_cache": str(timing_cache) if cache is not None else None,
        "workspace_mb": workspace_mb, "dla_core": dla_core,
        "build_seconds": round(build_s, 2), "engine_bytes": int(plan.nbytes),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Written then renamed, the old sidecar removed first: load_engine trusts the pair, so a new engine must
    # never sit next to the sidecar of an earlier build, nor a half-written engine next to a valid sidecar.
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    side_file = sidecar_path(engine_path)
    with written_then_renamed(side_file) as tmp_side, written_then_renamed(engine_path) as tmp_engine:
        Path(tmp_engine).write_bytes(memoryview(plan))
        Path(tmp_side).write_text(json.dumps(side, indent=1))
        side_file.unlink(missing_ok=True)  # the engine is renamed first, then the sidecar
    side["engine"] = str(engine_path)
    return side


def _load_timing_cache(config: Any, path: str | os.PathLike | None) -> Any:
    """Reuse tactic timings across builds (minutes saved per Jetson build)."""
    if not path:
        return None
    blob = Path(path).read_bytes() if Path(path).exists() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _entropy_calibrator(trt: Any, faces: np.ndarray, cache_file: Path) -> Any:
    """Implicit-quantization calibrator for full TensorRT <= 10 (unverified: written from the
    ``IInt8EntropyCalibrator2`` Python API docs; TensorRT 11 removed it, QDQ ONNX is the way)."""
    from maskfr.align import to_input

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batch, self.pos = 16, 0
            self.buf = _DeviceBuffer(self.batch * 3 * INPUT_SIZE * INPUT_SIZE * 4)

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.pos + self.batch > len(faces):
                return None
            self.buf.upload(to_input(faces[self.pos:self.pos + self.batch]))
            self.pos += self.batch
            return [self.buf.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.exists() else None

        def write_calibration_cache(self, cache: Any) -> None:
            write_then_rename(cache_file, bytes(cache))

    return Calibrator()


# ---------------------------------------------------------------- loading and running


class EngineMismatch(RuntimeError):
    """The engine was built for another GPU, TensorRT or ONNX model; the message says how to rebuild."""


def check_sidecar(engine_path: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
                  gpu: dict[str, Any] | None = None, trt: Any = None) -> dict[str, Any]:
    """The sidecar, or :class:`EngineMismatch` naming every difference and the rebuild command."""
    side_file = sidecar_path(engine_path)
    if not side_file.exists():
        raise EngineMismatch(f"{engine_path}: no sidecar {side_file.name}; rebuild the engine with "
                             "'maskfr build-engine MODEL.onnx ...' so its target is recorded")
    try:
        side = json.loads(side_file.read_text())
        if not isinstance(side, dict) or not all(k in side for k in SIDECAR_KEYS):  # read below without checks
            raise ValueError(f"not an object with {', '.join(SIDECAR_KEYS)}")
    except ValueError as e:
        raise EngineMismatch(f"{engine_path}: its sidecar {side_file.name} is damaged ({e}); rebuild the engine "
                             "with 'maskfr build-engine MODEL.onnx ...'") from None
    problems = []
    if trt is not None and (flavour_of(trt), trt.__version__) != (side["flavour"], side["tensorrt_version"]):
        problems.append(f"built with {side['flavour']} {side['tensorrt_version']}, "
                        f"this runtime is {flavour_of(trt)} {trt.__version__}")
    if gpu is None:
        problems.append(f"built for SM{side['sm']} ({side['gpu']}), but no GPU is usable here")
    elif gpu["sm"] != side["sm"]:
        problems.append(f"built for SM{side['sm']} ({side['gpu']}), this GPU is {gpu['name']} (SM{gpu['sm']})")
    if onnx_path is not None and sha256(onnx_path) != side["onnx_sha256"]:
        problems.append(f"built from another ONNX (sha256 {side['onnx_sha256'][:12]}...), not {onnx_path}")
    if problems:
        hint = _rebuild_hint(side, engine_path, gpu["sm"] if gpu else None)
        raise EngineMismatch(f"refusing to load {engine_path}: " + "; ".join(problems) + f". Rebuild it here: {hint}")
    return side


def load_engine(engine_path: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
                flavour: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Deserialise an engine after checking its sidecar against this GPU, TensorRT and (optionally) ONNX."""
    trt = import_trt(flavour)
    side = check_sidecar(engine_path, onnx_path, current_gpu(), trt)
    runtime = trt.Runtime(_logger(trt))
    blob = Path(engine_path).read_bytes()
    if hasattr(runtime, "get_engine_validity"):  # TensorRT-RTX >= 1.1 checks the header itself
        validity, diag = runtime.get_engine_validity(blob)
        if validity == trt.EngineValidity.INVALID:
            raise EngineMismatch(f"{engine_path}: TensorRT reports the engine invalid here ({diag}); "
                                 f"rebuild: {_rebuild_hint(side, engine_path, side['sm'])}")
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise EngineMismatch(f"{engine_path}: deserialisation failed; rebuild: {_rebuild_hint(side, engine_path, None)}")
    return engine, side


class _DeviceBuffer:
    """A cudaMalloc'd buffer for the calibrator (cuda-python keeps the export free of torch and pycuda)."""

    def __init__(self, nbytes: int):
        from maskfr.backends import _ck, _cudart
        self.cudart, self._ck = _cudart(), _ck
        if self.cudart is None:
            raise ImportError("INT8 calibration on the GPU needs cuda-python: pip install 'maskfr[trt]'")
        self.ptr = int(_ck(self.cudart.cudaMalloc(nbytes)))

    def upload(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self._ck(self.cudart.cudaMemcpy(self.ptr, arr.ctypes.data, arr.nbytes,
                                        self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def __del__(self) -> None:
        if getattr(self, "ptr", 0):
            self.cudart.cudaFree(self.ptr)


__all__ = ["AOT", "EngineMismatch", "PRECISIONS", "build_engine", "check_sidecar", "current_gpu",
           "import_trt", "load_engine", "onnx_precision", "sidecar_path"]
