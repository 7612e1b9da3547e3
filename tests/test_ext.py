"""maskfr._ext (fused C++/CUDA preprocessing) against the canonical OpenCV + numpy path.

The extension reproduces cv2.warpAffine's float32 arithmetic (see cpp_ext/src/warp_math.h), so
every uint8 sample matches and float32 outputs are identical; the bound checked is the
1e-3 budget (one uint8 step would be 1/127.5 = 7.8e-3, so it also proves the samples match).
Without the extension these tests skip, unless MASKFR_REQUIRE_EXT=1 (CI), where they fail.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maskfr import preprocess as pp
from maskfr.align import similarity_transform, template, to_input, warp_face

try:
    from maskfr import _ext
except ImportError as exc:
    _ext = None
    _EXT_ERROR = exc

F32_TOL = 1e-3
F16_TOL = 2.0**-11  # half an fp16 ulp in [0.5, 1): the coarsest rounding step of values in [-1, 1]


@pytest.fixture
def ext():
    if _ext is None:
        if os.environ.get("MASKFR_REQUIRE_EXT") == "1":
            pytest.fail(f"MASKFR_REQUIRE_EXT=1 but maskfr._ext does not import: {_EXT_ERROR}")
        pytest.skip(f"maskfr._ext not built: {_EXT_ERROR}")
    return _ext


def random_case(rng: np.random.Generator, n: int, shapes: list[tuple[int, int]], size: int = 112):
    """Random frames and similarity matrices: any rotation, scale 0.1-4, centres up to 30% off-frame."""
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    idx = rng.integers(0, len(frames), n)
    mats = np.empty((n, 2, 3))
    for i, f in enumerate(idx):
        h, w = frames[f].shape[:2]
        angle, scale = rng.uniform(-np.pi, np.pi), np.exp(rng.uniform(np.log(0.1), np.log(4.0)))
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = rng.uniform(-0.3, 1.3, 2) * (w, h)
        mats[i] = np.hstack([rot, (np.full(2, size / 2) - rot @ centre)[:, None]])
    return frames, idx, mats


def reference(frames, idx, mats, size: int = 112) -> np.ndarray:
    """The canonical path, spelled out: warp_face, BGR->RGB, to_input."""
    crops = [warp_face(frames[f], m, size)[..., ::-1] for f, m in zip(idx, mats)]
    return to_input(np.stack(crops)) if crops else np.empty((0, 3, size, size), np.float32)


SHAPES = [(479, 641), (37, 53), (1, 1), (2, 3), (480, 640)]


@pytest.mark.parametrize("n", [1, 7, 64])
def test_matches_reference(ext, n):
    frames, idx, mats = random_case(np.random.default_rng(n), n, SHAPES)
    out = np.full((n, 3, 112, 112), np.nan, np.float32)  # poison: every element must be written
    got = ext.preprocess(frames, idx, mats, 112, np.float32, out)
    assert got is out
    assert np.isfinite(out).all()
    assert np.abs(out - reference(frames, idx, mats)).max() <= F32_TOL


def test_aligned_faces_exact(ext):
    """The production case: 5-point similarity transforms onto the ArcFace template."""
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    base = template(112) * 1.7 + (250, 120)
    mats = np.stack([similarity_transform(base + rng.normal(0, 3, base.shape), template(112)) for _ in range(16)])
    got = ext.preprocess([frame], np.zeros(16, int), mats)
    np.testing.assert_array_equal(got, reference([frame], np.zeros(16, int), mats))


@pytest.mark.parametrize("size", [1, 37, 100, 113])
def test_odd_crop_sizes(ext, size):
    """Sizes that are not a multiple of 16 exercise OpenCV's scalar tail columns."""
    frames, idx, mats = random_case(np.random.default_rng(size), 9, SHAPES, size)
    got = ext.preprocess(frames, idx, mats, size)
    assert got.shape == (9, 3, size, size)
    assert np.abs(got - reference(frames, idx, mats, size)).max() <= F32_TOL


def test_float16(ext):
    frames, idx, mats = random_case(np.random.default_rng(16), 7, SHAPES)
    out = np.full((7, 3, 112, 112), np.nan, np.float16)
    got = ext.preprocess(frames, idx, mats, 112, np.float16, out)
    assert got is out and np.isfinite(out).all()
    assert np.abs(out.astype(np.float32) - reference(frames, idx, mats)).max() <= F16_TOL


