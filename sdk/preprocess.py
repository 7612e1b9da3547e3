"""Batched face preprocessing: BGR frames + frame->crop matrices -> normalised NCHW network input.

Backends, all giving the numbers of the canonical path in :mod:`maskfr.align`:

* ``"cuda"``: the ``maskfr._ext`` CUDA kernel, writing into a caller-given device array (any
  object with ``__cuda_array_interface__``: CuPy, PyTorch, Numba) on the caller's stream;
* ``"cpp"``: the fused multithreaded CPU kernel of ``maskfr._ext`` (one pass, no crop images);
* ``"numpy"``: ``warp_face`` per face, BGR->RGB, ``to_input`` -- the reference itself.

``backend="auto"`` picks ``"cuda"`` when ``out`` is a device array, else ``"cpp"`` when the
extension is built, else ``"numpy"``. A backend that was asked for by name and is missing raises:
results never silently come from another path.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .align import to_input, warp_face

try:
    from . import _ext
except ImportError as _exc:  # pure-Python install (no compiler): the numpy path still works
    _ext = None
    _EXT_IMPORT_ERROR: ImportError | None = _exc
else:
    _EXT_IMPORT_ERROR = None

__all__ = ["available_backends", "preprocess"]

BACKENDS = ("cuda", "cpp", "numpy")
log = logging.getLogger(__name__)
_announced: set[str] = set()


@functools.lru_cache(maxsize=None)
def _cuda_ok() -> bool:
    return _ext is not None and bool(_ext.cuda_available())


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first."""
    names = ["cuda"] if _cuda_ok() else []
    if _ext is not None:
        names.append("cpp")
    return names + ["numpy"]


