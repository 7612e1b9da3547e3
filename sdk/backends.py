"""Inference backends for the embedding model, all behind one small runner interface.

A runner has ``name``, ``input_shape`` (N, 3, H, W) with N the largest batch it takes at once
(``-1``: any), ``metadata`` (the model's string properties) and ``infer(batch) -> (N, D)``
float32. ``load_runner(model, backend)`` picks one:

* ``"cpu"``: ONNX Runtime, CPU execution provider;
* ``"cuda"``: ONNX Runtime, CUDA execution provider;
* ``"tensorrt"``: a serialized TensorRT(-RTX) engine run with NVIDIA ``cuda-python``.

``backend="auto"`` uses ``"tensorrt"`` for an engine file, else ``"cuda"`` when ONNX Runtime has
the CUDA provider, else ``"cpu"``, and logs its choice. A backend asked for by name that is not
available raises :class:`BackendUnavailable`: results never silently come from another path.
"""
from __future__ import annotations

import ctypes
import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)
BACKENDS = ("cpu", "cuda", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
META_PREFIX = "maskfr."  # our keys in ONNX metadata_props, so they never clash with other tools'


def model_metadata(props: dict[str, str]) -> dict[str, str]:
    """A model's maskfr metadata with the ``maskfr.`` prefix stripped (unprefixed keys kept, prefixed ones win)."""
    out = {k: v for k, v in props.items() if not k.startswith(META_PREFIX)}
    out.update({k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)})
    return out


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run in this process (missing package, GPU or file)."""


class ModelShapeError(ValueError):
    """The model or engine does not take (N, 3, 112, 112) faces or return (N, D) embeddings."""


class Runner(Protocol):
    name: str
    input_shape: tuple[int, int, int, int]
    metadata: dict[str, str]

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


def _check_io(where: str, in_shape: tuple, out_shape: tuple, size: int) -> None:
    """Input must be (N, 3, size, size) and output (N, D); symbolic/-1 dims count as free."""
    want = (3, size, size)
    if len(in_shape) != 4 or any(isinstance(d, int) and d > 0 and d != w for d, w in zip(in_shape[1:], want)):
        raise ModelShapeError(f"{where}: input shape {tuple(in_shape)} is not (N, 3, {size}, {size})")
    if len(out_shape) != 2:
        raise ModelShapeError(f"{where}: output shape {tuple(out_shape)} is not (N, embedding_size)")


def session_options(threads: int | None = None, spin: bool = True) -> Any:
    """ONNX Runtime options shared by every session maskfr opens: ``threads`` intra-op threads (default: one
    per core); ``spin=False`` stops idle worker threads from spinning, so sessions timed in turn don't slow
    each other."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first."""
    names = []
    if _tensorrt() is not None and _cudart() is not None:
        names.append("tensorrt")
    try:
        import onnxruntime as ort
    except ImportError:
        return names
    if "CUDAExecutionProvider" in ort.get_available_providers():
        names.append("cuda")
    return names + ["cpu"]


def load_runner(model: str | Path, backend: str = "auto", size: int = 112, threads: int | None = None) -> Runner:
    """Open ``model`` (an .onnx file or a TensorRT engine) on ``backend``; ``threads``: ONNX Runtime's intra-op
    threads (default: one per core)."""
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if backend == "auto":
        backend = "tensorrt" if is_engine else ("cuda" if "cuda" in available_backends() else "cpu")
        log.info("maskfr backend: %s for %s", backend, path.name)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {('auto',) + BACKENDS}")
    if backend == "tensorrt":
        if not is_engine:
            raise BackendUnavailable(f"backend 'tensorrt' needs an engine ({'/'.join(ENGINE_SUFFIXES)}), got {path.name}; "
                                     "build one with `maskfr build-engine MODEL.onnx`")
        return TensorRTRunner(path, size=size)
    if is_engine:
        raise ValueError(f"{path.name} is a TensorRT engine; use backend='tensorrt' or an .onnx model")
    return OnnxRunner(path, cuda=backend == "cuda", size=size, threads=threads)