def test_threads_and_empty_batch(ext):
    frames, idx, mats = random_case(np.random.default_rng(3), 20, SHAPES)
    one = ext.preprocess(frames, idx, mats, num_threads=1)
    np.testing.assert_array_equal(one, ext.preprocess(frames, idx, mats, num_threads=5))
    assert ext.preprocess(frames, idx[:0], mats[:0]).shape == (0, 3, 112, 112)


def test_baseline_kernel_matches(ext):
    """The portable (non-AVX2) row kernel, forced in a child process, is exact too."""
    code = (
        "import numpy as np, sys; sys.path[:0] = {path!r}; import test_ext as t; from maskfr import _ext\n"
        "f, i, m = t.random_case(np.random.default_rng(9), 12, t.SHAPES, 100)\n"
        "assert _ext.cpu_kernel() == 'baseline', _ext.cpu_kernel()\n"
        "assert np.abs(_ext.preprocess(f, i, m, 100) - t.reference(f, i, m, 100)).max() <= t.F32_TOL\n"
    ).format(path=[os.path.dirname(__file__)])
    env = dict(os.environ, MASKFR_CPU_KERNEL="baseline")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _bad_inputs():
    ok = np.zeros((20, 30, 3), np.uint8)
    m = np.tile(np.eye(2, 3), (2, 1, 1))
    i = np.array([0, 0])
    return [
        (dict(frames=[ok.astype(np.float32)], frame_index=i, matrices=m), "uint8"),
        (dict(frames=[ok[..., :2].copy()], frame_index=i, matrices=m), r"\(H, W, 3\)"),
        (dict(frames=[np.zeros((0, 4, 3), np.uint8)], frame_index=i, matrices=m), r"H, W >= 1"),
        (dict(frames=[ok[:, ::2]], frame_index=i, matrices=m), "C-contiguous"),
        (dict(frames=["frame"], frame_index=i, matrices=m), "numpy array"),
        (dict(frames=[ok], frame_index=np.array([0, 1]), matrices=m), "out of range"),
        (dict(frames=[ok], frame_index=np.array([0.0, 0.0]), matrices=m), "integer"),
        (dict(frames=[ok], frame_index=i, matrices=m[:, :, :2]), r"\(N, 2, 3\)"),
        (dict(frames=[ok], frame_index=i[:1], matrices=m), r"\(N, 2, 3\)"),
        (dict(frames=[ok], frame_index=i, matrices=m * np.nan), "non-finite"),
        (dict(frames=[ok], frame_index=i, matrices=m, size=0), "size"),
        (dict(frames=[ok], frame_index=i, matrices=m, dtype=np.float64), "float32 or float16"),
        # non-native byte order: the kernel writes native floats, so these would come back as garbage
        (dict(frames=[ok], frame_index=i, matrices=m, dtype=np.dtype(np.float32).newbyteorder()), "float32 or float16"),
        (dict(frames=[ok], frame_index=i, matrices=m, dtype=np.dtype(np.float16).newbyteorder()), "float32 or float16"),
        (dict(frames=[ok], frame_index=i, matrices=m, out=np.zeros((2, 3, 112, 112), np.float16)), "dtype"),
        (dict(frames=[ok], frame_index=i, matrices=m, out=np.zeros((2, 3, 112, 111), np.float32)), "shape"),
        (dict(frames=[ok], frame_index=i, matrices=m, out=np.zeros((2, 3, 112, 224), np.float32)[..., ::2]),
         "C-contiguous"),
    ]


