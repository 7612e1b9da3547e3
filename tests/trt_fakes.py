"""CPU stand-ins for TensorRT(-RTX) and cuda-python's runtime, to run :class:`maskfr.backends.TensorRTRunner`
without a GPU.

"Device" memory is host memory, kernels are a numpy function and a CUDA graph replays the closures enqueued
while its stream was capturing. Where cuda-python is installed but no driver is usable, every call first goes
to the real binding with the same arguments: it checks their types and count before failing for want of a
driver, so a wrong call signature raises TypeError here as it would on a GPU.
"""
from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

ERR = 2  # cudaErrorMemoryAllocation


def real_cudart() -> Any:
    """cuda-python's runtime module when it is installed and finds no driver (so a call can do no harm), else None."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        return None
    return runtime if int(runtime.cudaGetDeviceCount()[0]) != 0 else None


class _Handle:
    """A stream or graph handle; int() of it is what TensorRT gets, 0 as for cuda-python's default handles."""

    def __int__(self) -> int:
        return 0


class FakeCudart:
    """The cudart calls TensorRTRunner makes; ``fail={name: k}`` makes the k-th call (1-based) of ``name`` fail."""

    def __init__(self, real: Any = None, fail: dict[str, int] | None = None):
        self.real, self.fail = real, dict(fail or {})
        self.calls: list[str] = []
        self.live: set[int] = set()  # allocated, not yet freed: buffers, streams, graphs
        self._mem: dict[int, ctypes.Array] = {}
        self._handles: list[Any] = []  # keeps handle objects alive, so their id() stays theirs
        self._ops: dict[int, list[Callable[[], None]]] = {}
        self.capturing: list[Callable[[], None]] | None = None
        ns = real or SimpleNamespace(
            cudaMemcpyKind=SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2),
            cudaStreamCaptureMode=SimpleNamespace(cudaStreamCaptureModeGlobal=0))
        self.cudaMemcpyKind, self.cudaStreamCaptureMode = ns.cudaMemcpyKind, ns.cudaStreamCaptureMode
        self.cudaEventDisableTiming = 2
        self.recorded: dict[int, Any] = {}  # event -> the stream it was last recorded on
        self.waits: list[tuple[Any, Any]] = []  # (stream, the stream its awaited event was recorded on)

    def _call(self, name: str, *args: Any) -> bool:
        """Record the call, type-check it against the real binding; False when this call is to fail."""
        self.calls.append(name)
        if self.real is not None:
            getattr(self.real, name)(*args)  # TypeError on a wrong signature; an error code otherwise (no driver)
        return self.fail.get(name) != self.calls.count(name)

    def _handle(self, kind: str) -> Any:
        h = getattr(self.real, kind)() if self.real is not None else _Handle()
        self._handles.append(h)
        self.live.add(id(h))
        return h

    def _alloc(self, name: str, nbytes: int) -> tuple:
        if not self._call(name, nbytes):
            return (ERR, None)
        buf = ctypes.create_string_buffer(nbytes)
        self._mem[ctypes.addressof(buf)] = buf
        self.live.add(ctypes.addressof(buf))
        return (0, ctypes.addressof(buf))

    def _release(self, name: str, handle: Any, key: int) -> tuple:
        self._call(name, handle)
        self.live.discard(key)
        return (0,)

    def cudaStreamCreate(self) -> tuple:
        return (0, self._handle("cudaStream_t")) if self._call("cudaStreamCreate") else (ERR, None)

    def cudaMalloc(self, nbytes: int) -> tuple:
        return self._alloc("cudaMalloc", nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple:
        return self._alloc("cudaMallocHost", nbytes)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:
        self._call("cudaMemcpyAsync", dst, src, count, kind, stream)
        self.enqueue(lambda: ctypes.memmove(dst, src, count))
        return (0,)

    def cudaEventCreateWithFlags(self, flags: int) -> tuple:
        return (0, self._handle("cudaEvent_t")) if self._call("cudaEventCreateWithFlags", flags) else (ERR, None)

    def cudaEventRecord(self, event: Any, stream: Any) -> tuple:
        self._call("cudaEventRecord", event, stream)
        self.recorded[id(event)] = stream
        return (0,)

    def cudaStreamWaitEvent(self, stream: Any, event: Any, flags: int) -> tuple:
        self._call("cudaStreamWaitEvent", stream, event, flags)
        self.waits.append((stream, self.recorded.get(id(event))))
        return (0,)

    def cudaEventDestroy(self, event: Any) -> tuple:
        return self._release("cudaEventDestroy", event, id(event))

    def cudaStreamSynchronize(self, stream: Any) -> tuple:
        self._call("cudaStreamSynchronize", stream)
        return (900,) if self.capturing is not None else (0,)  # cudaErrorStreamCaptureUnsupported

    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple:
        self._call("cudaStreamBeginCapture", stream, mode)
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream: Any) -> tuple:
        self._call("cudaStreamEndCapture", stream)
        graph = self._handle("cudaGraph_t")
        self._ops[id(graph)], self.capturing = self.capturing, None
        return (0, graph)

    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple:
        self._call("cudaGraphInstantiate", graph, flags)
        exe = self._handle("cudaGraphExec_t")
        self._ops[id(exe)] = list(self._ops[id(graph)])
        return (0, exe)

    def cudaGraphLaunch(self, exe: Any, stream: Any) -> tuple:
        self._call("cudaGraphLaunch", exe, stream)
        for op in self._ops[id(exe)]:
            op()
        return (0,)

    def cudaGraphDestroy(self, graph: Any) -> tuple:
        return self._release("cudaGraphDestroy", graph, id(graph))

    def cudaGraphExecDestroy(self, exe: Any) -> tuple:
        return self._release("cudaGraphExecDestroy", exe, id(exe))

    def cudaStreamDestroy(self, stream: Any) -> tuple:
        return self._release("cudaStreamDestroy", stream, id(stream))

    def cudaFree(self, ptr: int) -> tuple:
        return self._release("cudaFree", ptr, ptr)

    def cudaFreeHost(self, ptr: int) -> tuple:
        return self._release("cudaFreeHost", ptr, ptr)

    def enqueue(self, op: Callable[[], None]) -> None:
        """Run ``op`` now, or record it into the graph being captured."""
        if self.capturing is not None:
            self.capturing.append(op)
        else:
            op()


