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
    cudart = _cudart()
    # tensorrt-rtx and cuda-python install (and import) on machines without a GPU, where no engine can run
    if _tensorrt() is not None and cudart is not None:
        err, n_gpus = cudart.cudaGetDeviceCount()
        if int(err) == 0 and n_gpus > 0:
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


def _tensorrt(flavour: str | None = None) -> Any:
    """TensorRT's Python module: ``flavour`` (the one an engine was built with, from its sidecar) first, where both
    are installed, else TensorRT-RTX or full TensorRT."""
    first = [flavour] if isinstance(flavour, str) and flavour in ("tensorrt", "tensorrt_rtx") else []
    for name in dict.fromkeys(first + ["tensorrt_rtx", "tensorrt"]):
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


def _batch_range(engine: Any, name: str) -> tuple[int, int]:
    """Smallest and largest batch ``engine`` takes on input ``name``: its fixed batch, else optimisation
    profile 0's range. ``set_input_shape`` refuses a batch outside it (it returns False and
    ``execute_async_v3`` then fails), so :meth:`TensorRTRunner.infer` pads and splits to stay inside."""
    fixed = int(engine.get_tensor_shape(name)[0])
    if fixed > 0:
        return fixed, fixed
    lo, _opt, hi = engine.get_tensor_profile_shape(name, 0)
    return int(lo[0]), int(hi[0])