def preprocess(
    frames: Sequence[Any],
    frame_index: Any,
    matrices: Any,
    size: int = 112,
    dtype: Any = np.float32,
    backend: str = "auto",
    out: Any = None,
    stream: int = 0,
) -> Any:
    """Crop, convert and normalise N faces into an (N, 3, size, size) RGB array.

    frames: uint8 BGR (H, W, 3) frames (numpy; for ``"cuda"`` device arrays work too).
    frame_index: (N,) int, the frame of each face. matrices: (N, 2, 3) frame->crop matrices
    (``align.similarity_transform``). dtype: float32 or float16. out: optional destination
    (numpy for CPU backends, a device array for ``"cuda"``), returned when given.
    stream: CUDA stream handle (int) for ``"cuda"``; the call is asynchronous on it, after the work
    queued on the streams ``out`` and the device frames name (``__cuda_array_interface__["stream"]``).
    It runs on out's GPU; device frames must be on that GPU too.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {dtype}")
    name = _choose(backend, out)
    if name not in _announced:
        _announced.add(name)
        log.info("maskfr.preprocess backend: %s", name)
    if name == "cuda":
        return _preprocess_cuda(frames, frame_index, matrices, size, dtype, out, stream)
    if name == "cpp":
        return _ext.preprocess(list(frames), frame_index, matrices, size, dtype, out)
    return _preprocess_numpy(frames, frame_index, matrices, size, dtype, out)


def _choose(backend: str, out: Any) -> str:
    if backend == "auto":
        if out is not None and hasattr(out, "__cuda_array_interface__"):
            backend = "cuda"
        else:
            return "cpp" if _ext is not None else "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {('auto',) + BACKENDS}")
    if backend not in available_backends():
        why = f" (maskfr._ext: {_EXT_IMPORT_ERROR})" if _ext is None else ""
        raise RuntimeError(f"preprocess backend {backend!r} is not available; available: {available_backends()}{why}")
    return backend


def _preprocess_numpy(frames: Sequence[np.ndarray], frame_index: Any, matrices: Any, size: int,
                      dtype: np.dtype, out: np.ndarray | None) -> np.ndarray:
    """The reference: OpenCV warp per face, then BGR->RGB and ``to_input``."""
    idx = np.asarray(frame_index)
    mats = np.asarray(matrices, np.float64)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError("frame_index must be a 1-D integer array")
    if mats.shape != (len(idx), 2, 3):
        raise ValueError(f"matrices must have shape ({len(idx)}, 2, 3), got {mats.shape}")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(frames)):
        raise ValueError(f"frame_index out of range for {len(frames)} frames")
    # Same checks as maskfr._ext: cv2 would warp float, grey or 4-channel frames and NaN matrices
    # into silently wrong crops (or fail with broadcast / OpenCV assertion errors).
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if not np.isfinite(mats).all():
        raise ValueError("matrices have a non-finite entry")
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray):
            raise ValueError(f"frames[{i}] must be a numpy array")
        if f.dtype != np.uint8:
            raise ValueError(f"frames[{i}] must be uint8, got {f.dtype}")
        if f.ndim != 3 or f.shape[2] != 3 or f.shape[0] < 1 or f.shape[1] < 1:
            raise ValueError(f"frames[{i}] must have shape (H, W, 3) with H, W >= 1, got {f.shape}")
    crops = np.empty((len(idx), size, size, 3), np.uint8)
    for i, (f, m) in enumerate(zip(idx, mats)):
        crops[i] = warp_face(frames[f], m, size)[..., ::-1]
    result = to_input(crops).astype(dtype, copy=False)
    if out is None:
        return result
    if not isinstance(out, np.ndarray) or out.shape != result.shape or out.dtype != dtype:
        raise ValueError(f"out must be a numpy {dtype} array of shape {result.shape}")
    out[...] = result
    return out


def _cuda_interface(arr: Any, what: str) -> dict:
    try:
        iface = arr.__cuda_array_interface__
    except AttributeError:
        raise ValueError(f"{what} must be a device array (__cuda_array_interface__) for the cuda backend") from None
    if iface.get("mask") is not None:  # the kernel reads and writes every element
        raise ValueError(f"{what}: masked device arrays are not supported")
    return iface


def _cuda_args(frames: Sequence[Any], n: int, size: int, dtype: np.dtype, out: Any) -> tuple[list[Any], int, list[int]]:
    """Checks ``out`` and device frames (CUDA Array Interface v3) for ``_ext.preprocess_cuda`` and returns its
    frames (host arrays, or (ptr, height, width, pitch) tuples), out's pointer and the streams to wait on."""
    if out is None:
        raise ValueError("the cuda backend writes into a caller-given device array: pass out=")
    iface = _cuda_interface(out, "out")
    if tuple(iface["shape"]) != (n, 3, size, size) or np.dtype(iface["typestr"]) != dtype:
        raise ValueError(f"out must be a {dtype} device array of shape {(n, 3, size, size)}, "
                         f"got {np.dtype(iface['typestr'])} {tuple(iface['shape'])}")
    strides = iface.get("strides")
    c_order = tuple(dtype.itemsize * k for k in (3 * size * size, size * size, size, 1))
    if strides is not None and tuple(strides) != c_order:
        raise ValueError("out must be C-contiguous")
    out_ptr, readonly = iface["data"]
    if readonly:
        raise ValueError("out is read-only")
    # v3 `stream`: work on the buffer may still be queued there (None or absent: nothing to wait for)
    producers = [iface["stream"]] if iface.get("stream") is not None else []
    if all(isinstance(f, np.ndarray) for f in frames):
        return list(frames), out_ptr, producers
    src = []
    for i, f in enumerate(frames):
        fi = _cuda_interface(f, f"frames[{i}]")
        shape, strides = tuple(fi["shape"]), fi.get("strides")
        if np.dtype(fi["typestr"]) != np.uint8 or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"frames[{i}] must be a uint8 (H, W, 3) device array")
        if strides is not None and tuple(strides[1:]) != (3, 1):
            raise ValueError(f"frames[{i}] must have contiguous rows of pixels (strides (pitch, 3, 1))")
        pitch = strides[0] if strides is not None else 3 * shape[1]
        src.append((fi["data"][0], shape[0], shape[1], pitch))
        if fi.get("stream") is not None and fi["stream"] not in producers:
            producers.append(fi["stream"])
    return src, out_ptr, producers


def _preprocess_cuda(frames: Sequence[Any], frame_index: Any, matrices: Any, size: int,
                     dtype: np.dtype, out: Any, stream: int) -> Any:
    """Device output; frames may be host numpy arrays (staged through pinned memory) or device arrays."""
    src, out_ptr, producers = _cuda_args(frames, len(np.asarray(frame_index)), size, dtype, out)
    _ext.preprocess_cuda(src, frame_index, matrices, out_ptr, size, dtype, stream, producers)
    return out