def embed(x: np.ndarray, dim: int) -> np.ndarray:
    """The stand-in engine's computation: row i of the output depends on input row i alone."""
    flat = x.reshape(len(x), -1).astype(np.float32)
    return flat[:, :dim] + flat.sum(1, keepdims=True) / flat.shape[1]


class FakeContext:
    def __init__(self, engine: "FakeEngine", runtime_config: Any = None):
        self.engine, self.runtime_config = engine, runtime_config
        self.shapes: list[tuple] = []  # every shape set_input_shape accepted or refused
        self.n: int | None = None
        self.addr: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.shapes.append(tuple(shape))
        e = self.engine
        ok = name == "input" and tuple(shape[1:]) == e.chw and e.lo <= shape[0] <= e.hi
        self.n = shape[0] if ok else None
        return ok

    def get_tensor_shape(self, name: str) -> tuple:
        return (self.n, *self.engine.chw) if name == "input" else (self.n, self.engine.dim)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = int(ptr)
        return bool(ptr)

    def execute_async_v3(self, stream: int) -> bool:
        if not isinstance(stream, int) or self.n is None or set(self.addr) != {"input", "embedding"}:
            return False
        e, n, src, dst = self.engine, self.n, self.addr["input"], self.addr["embedding"]

        def op() -> None:
            x = np.ctypeslib.as_array((ctypes.c_byte * (n * int(np.prod(e.chw)) * e.in_dtype.itemsize)).from_address(src))
            out = np.ctypeslib.as_array((ctypes.c_byte * (n * e.dim * e.out_dtype.itemsize)).from_address(dst))
            y = embed(x.view(e.in_dtype).reshape(n, *e.chw), e.dim).astype(e.out_dtype)
            out[:] = y.reshape(-1).view(np.int8)

        self.engine.cudart.enqueue(op)
        return True


class FakeEngine:
    """One input ``input`` (N, 3, 112, 112), one output ``embedding`` (N, dim); dynamic batch lo..hi."""

    def __init__(self, cudart: FakeCudart, lo: int, hi: int, dim: int, in_dtype: Any, out_dtype: Any):
        self.cudart, self.lo, self.hi, self.dim = cudart, lo, hi, dim
        self.in_dtype, self.out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
        self.chw = (3, 112, 112)
        self.num_io_tensors = 2
        self.contexts: list[FakeContext] = []

    def get_tensor_name(self, i: int) -> str:
        return ("input", "embedding")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "input" else "OUTPUT"

    def get_tensor_shape(self, name: str) -> tuple:
        return (-1, *self.chw) if name == "input" else (-1, self.dim)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple]:
        return [(b, *self.chw) for b in (self.lo, (self.lo + self.hi) // 2, self.hi)]

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return self.in_dtype if name == "input" else self.out_dtype

    def create_runtime_config(self) -> SimpleNamespace:
        return SimpleNamespace(cuda_graph_strategy="DISABLED")

    def create_execution_context(self, runtime_config: Any = None) -> FakeContext:
        self.contexts.append(FakeContext(self, runtime_config))
        return self.contexts[-1]


def fake_trt(cudart: FakeCudart, lo: int = 1, hi: int = 8, dim: int = 16, in_dtype: Any = np.float32,
             out_dtype: Any = np.float32, rtx: bool = False) -> SimpleNamespace:
    """A tensorrt module whose Runtime deserialises any bytes into a FakeEngine; ``rtx``: TensorRT-RTX's
    CudaGraphStrategy is there."""
    engine = FakeEngine(cudart, lo, hi, dim, in_dtype, out_dtype)
    trt = SimpleNamespace(
        engine=engine, TensorIOMode=SimpleNamespace(INPUT="INPUT"), nptype=lambda t: t,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda blob: engine))
    if rtx:
        trt.CudaGraphStrategy = SimpleNamespace(WHOLE_GRAPH_CAPTURE="WHOLE_GRAPH_CAPTURE")
    return trt