class TensorRTRunner:
    """A TensorRT(-RTX) engine with pinned host buffers, async copies on one stream and optional CUDA graphs.

    UNVERIFIED on a GPU: written from the TensorRT / cuda-python documentation; the shape checks
    before deserialisation, the batching and the cuda-python call signatures are tested on the CPU
    with stand-ins (tests/test_runtime.py).

    Buffers are sized for the engine's largest batch (its optimisation profile maximum) once.
    ``infer`` copies host -> device, runs, copies back, all on ``self.stream``, splitting batches
    above the profile maximum and zero-padding those below its minimum; calls are serialised by a
    lock since they share the buffers. ``infer_device`` takes caller-owned device pointers (pycuda
    ``int(gpuarray.gpudata)``, CuPy ``arr.data.ptr``) and a stream and does no copies.
    ``cuda_graph=True``: TensorRT-RTX's own CUDA graphs (``IRuntimeConfig.cuda_graph_strategy``);
    on full TensorRT, one graph captured by hand after a warm-up run for the profile's largest batch, which
    ``infer`` pads every chunk to (graphs pay where batches are full: leave them off for a few faces at a
    time), and re-captured when ``infer_device`` has run another batch size on the context since.
    """

    # What __del__ frees, set as soon as each is got so that a half-finished __init__ frees no more and no less.
    _cudart: Any = None
    stream: Any = None
    _d_in = _d_out = 0
    _host_ptrs: tuple[int, ...] = ()
    _graph: Any = None  # full TensorRT, cuda_graph=True: the cudaGraphExec_t for batch self._graph_n
    _device_done: Any = None  # event recorded after each infer_device enqueue, on the caller's stream

    def __init__(self, path: str | Path, size: int = 112, cuda_graph: bool = False):
        path = Path(path)
        side = engine_sidecar(path)
        # cheap checks that need neither GPU nor TensorRT: build-engine's profile, or a hand-made input_shape
        shape = side.get("input_shape") or [-1] + side.get("profile", {}).get("shape", [])
        if len(shape) == 4:
            _check_io(f"engine {path.name} (sidecar)", tuple(shape), tuple(side.get("output_shape", (-1, -1))), size)
        trt, cudart = _tensorrt(side.get("flavour")), _cudart()
        if trt is None or cudart is None:
            raise BackendUnavailable("backend 'tensorrt' needs the tensorrt(-rtx) and cuda-python packages "
                                     "(pip install 'maskfr[trt]') and an NVIDIA GPU")
        if "sm" in side:  # another GPU or TensorRT: a clear refusal with the rebuild command, not a failed deserialise
            from maskfr.export.engine import check_sidecar, current_gpu
            check_sidecar(path, gpu=current_gpu(), trt=trt)
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
        _check_io(f"engine {path.name}", tuple(self.engine.get_tensor_shape(self._in)),
                  tuple(self.engine.get_tensor_shape(self._out)), size)
        self._min_batch, max_batch = _batch_range(self.engine, self._in)
        self.input_shape = (max_batch, 3, size, size)
        self.name = "tensorrt"
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in side.items()}
        self.metadata.update(side.get("model_metadata", {}))  # the source ONNX's contract (thresholds, version)
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._out)))
        self._capture = cuda_graph and not hasattr(trt, "CudaGraphStrategy")
        self.context = self._create_context(trt, cuda_graph)
        # the embedding size from TensorRT's own shape inference, not a guess: the buffers are sized by it
        self._set_shape(max_batch)
        self.dim = int(self.context.get_tensor_shape(self._out)[1])
        if self.dim <= 0:
            raise ModelShapeError(f"engine {path.name}: output {self._out} has no fixed embedding size")
        self._graph_n = self._enqueued_n = 0
        self._lock = threading.Lock()
        self._cudart = cudart
        self.stream = _ck(cudart.cudaStreamCreate())
        self._device_done = _ck(cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming))
        n_in = max_batch * int(np.prod(self.input_shape[1:])) * self._in_dtype.itemsize
        n_out = max_batch * self.dim * self._out_dtype.itemsize
        self._d_in = _ck(cudart.cudaMalloc(n_in))
        self._d_out = _ck(cudart.cudaMalloc(n_out))
        self._h_in = self._pinned(n_in, self._in_dtype).reshape(self.input_shape)
        self._h_out = self._pinned(n_out, self._out_dtype).reshape(max_batch, self.dim)

    def _create_context(self, trt: Any, cuda_graph: bool) -> Any:
        """The execution context. TensorRT-RTX captures CUDA graphs itself when asked through its runtime config:
        capturing its enqueue by hand needs engines built with REQUIRE_USER_ALLOCATION, and would freeze the
        fallback kernels it replaces with shape-specialised ones compiled in the background."""
        if cuda_graph and not self._capture:
            self._runtime_config = self.engine.create_runtime_config()
            self._runtime_config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            context = self.engine.create_execution_context(self._runtime_config)
        else:
            context = self.engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?); see its log")
        return context

    def _pinned(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        ptr = _ck(self._cudart.cudaMallocHost(nbytes))
        self._host_ptrs += (ptr,)
        return np.frombuffer((ctypes.c_byte * nbytes).from_address(int(ptr)), dtype)

    def _set_shape(self, n: int) -> None:
        if not self.context.set_input_shape(self._in, (n, *self.input_shape[1:])):
            raise ValueError(f"TensorRT refused batch {n} for {self._in}; the engine takes "
                             f"{self._min_batch}..{self.input_shape[0]}")

    def _enqueue(self, n: int, d_in: int, d_out: int, stream: Any) -> None:
        self._set_shape(n)
        if not (self.context.set_tensor_address(self._in, int(d_in))
                and self.context.set_tensor_address(self._out, int(d_out))):
            raise RuntimeError("TensorRT set_tensor_address failed (null or misaligned pointer?)")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; see its log")
        self._enqueued_n = n

    def infer_device(self, d_in: int, d_out: int, n: int, stream: int = 0) -> None:
        """Run on caller-owned device buffers (input (n,3,H,W), output (n,D) in the engine's dtypes); async on stream.

        Nothing is padded or split here (the buffers are the caller's), so ``n`` must be in the engine's range.
        One execution context serves every call, and TensorRT leaves ordering its work on different streams to the
        caller: each call waits (on the GPU) for the previous infer_device's work, and infer() for the last one."""
        if not self._min_batch <= n <= self.input_shape[0]:
            raise ValueError(f"batch {n} outside the engine's range {self._min_batch}..{self.input_shape[0]}; "
                             "split or pad it, use infer(), or rebuild with `maskfr build-engine --batch MIN:OPT:MAX`")
        cudart = self._cudart
        with self._lock:
            _ck(cudart.cudaStreamWaitEvent(stream, self._device_done, 0))
            self._enqueue(n, d_in, d_out, stream)
            _ck(cudart.cudaEventRecord(self._device_done, stream))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch)
        if x.ndim != 4 or x.shape[1:] != self.input_shape[1:]:  # numpy would broadcast e.g. one channel to three
            raise ValueError(f"batch must be (N, {', '.join(map(str, self.input_shape[1:]))}), got {x.shape}")
        cudart, lo, hi = self._cudart, self._min_batch, self.input_shape[0]
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        outs = []
        with self._lock:
            # after any infer_device work still queued on the caller's stream (infer() itself ends synchronised)
            _ck(cudart.cudaStreamWaitEvent(self.stream, self._device_done, 0))
            for i in range(0, len(x), hi):
                n = min(hi, len(x) - i)
                # zero rows run along and are dropped: below the profile minimum, and with a hand-captured graph up
                # to the profile maximum, so that one graph serves every call
                m = hi if self._capture else max(n, lo)
                self._h_in[:n] = x[i:i + n]
                self._h_in[n:m] = 0
                _ck(cudart.cudaMemcpyAsync(self._d_in, self._h_in.ctypes.data, self._h_in[:m].nbytes, h2d, self.stream))
                self._run(m)
                _ck(cudart.cudaMemcpyAsync(self._h_out.ctypes.data, self._d_out, self._h_out[:m].nbytes, d2h,
                                           self.stream))
                _ck(cudart.cudaStreamSynchronize(self.stream))
                outs.append(self._h_out[:n].astype(np.float32))
        return np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)

    def _run(self, n: int) -> None:
        if not self._capture:
            return self._enqueue(n, self._d_in, self._d_out, self.stream)
        cudart = self._cudart
        # A graph replays what was enqueued for one shape on this context: re-capture when the batch size changed,
        # here or through infer_device, since then.
        if self._graph is None or self._graph_n != n or self._enqueued_n != n:
            if self._graph is not None:
                _ck(cudart.cudaGraphExecDestroy(self._graph))
                self._graph = None
            self._enqueue(n, self._d_in, self._d_out, self.stream)  # warm-up: TensorRT settles the shape first
            _ck(cudart.cudaStreamSynchronize(self.stream))
            _ck(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            try:
                self._enqueue(n, self._d_in, self._d_out, self.stream)
            except BaseException:
                cudart.cudaStreamEndCapture(self.stream)  # else the stream stays capturing and every later call fails
                raise
            graph = _ck(cudart.cudaStreamEndCapture(self.stream))
            try:
                self._graph, self._graph_n = _ck(cudart.cudaGraphInstantiate(graph, 0)), n
            finally:
                cudart.cudaGraphDestroy(graph)  # the executable graph does not need it
        _ck(cudart.cudaGraphLaunch(self._graph, self.stream))

    def __del__(self) -> None:
        cudart = self._cudart
        if cudart is None:
            return
        if self._graph is not None:
            cudart.cudaGraphExecDestroy(self._graph)
        for p in self._host_ptrs:
            cudart.cudaFreeHost(p)
        for p in (self._d_in, self._d_out):
            if p:
                cudart.cudaFree(p)
        if self._device_done is not None:
            cudart.cudaEventDestroy(self._device_done)
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