class OnnxRunner:
    """ONNX Runtime session; ``session.run`` is thread-safe, so no lock is needed."""

    def __init__(self, path: str | Path, cuda: bool = False, size: int = 112, threads: int | None = None):
        import onnxruntime as ort
        providers = ["CPUExecutionProvider"]
        if cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("backend 'cuda' needs onnxruntime-gpu with a CUDA device; "
                                         f"available providers: {ort.get_available_providers()}")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"cannot load ONNX model {path}: {exc}") from None
        self.name = "cuda" if cuda else "cpu"
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        _check_io(str(path), tuple(inp.shape), tuple(out.shape), size)
        self._input, self._output = inp.name, out.name
        n = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else -1
        self.input_shape = (n, 3, size, size)
        self.metadata = model_metadata(self.session.get_modelmeta().custom_metadata_map)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, np.float32)
        if self.input_shape[0] > 0:  # fixed-batch model: pad the last chunk
            outs = []
            for i in range(0, len(x), self.input_shape[0]):
                part = x[i:i + self.input_shape[0]]
                pad = np.zeros((self.input_shape[0] - len(part),) + x.shape[1:], np.float32)
                outs.append(self.session.run([self._output], {self._input: np.concatenate([part, pad])})[0][:len(part)])
            return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
        return np.asarray(self.session.run([self._output], {self._input: x})[0], np.float32)