@pytest.mark.parametrize("kwargs,match", _bad_inputs())
def test_bad_input_raises_value_error(ext, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ext.preprocess(**kwargs)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limit via /proc")
def test_thread_start_failure_does_not_abort(ext):
    """When worker threads cannot be started (thread or memory limits), the call still completes on the
    threads it has; it used to std::terminate the process (joinable std::threads destroyed by the exception)."""
    code = (
        "import resource, numpy as np; from maskfr import _ext\n"
        "n = 64000; frame = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)\n"
        "mats = np.tile(np.eye(2, 3), (n, 1, 1)); idx = np.zeros(n, np.int64)\n"
        "vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))\n"
        "out = _ext.preprocess([frame], idx, mats, 1, num_threads=2000)\n"  # 2000 x 8 MiB stacks cannot fit
        "want = (frame[0, 0, ::-1].astype(np.float32) - 127.5) / 127.5\n"
        "assert (out[:, :, 0, 0] == want).all(), out[:3]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])


def test_cuda_entry_accepts_an_empty_batch(ext):
    """No faces: nothing to do, as on the CPU. Empty CuPy/PyTorch device arrays have data pointer 0, and the
    frame list may be empty; both used to raise ValueError. Needs no GPU: nothing reaches the CUDA runtime."""
    if not ext.has_cuda:
        pytest.skip("maskfr._ext built without CUDA")
    assert ext.preprocess_cuda([], np.zeros(0, np.int64), np.zeros((0, 2, 3)), 0) is None
    assert ext.preprocess_cuda([np.zeros((4, 4, 3), np.uint8)], np.zeros(0, np.int64), np.zeros((0, 2, 3)), 0) is None
    with pytest.raises(ValueError, match="out of range"):
        ext.preprocess_cuda([], np.zeros(1, np.int64), np.zeros((1, 2, 3)), 0)
    with pytest.raises(ValueError, match="out_ptr"):
        ext.preprocess_cuda([np.zeros((4, 4, 3), np.uint8)], np.zeros(1, np.int64), np.zeros((1, 2, 3)), 0)


def test_cuda_entry_takes_wait_streams_and_checks_out_ptr(ext):
    """wait_streams (the CUDA Array Interface v3 streams to wait on) is part of the binding; a misaligned out_ptr
    is refused before any CUDA call (a misaligned store faults and ends the process's CUDA context)."""
    if not ext.has_cuda:
        pytest.skip("maskfr._ext built without CUDA")
    empty = (np.zeros(0, np.int64), np.zeros((0, 2, 3)))
    assert ext.preprocess_cuda([], *empty, 0, wait_streams=[1, 12345]) is None
    one = ([np.zeros((4, 4, 3), np.uint8)], np.zeros(1, np.int64), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="aligned"):
        ext.preprocess_cuda(*one, 4096 + 2, 112, np.float32)
    if not ext.cuda_available():  # no GPU: a clear error from the runtime, not a crash
        with pytest.raises(RuntimeError, match="CUDA error"):
            ext.preprocess_cuda(*one, 4096, 112, np.float32)


class _DeviceArray:
    """A stand-in carrying a __cuda_array_interface__ dict (tests OUR validation, not CUDA)."""

    def __init__(self, shape, typestr, ptr=1 << 20, readonly=False, **optional):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, data=(ptr, readonly), version=3, **optional)


@pytest.fixture
def fake_cuda(monkeypatch):
    """pp's cuda backend over a stand-in _ext that records what preprocess_cuda is given."""
    calls = []

    class FakeExt:
        @staticmethod
        def cuda_available():
            return True

        @staticmethod
        def preprocess_cuda(*args):
            calls.append(args)

    monkeypatch.setattr(pp, "_ext", FakeExt)
    monkeypatch.setattr(pp, "_cuda_ok", lambda: True)
    return calls


def test_cuda_backend_reads_the_cuda_array_interface(fake_cuda):
    idx, mats = np.array([0, 1]), np.tile(np.eye(2, 3), (2, 1, 1))
    shape = (2, 3, 112, 112)
    frames = [_DeviceArray((20, 30, 3), "|u1", ptr=1 << 21, stream=9),
              _DeviceArray((40, 50, 3), "|u1", ptr=1 << 22, strides=(256, 3, 1), stream=None)]
    # v3 `stream`: the kernel must wait for work queued there; strides spelled as a list are still C order
    out = _DeviceArray(shape, "<f2", strides=[2 * 3 * 112 * 112, 2 * 112 * 112, 2 * 112, 2], stream=7)
    assert pp.preprocess(frames, idx, mats, dtype=np.float16, out=out, stream=5) is out
    (src, _, _, ptr, size, dtype, stream, wait), = fake_cuda
    assert src == [(1 << 21, 20, 30, 90), (1 << 22, 40, 50, 256)]
    assert (ptr, size, dtype, stream) == (1 << 20, 112, np.float16, 5)
    assert wait == [7, 9]
    for bad, match in [(_DeviceArray(shape, "<f4", readonly=True), "read-only"),
                       (_DeviceArray(shape, "<f4", mask=_DeviceArray(shape, "|b1")), "mask"),
                       (_DeviceArray(shape, "<f4", strides=(4, 4, 4, 4)), "C-contiguous"),
                       (_DeviceArray(shape, ">f4"), "float32 device array")]:
        with pytest.raises(ValueError, match=match):
            pp.preprocess([np.zeros((20, 30, 3), np.uint8)], idx, mats, out=bad)
    assert len(fake_cuda) == 1


@pytest.mark.parametrize("frame,match", [
    (np.zeros((20, 30, 3), np.float32), "uint8"),  # the numpy path used to warp it and cast to uint8
    (np.zeros((20, 30), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((20, 30, 4), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((0, 30, 3), np.uint8), r"H, W >= 1"),
])
def test_backends_reject_the_same_bad_frames(ext, frame, match):
    """The reference (numpy) backend checks frames like the extension, instead of silently giving wrong
    numbers (float frames; a grey frame with size=3) or numpy/OpenCV broadcast and assertion errors."""
    m, i = np.tile(np.eye(2, 3), (2, 1, 1)), np.array([0, 0])
    for backend in ("cpp", "numpy"):
        for size in (3, 112):
            with pytest.raises(ValueError, match=match):
                pp.preprocess([frame], i, m, size=size, backend=backend)


def test_backends_reject_non_finite_matrices_and_bad_sizes(ext):
    ok, m, i = np.zeros((20, 30, 3), np.uint8), np.tile(np.eye(2, 3), (2, 1, 1)), np.array([0, 0])
    for backend in ("cpp", "numpy"):
        with pytest.raises(ValueError, match="non-finite"):
            pp.preprocess([ok], i, m * np.nan, backend=backend)
        with pytest.raises(ValueError, match="size"):
            pp.preprocess([ok], i, m, size=0, backend=backend)


def test_preprocess_backends(ext):
    frames, idx, mats = random_case(np.random.default_rng(11), 5, SHAPES)
    assert {"cpp", "numpy"} <= set(pp.available_backends())
    ref = pp.preprocess(frames, idx, mats, backend="numpy")
    np.testing.assert_array_equal(ref, reference(frames, idx, mats))
    np.testing.assert_array_equal(pp.preprocess(frames, idx, mats, backend="auto"), ref)
    half = pp.preprocess(frames, idx, mats, dtype=np.float16, backend="cpp")
    np.testing.assert_array_equal(half, pp.preprocess(frames, idx, mats, dtype=np.float16, backend="numpy"))
    with pytest.raises(ValueError, match="unknown backend"):
        pp.preprocess(frames, idx, mats, backend="tpu")
    if "cuda" not in pp.available_backends():
        with pytest.raises(RuntimeError, match="not available"):
            pp.preprocess(frames, idx, mats, backend="cuda")


def test_cuda_available_is_bool(ext):
    assert isinstance(ext.cuda_available(), bool)
    if not ext.has_cuda:
        assert ext.cuda_available() is False


# --- CUDA (needs a GPU and CuPy or PyTorch to own device memory) ---------------------------------

def _device_lib():
    try:
        import cupy
        return "cupy", cupy
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return "torch", torch
    except ImportError:
        pass
    pytest.skip("needs cupy or torch with CUDA to allocate device buffers")


@pytest.fixture
def cuda(ext):
    if not ext.cuda_available():
        pytest.skip("no CUDA device")
    return _device_lib()


def _device_empty(lib, shape, dtype):
    kind, mod = lib
    if kind == "cupy":
        return mod.full(shape, np.nan, dtype=dtype)
    return mod.full(shape, float("nan"), dtype=getattr(mod, np.dtype(dtype).name), device="cuda")


def _to_host(lib, arr) -> np.ndarray:
    kind, mod = lib
    if kind == "cupy":
        return mod.asnumpy(arr)
    mod.cuda.synchronize()
    return arr.cpu().numpy()


def _to_device(lib, a: np.ndarray):
    kind, mod = lib
    return mod.asarray(a) if kind == "cupy" else mod.from_numpy(a).cuda()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_cuda_host_frames(ext, cuda, n, dtype):
    frames, idx, mats = random_case(np.random.default_rng(100 + n), n, SHAPES)
    out = _device_empty(cuda, (n, 3, 112, 112), dtype)
    assert pp.preprocess(frames, idx, mats, dtype=dtype, out=out) is out  # auto -> cuda for device out
    got = _to_host(cuda, out).astype(np.float32)
    assert np.isfinite(got).all()
    tol = F32_TOL if dtype == np.float32 else F16_TOL
    assert np.abs(got - reference(frames, idx, mats)).max() <= tol
    # same warp math and the same round-to-nearest-even float16: bit-identical to the CPU kernel
    np.testing.assert_array_equal(_to_host(cuda, out), ext.preprocess(frames, idx, mats, 112, dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("size", [37, 112])
def test_cuda_device_frames(ext, cuda, size):
    frames, idx, mats = random_case(np.random.default_rng(200 + size), 9, SHAPES, size)
    dev_frames = [_to_device(cuda, f) for f in frames]
    out = _device_empty(cuda, (9, 3, size, size), np.float32)
    pp.preprocess(dev_frames, idx, mats, size=size, backend="cuda", out=out)
    assert np.abs(_to_host(cuda, out) - reference(frames, idx, mats, size)).max() <= F32_TOL


@pytest.mark.gpu
def test_cuda_batch_above_grid_y_limit(ext, cuda):
    """70,000 faces: more than the 65,535 blocks grid.y allows, so the batch is launched in slices."""
    n, frame = 70_000, np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    mats = np.tile(np.eye(2, 3), (n, 1, 1))
    mats[:, :, 2] = np.random.default_rng(2).uniform(-3, 3, (n, 2))
    out = _device_empty(cuda, (n, 3, 2, 2), np.float32)
    pp.preprocess([frame], np.zeros(n, np.int64), mats, size=2, out=out)
    np.testing.assert_array_equal(_to_host(cuda, out), ext.preprocess([frame], np.zeros(n, np.int64), mats, 2))


def _cupy(cuda):
    if cuda[0] != "cupy":
        pytest.skip("needs CuPy (streams and devices by hand)")
    return cuda[1]


@pytest.mark.gpu
def test_cuda_waits_for_the_arrays_stream(ext, cuda):
    """out is still being filled on its producer stream (queued behind slow work) when the kernel is queued on
    another non-blocking stream: the kernel must wait for it (CUDA Array Interface v3 `stream`), else the
    late fill overwrites the crops with NaN."""
    cp = _cupy(cuda)
    frames, idx, mats = random_case(np.random.default_rng(300), 9, SHAPES)
    producer, ours = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with producer:
        dev_frames = [cp.asarray(f) for f in frames]
        out = cp.empty((9, 3, 112, 112), np.float32)
        slow = cp.ones((4096, 4096), np.float32)
        for _ in range(20):
            slow = slow @ slow * np.float32(1e-4)
        out.fill(np.nan)
        if out.__cuda_array_interface__.get("stream") != producer.ptr:
            pytest.skip("this CuPy does not export the CUDA Array Interface stream")
        pp.preprocess(dev_frames, idx, mats, out=out, stream=ours.ptr)
    ours.synchronize()
    producer.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(out), ext.preprocess(frames, idx, mats))


@pytest.mark.gpu
def test_cuda_refuses_host_memory_as_out(ext, cuda):
    cp = _cupy(cuda)
    if cp.cuda.runtime.deviceGetAttribute(88, 0):  # cudaDevAttrPageableMemoryAccess: the GPU can write it
        pytest.skip("this GPU can access pageable host memory")
    host = np.zeros((1, 3, 112, 112), np.float32)
    with pytest.raises(ValueError, match="can access"):
        ext.preprocess_cuda([np.zeros((4, 4, 3), np.uint8)], np.zeros(1, np.int64), np.tile(np.eye(2, 3), (1, 1, 1)),
                            host.ctypes.data)


@pytest.mark.gpu
def test_cuda_runs_on_the_gpu_of_out(ext, cuda):
    """out on GPU 1 while GPU 0 is current: the batch runs on GPU 1 and GPU 0 stays current; device frames on
    another GPU than out are refused (the kernel would fault)."""
    cp = _cupy(cuda)
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    frames, idx, mats = random_case(np.random.default_rng(400), 5, SHAPES)
    with cp.cuda.Device(1):
        out = cp.full((5, 3, 112, 112), np.nan, np.float32)
    with cp.cuda.Device(0):
        pp.preprocess(frames, idx, mats, out=out)
        assert cp.cuda.runtime.getDevice() == 0
        with pytest.raises(ValueError, match="GPU 0"):
            pp.preprocess([cp.asarray(f) for f in frames], idx, mats, out=out)
    with cp.cuda.Device(1):
        np.testing.assert_array_equal(cp.asnumpy(out), ext.preprocess(frames, idx, mats))


@pytest.mark.skipif(platform.machine() != "x86_64" or not (shutil.which("aarch64-linux-gnu-g++")
                                                           and shutil.which("qemu-aarch64")),
                    reason="needs an x86-64 host with aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: "
                           "g++-aarch64-linux-gnu qemu-user)")
def test_aarch64_build_matches_x86_bit_for_bit(tmp_path):
    """Jetson's CPU cores and other ARM machines run the portable kernel with the hardware fmaf: built for
    aarch64 and run under qemu, it must give the x86-64 build's bytes (which the tests above hold to OpenCV)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "aarch64_check.sh"
    out = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "values differ" in line]
    assert len(lines) == 4 and all(": 0 of " in line for line in lines), out.stdout