def _tensorrt() -> Any:
    for name in ("tensorrt_rtx", "tensorrt"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


def _ck(result: Any) -> Any:
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def engine_sidecar(path: str | Path) -> dict:
    """The JSON next to an engine: ``ENGINE.json`` as ``maskfr build-engine`` writes it, else a hand-made
    ``STEM.json`` ({} if there is none)."""
    path = Path(path)
    for cand in (Path(str(path) + ".json"), path.with_suffix(".json")):
        if cand.is_file():
            try:
                side = json.loads(cand.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"engine sidecar {cand} is not valid JSON: {exc}") from None
            if not isinstance(side, dict):  # every reader calls .get on it
                raise ValueError(f"engine sidecar {cand} is not a JSON object; rebuild the engine with "
                                 "`maskfr build-engine MODEL.onnx`")
            return side
    return {}


class TensorRTRunner:
    """A TensorRT(-RTX) engine with pinned host buffers, async copies on one stream and optional CUDA graphs.

    UNVERIFIED: written from the TensorRT / cuda-python documentation; it has never run in this
    repository's CI (no GPU, no TensorRT). The shape checks before deserialisation are tested.

    Buffers are sized for the engine's largest batch (its optimisation profile maximum) once.
    ``infer`` copies host -> device, runs, copies back, all on ``self.stream``; calls are
    serialised by a lock since they share the buffers. ``infer_device`` takes caller-owned
    device pointers (pycuda ``int(gpuarray.gpudata)``, CuPy ``arr.data.ptr``) and a stream and
    does no copies. ``cuda_graph=True`` captures one graph per batch size after a warm-up run
    (TensorRT must have run a shape once before it can be captured).
    """

    def __init__(self, path: str | Path, size: int = 112, cuda_graph: bool = False):
        path = Path(path)
        side = engine_sidecar(path)
        # cheap checks that need neither GPU nor TensorRT: build-engine's profile, or a hand-made input_shape
        shape = side.get("input_shape") or [-1] + side.get("profile", {}).get("shape", [])
        if len(shape) == 4:
            _check_io(f"engine {path.name} (sidecar)", tuple(shape), tuple(side.get("output_shape", (-1, -1))), size)
        trt, cudart = _tensorrt(), _cudart()
        if trt is None or cudart is None:
            raise BackendUnavailable("backend 'tensorrt' needs the tensorrt(-rtx) and cuda-python packages "
                                     "(pip install 'maskfr[trt]') and an NVIDIA GPU")
        if "sm" in side:  # another GPU or TensorRT: a clear refusal with the rebuild command, not a failed deserialise
            from maskfr.export.engine import check_sidecar, current_gpu
            check_sidecar(path, gpu=current_gpu(), trt=trt)
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ValueError(f"TensorRT could not deserialize {path} (wrong TensorRT version or GPU, or damaged)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelShapeError(f"engine {path.name}: expected one input and one output, got {inputs} / {outputs}")
        self._in, self._out = inputs[0], outputs[0]
        in_shape = tuple(self.engine.get_tensor_shape(self._in))
        out_shape = tuple(self.engine.get_tensor_shape(self._out))
        _check_io(f"engine {path.name}", in_shape, out_shape, size)
        max_batch = in_shape[0] if in_shape[0] > 0 else self.engine.get_tensor_profile_shape(self._in, 0)[2][0]
        self.dim = int(out_shape[1]) if out_shape[1] > 0 else int(side.get("embedding_size", 128))
        self.input_shape = (int(max_batch), 3, size, size)
        self.name = "tensorrt"
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in side.items()}
        self.metadata.update(side.get("model_metadata", {}))  # the source ONNX's contract (thresholds, version)
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._out)))
        self.context = self.engine.create_execution_context()
        self.stream = _ck(cudart.cudaStreamCreate())
        n_in = int(np.prod(self.input_shape)) * self._in_dtype.itemsize
        n_out = int(max_batch) * self.dim * self._out_dtype.itemsize
        self._d_in, self._d_out = _ck(cudart.cudaMalloc(n_in)), _ck(cudart.cudaMalloc(n_out))
        self._h_in = self._pinned(n_in, self._in_dtype).reshape(self.input_shape)
        self._h_out = self._pinned(n_out, self._out_dtype).reshape(int(max_batch), self.dim)
        self._graphs: dict[int, Any] = {} if cuda_graph else None
        self._lock = threading.Lock()

    def _pinned(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        ptr = _ck(self._cudart.cudaMallocHost(nbytes))
        self._host_ptrs = getattr(self, "_host_ptrs", []) + [ptr]
        return np.frombuffer((ctypes.c_byte * nbytes).from_address(int(ptr)), dtype)

    def _enqueue(self, n: int, d_in: int, d_out: int, stream: Any) -> None:
        self.context.set_input_shape(self._in, (n, *self.input_shape[1:]))
        self.context.set_tensor_address(self._in, int(d_in))
        self.context.set_tensor_address(self._out, int(d_out))
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def infer_device(self, d_in: int, d_out: int, n: int, stream: int = 0) -> None:
        """Run on caller-owned device buffers (input (n,3,H,W), output (n,D) in the engine's dtypes); async on stream."""
        if not 0 < n <= self.input_shape[0]:
            raise ValueError(f"batch {n} outside the engine's range 1..{self.input_shape[0]}")
        with self._lock:
            self._enqueue(n, d_in, d_out, stream)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        cudart, h2d = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h, cap = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.input_shape[0]
        outs = []
        with self._lock:
            for i in range(0, len(batch), cap):
                part = batch[i:i + cap]
                n = len(part)
                self._h_in[:n] = part
                nb_in, nb_out = self._h_in[:n].nbytes, self._h_out[:n].nbytes
                _ck(cudart.cudaMemcpyAsync(self._d_in, self._h_in.ctypes.data, nb_in, h2d, self.stream))
                self._run(n)
                _ck(cudart.cudaMemcpyAsync(self._h_out.ctypes.data, self._d_out, nb_out, d2h, self.stream))
                _ck(cudart.cudaStreamSynchronize(self.stream))
                outs.append(self._h_out[:n].astype(np.float32))
        return np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)

    def _run(self, n: int) -> None:
        if self._graphs is None:
            return self._enqueue(n, self._d_in, self._d_out, self.stream)
        cudart = self._cudart
        if n not in self._graphs:
            self._enqueue(n, self._d_in, self._d_out, self.stream)  # warm-up: TensorRT settles shapes first
            _ck(cudart.cudaStreamSynchronize(self.stream))
            _ck(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self._enqueue(n, self._d_in, self._d_out, self.stream)
            graph = _ck(cudart.cudaStreamEndCapture(self.stream))
            self._graphs[n] = _ck(cudart.cudaGraphInstantiate(graph, 0))
        _ck(cudart.cudaGraphLaunch(self._graphs[n], self.stream))

    def __del__(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None or not hasattr(self, "_d_out"):
            return
        for g in (self._graphs or {}).values():
            cudart.cudaGraphExecDestroy(g)
        for p in getattr(self, "_host_ptrs", []):
            cudart.cudaFreeHost(p)
        cudart.cudaFree(self._d_in)
        cudart.cudaFree(self._d_out)
        cudart.cudaStreamDestroy(self.stream)
