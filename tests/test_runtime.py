"""FaceRecognizer and backends with a stand-in ONNX model and detector (no torch, no trained model)."""
from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from maskfr import backends
from maskfr.align import align_face
from maskfr.recognizer import FaceRecognizer, ImageError, MaskClassifier, NoFaceError, load_image, mask_features
import trt_fakes
from runtime_helpers import MarkerDetector, draw_faces, make_model


@pytest.fixture
def model(tmp_path):
    return make_model(tmp_path / "standin.onnx")


@pytest.fixture
def rec(model):
    return FaceRecognizer(model, detector=MarkerDetector(), backend="cpu")


def test_runtime_never_imports_torch():
    code = "import sys, maskfr.recognizer, maskfr.gallery, maskfr.backends, maskfr.cli_runtime; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_embed_frames_many_faces_and_batches(model):
    rec = FaceRecognizer(model, detector=MarkerDetector(), batch_size=2)
    frames = [draw_faces([(1, 10, 10, 80), (2, 150, 60, 90)]), draw_faces([]), draw_faces([(3, 100, 100, 100)])]
    e = rec.embed(frames)
    assert e.shape == (3, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    per_frame = rec.analyze(frames)
    assert [len(f) for f in per_frame] == [2, 0, 1]
    assert per_frame[0][0].area >= per_frame[0][1].area  # largest first
    np.testing.assert_allclose(rec.embed(frames[2]), e[2:], atol=1e-6)
    assert rec.embed([frames[1]]).shape == (0, 128)


def test_embed_aligned_crops_match_frames(rec):
    frame = draw_faces([(4, 40, 50, 112)])
    face = rec.analyze([frame])[0][0]
    crop = align_face(frame, face.landmarks)
    np.testing.assert_allclose(rec.embed([crop], aligned=True)[0], face.embedding, atol=1e-4)
    with pytest.raises(ImageError, match="112x112"):
        rec.embed([frame], aligned=True)


def test_verify_uses_recommended_threshold_and_override(rec, model):
    a, b = draw_faces([(1, 20, 30, 96)]), draw_faces([(1, 150, 60, 80)], jitter=3)
    c = draw_faces([(2, 40, 40, 100)])
    same, diff = rec.verify(a, b), rec.verify(a, c)
    assert same.same and not diff.same and same.threshold == 0.8
    assert same.similarity > 0.95 and diff.similarity < 0.8
    assert rec.verify(a, c, threshold=-1.0).same
    assert FaceRecognizer(model, detector=MarkerDetector(), threshold=0.5).threshold == 0.5
    assert FaceRecognizer(make_model(model.parent / "none.onnx", thresholds={"far=1e-2": 0.6}),
                          detector=MarkerDetector()).threshold == 0.6


def test_metadata_written_by_export_is_read(tmp_path):
    """`maskfr export` stores its keys as ``maskfr.<key>``; the runtime must find them under ``<key>``."""
    import onnx
    path = make_model(tmp_path / "m.onnx", thresholds={"far=1e-3": 0.42}, version="g2d-7")
    proto = onnx.load(str(path))
    for p in proto.metadata_props:
        p.key = "maskfr." + p.key
    proto.metadata_props.add(key="producer_note", value="kept")
    onnx.save(proto, str(path))
    rec = FaceRecognizer(path, detector=MarkerDetector())
    assert rec.threshold == 0.42 and rec.model_version == "g2d-7" and rec.metadata["producer_note"] == "kept"


def test_no_face_is_a_clear_error(rec):
    with pytest.raises(NoFaceError, match="second image"):
        rec.verify(draw_faces([(1, 20, 30, 96)]), draw_faces([]))
    assert rec.identify(draw_faces([]), rec.new_gallery()) == []


@pytest.mark.parametrize("make, expect", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"not an image at all"), "cannot decode"),
    (lambda p: p.write_bytes(cv2.imencode(".jpg", draw_faces([(1, 9, 9, 60)]))[1].tobytes()[:300]), "cannot decode"),
])
def test_bad_files(tmp_path, make, expect):
    p = tmp_path / "x.jpg"
    make(p)
    with pytest.raises(ImageError, match=expect):
        load_image(p)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_image("/nonexistent/face.jpg")


def test_documented_conversions(tmp_path):
    bgr = draw_faces([(1, 20, 30, 96)])
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert load_image(gray).shape == (*gray.shape, 3)
    assert load_image(gray[..., None]).shape == (*gray.shape, 3)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(load_image(bgra), bgr)
    np.testing.assert_array_equal(load_image(bgr.astype(np.uint16) * 257), bgr)
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), bgr)
    for bad, msg in ((bgr.astype(np.float32), "dtype"), (np.zeros((0, 5, 3), np.uint8), "empty"),
                     (np.zeros((4, 4, 2), np.uint8), "shape|\\(H, W\\)")):
        with pytest.raises(ImageError, match=msg):
            load_image(bad)


def test_rgb_arrays_and_pil_images(model, tmp_path):
    """RGB arrays (channels="rgb") and PIL images of every common mode give what the BGR array gives."""
    Image = pytest.importorskip("PIL.Image")
    bgr = draw_faces([(1, 20, 30, 96)])
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    np.testing.assert_array_equal(load_image(rgb, "rgb"), bgr)
    np.testing.assert_array_equal(load_image(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "rgb"), bgr)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(load_image(gray, "rgb"), load_image(gray))  # grey has no channel order
    pil = Image.fromarray(rgb)
    grey_pil = pil.convert("L")
    for img, want in ((pil, bgr), (pil.convert("RGBA"), bgr), (grey_pil, load_image(np.asarray(grey_pil))),
                      (Image.fromarray(gray.astype(np.uint16) * 257), load_image(gray))):
        for channels in ("bgr", "rgb"):  # a PIL image knows its own mode
            np.testing.assert_array_equal(load_image(img, channels), want)
    paletted = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    np.testing.assert_array_equal(load_image(paletted), np.asarray(paletted.convert("RGB"))[..., ::-1])
    with pytest.raises(ValueError, match="channels"):
        load_image(bgr, "RGB ")
    with pytest.raises(ValueError, match="channels"):
        FaceRecognizer(model, detector=MarkerDetector(), channels="bgra")
    # the recognizer reads every input in the order it was told, once (analyze, detect, embed)
    want = FaceRecognizer(model, detector=MarkerDetector()).embed(bgr)
    as_rgb = FaceRecognizer(model, detector=MarkerDetector(), channels="rgb")
    np.testing.assert_allclose(as_rgb.embed(rgb), want, atol=1e-6)
    np.testing.assert_allclose(as_rgb.embed(pil), want, atol=1e-6)
    np.testing.assert_allclose(as_rgb.detect(rgb)[0].box, as_rgb.detect(pil)[0].box)
    cv2.imwrite(str(tmp_path / "face.png"), bgr)
    np.testing.assert_allclose(as_rgb.embed(tmp_path / "face.png"), want, atol=1e-6)


def test_exif_orientation(model, tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 is read upright (file, bytes and PIL alike)."""
    Image = pytest.importorskip("PIL.Image")
    upright = draw_faces([(1, 20, 30, 96)])  # 240 x 320
    stored = np.ascontiguousarray(np.rot90(upright))  # a viewer turns it 90 degrees clockwise to show it
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored[..., ::-1]).save(path, quality=95, exif=exif)
    for img in (load_image(path), load_image(path.read_bytes()), load_image(Image.open(path))):
        assert img.shape == upright.shape
        assert np.abs(img.astype(int) - upright).mean() < 3  # JPEG loss only
    rec = FaceRecognizer(model, detector=MarkerDetector())
    np.testing.assert_allclose(rec.detect(path)[0].box, rec.detect(upright)[0].box, atol=2)


def test_huge_images(model, monkeypatch):
    import maskfr.recognizer as r
    monkeypatch.setattr(r, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="exceeds"):
        load_image(np.zeros((100, 100, 3), np.uint8))
    monkeypatch.undo()
    # frames over max_side are shrunk for detection, boxes come back in full-frame pixels
    small = FaceRecognizer(model, detector=MarkerDetector(), max_side=160)
    frame = draw_faces([(1, 40, 40, 120)], size=(400, 400))
    face = small.detect(frame)[0]
    assert abs(face.box[0] - 37) < 4 and abs(face.box[2] - 162) < 6



def test_huge_jpeg_and_png_are_refused_before_decoding(tmp_path, monkeypatch):
    """The declared size is read from the header; a 20000x20000 file is refused without being decoded (seconds
    and gigabytes on an edge device), and an ordinary one reads as before."""
    import maskfr.recognizer as r
    img = np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8)
    exif = b"\xff\xe1" + (2 + 300).to_bytes(2, "big") + bytes(300)  # an APP1 segment before the frame header
    jpg = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    jpg[2:2] = exif
    png = bytearray(cv2.imencode(".png", img)[1].tobytes())
    assert r.declared_size(bytes(jpg)) == r.declared_size(bytes(png)) == (50, 30)
    assert load_image(bytes(jpg)).shape == (30, 50, 3) and r.declared_size(b"GIF89a") is None
    sof = next(i for i in range(2, len(jpg)) if jpg[i] == 0xFF and jpg[i + 1] in (0xC0, 0xC2))
    jpg[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2
    png[16:24] = (20000).to_bytes(4, "big") * 2
    monkeypatch.setattr(r.cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    for name, data in (("big.jpg", jpg), ("big.png", png)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=f"{name}: image 20000x20000 exceeds"):
            load_image(tmp_path / name)
    with pytest.raises(ImageError, match="image bytes: image 20000x20000 exceeds"):
        load_image(bytes(jpg))

def test_long_thin_frames_are_not_a_crash(model):
    """A frame shrunk for detection whose short side rounded to 0 pixels: cv2.error, not an answer."""
    rec = FaceRecognizer(model, detector=MarkerDetector(), max_side=4096)
    for shape in ((1, 10000, 3), (2, 50000), (10000, 1, 3)):
        assert rec.analyze([np.zeros(shape, np.uint8)]) == [[]]


def test_enroll_one_image_and_file_errors_name_the_file(rec, model, tmp_path):
    """enroll(gallery, name, "alice.jpg") iterated the path's characters ("image not found: a") and a
    single frame array row by row (silently 0 enrolled); one image is fine, as for embed()."""
    frame = draw_faces([(1, 20, 30, 96)])
    path = tmp_path / "alice.png"
    cv2.imwrite(str(path), frame)
    g = rec.new_gallery()
    assert rec.enroll(g, "alice", str(path)) == 1 and rec.enroll(g, "alice", frame) == 1
    assert rec.enroll(g, "alice", [path, frame]) == 2 and g.n_templates == 4
    assert rec.embed([], aligned=True).shape == rec.embed([]).shape == (0, 128)
    assert len(rec.analyze(str(path))) == 1 and len(rec.analyze(str(path))[0]) == 1  # not walked char by char
    cv2.imwrite(str(tmp_path / "float.tiff"), frame.astype(np.float32) / 255)
    with pytest.raises(ImageError, match="float.tiff: .*dtype"):
        load_image(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match="finite"):
        FaceRecognizer(model, detector=MarkerDetector(), threshold=float("nan"))


def test_wrong_shape_model_and_missing_default(tmp_path):
    bad = make_model(tmp_path / "bad.onnx", size=64)
    with pytest.raises(backends.ModelShapeError, match="not \\(N, 3, 112, 112\\)"):
        FaceRecognizer(bad, detector=MarkerDetector())
    (tmp_path / "junk.onnx").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        FaceRecognizer(tmp_path / "junk.onnx")
    import maskfr.recognizer as r
    if not r.DEFAULT_MODEL.exists():
        with pytest.raises(FileNotFoundError, match="g2d_student.onnx"):
            FaceRecognizer()


def test_backend_choice_never_falls_back(model, tmp_path):
    if "cuda" not in backends.available_backends():
        with pytest.raises(backends.BackendUnavailable, match="cuda"):
            backends.load_runner(model, "cuda")
    with pytest.raises(backends.BackendUnavailable, match="engine"):
        backends.load_runner(model, "tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        backends.load_runner(model, "tpu")
    assert backends.load_runner(model, "auto").name in ("cpu", "cuda")


def test_threads_reach_the_model_and_the_default_detector(model):
    rec = FaceRecognizer(model, backend="cpu", threads=1, mask_classifier=None)
    assert rec.runner.session.get_session_options().intra_op_num_threads == 1
    assert rec.detect(np.zeros((64, 64, 3), np.uint8)) == []
    assert rec._detector.threads == 1


def test_min_face_reaches_the_default_detector_only(model):
    rec = FaceRecognizer(model, backend="cpu", min_face=12, mask_classifier=None)
    assert rec.detect(np.zeros((64, 64, 3), np.uint8)) == []
    assert rec._detector.min_face == 12
    with pytest.raises(ValueError, match="min_face"):
        FaceRecognizer(model, detector=MarkerDetector(), min_face=12)  # would be silently ignored
    from maskfr.cli import build_parser
    assert build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--min-face", "12"]).min_face == 12


def test_engine_with_wrong_input_shape_raises(tmp_path):
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"\0" * 64)
    (tmp_path / "student.json").write_text(json.dumps({"input_shape": [8, 3, 96, 96], "output_shape": [8, 128]}))
    with pytest.raises(backends.ModelShapeError, match="not \\(N, 3, 112, 112\\)"):
        backends.load_runner(engine, "auto")


def test_engine_for_another_gpu_or_tensorrt_is_refused_with_the_rebuild_command(tmp_path, monkeypatch):
    """The sidecar build-engine writes (ENGINE.json) is checked before deserialising, as load_engine does."""
    engine_mod = pytest.importorskip("maskfr.export.engine")
    if backends._tensorrt() is None:
        pytest.skip("no tensorrt(-rtx) package")
    monkeypatch.setattr(backends, "_cudart", lambda: object())  # never reached: the sidecar check comes first
    monkeypatch.setattr(engine_mod, "current_gpu", lambda: {"name": "RTX 4090", "sm": 89})
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"\0" * 64)
    side = {"flavour": "tensorrt_rtx", "tensorrt_version": "0.9", "gpu": "RTX 3090", "sm": 86, "onnx": "m.fp16.onnx",
            "precision": "fp16", "profile": {"input": "input", "batch": [1, 8, 32], "shape": [3, 112, 112]}}
    (tmp_path / "m.fp16.engine.json").write_text(json.dumps(side))
    (tmp_path / "m.fp16.json").write_text("{}")  # a stray file with the stem's name is not the sidecar
    with pytest.raises(engine_mod.EngineMismatch, match=r"tensorrt_rtx 0\.9.*SM86.*RTX 4090.*maskfr build-engine"):
        backends.load_runner(engine, "tensorrt")
    (tmp_path / "m.fp16.engine.json").write_text(json.dumps({**side, "profile": {**side["profile"], "shape": [3, 96, 96]}}))
    with pytest.raises(backends.ModelShapeError, match="not \\(N, 3, 112, 112\\)"):
        backends.load_runner(engine, "tensorrt")


@pytest.mark.gpu
def test_tensorrt_runner_matches_onnxruntime(tmp_path, model):
    pytest.importorskip("cuda")
    if "tensorrt" not in backends.available_backends():
        pytest.skip("TensorRT not installed")
    engine_mod = pytest.importorskip("maskfr.export.engine")
    if engine_mod.current_gpu() is None:
        pytest.skip("no CUDA GPU")
    # build_engine returns the sidecar; an FP32 ONNX builds fp32 only (strongly typed on TensorRT-RTX)
    engine = engine_mod.build_engine(model, tmp_path / "standin.engine", precision="fp32", batch=(2, 8, 16))["engine"]
    x = np.random.default_rng(0).uniform(-1, 1, (40, 3, 112, 112)).astype(np.float32)
    ref = backends.load_runner(model, "cpu").infer(x)
    for graph in (False, True):
        trt = backends.TensorRTRunner(engine, cuda_graph=graph)
        for n in (5, 1, 40, 5):  # below the profile minimum, above its maximum, and back (graphs re-captured)
            np.testing.assert_allclose(trt.infer(x[:n]), ref[:n], atol=2e-3)


def test_tensorrt_is_listed_only_with_a_gpu(monkeypatch):
    """tensorrt-rtx and cuda-python import on machines without a GPU: TensorRT was listed as usable there."""
    cudart = SimpleNamespace(cudaGetDeviceCount=lambda: (35, None))  # cudaErrorInsufficientDriver
    monkeypatch.setattr(backends, "_tensorrt", lambda flavour=None: SimpleNamespace())
    monkeypatch.setattr(backends, "_cudart", lambda: cudart)
    assert "tensorrt" not in backends.available_backends()
    cudart.cudaGetDeviceCount = lambda: (0, 1)
    assert backends.available_backends()[0] == "tensorrt"


def test_tensorrt_runner_opens_the_flavour_its_engine_was_built_with(monkeypatch):
    """With both TensorRT and TensorRT-RTX installed, the runner took RTX for every engine, and the sidecar check
    then refused a full-TensorRT engine as built "with another TensorRT"."""
    full, rtx = SimpleNamespace(name="full"), SimpleNamespace(name="rtx")
    monkeypatch.setitem(sys.modules, "tensorrt", full)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", rtx)
    assert backends._tensorrt("tensorrt") is full and backends._tensorrt("tensorrt_rtx") is rtx
    assert backends._tensorrt() is rtx and backends._tensorrt("junk") is rtx and backends._tensorrt(5) is rtx


@pytest.fixture
def stub_trt(monkeypatch, tmp_path):
    """TensorRTRunner on the CPU stand-ins of tests/trt_fakes.py: ``make(cuda_graph=, fail=, **engine)`` gives the
    fake cudart and tensorrt, and ``open()`` to construct the runner."""
    def make(cuda_graph: bool = False, fail: dict | None = None, **engine):
        cudart = trt_fakes.FakeCudart(trt_fakes.real_cudart(), fail)
        trt = trt_fakes.fake_trt(cudart, **engine)
        monkeypatch.setattr(backends, "_tensorrt", lambda flavour=None: trt)
        monkeypatch.setattr(backends, "_cudart", lambda: cudart)
        path = tmp_path / "m.engine"
        path.write_bytes(b"plan")
        return SimpleNamespace(cudart=cudart, trt=trt, open=lambda: backends.TensorRTRunner(path, cuda_graph=cuda_graph))
    return make


def _faces(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(-1, 1, (n, 3, 112, 112)).astype(np.float32)


def test_tensorrt_runner_pads_below_and_splits_above_the_profile(stub_trt):
    """A last chunk below the profile minimum went to set_input_shape as it was: TensorRT refused it (the False
    went unchecked) and execute_async_v3 failed. Now it is zero-padded, and its padding rows dropped."""
    s = stub_trt(lo=4, hi=8, dim=16, in_dtype=np.float16)
    r = s.open()
    assert r.input_shape == (8, 3, 112, 112) and r.dim == 16
    x = _faces(19)
    np.testing.assert_allclose(r.infer(x), trt_fakes.embed(x.astype(np.float16), 16), rtol=1e-6)
    assert [shape[0] for shape in s.trt.engine.contexts[0].shapes[1:]] == [8, 8, 4]  # [0]: __init__ sizing D
    assert r.infer(x[:0]).shape == (0, 16)
    with pytest.raises(ValueError, match=r"batch must be \(N, 3, 112, 112\)"):
        r.infer(x[:, :1])  # would have broadcast one channel to three


def test_tensorrt_runner_infer_device_checks_the_profile_range(stub_trt):
    """infer_device cannot pad caller-owned buffers: a batch below the profile minimum is a clear error, not
    execute_async_v3's failure."""
    r = stub_trt(lo=2, hi=8).open()
    for n in (1, 9):
        with pytest.raises(ValueError, match=r"batch %d outside the engine's range 2\.\.8" % n):
            r.infer_device(1, 1, n)
    x, y = _faces(3), np.zeros((3, 16), np.float32)
    r.infer_device(x.ctypes.data, y.ctypes.data, 3)
    np.testing.assert_allclose(y, trt_fakes.embed(x, 16), rtol=1e-6)


def test_tensorrt_runner_orders_its_context_across_streams(stub_trt):
    """One execution context serves infer (its own stream) and infer_device (the caller's): TensorRT leaves
    ordering its work on different streams to the caller, so each waits (on the GPU) for the last device run."""
    s = stub_trt()
    r = s.open()
    x, y = _faces(3), np.zeros((3, 16), np.float32)
    a, b = 11, 12  # the caller's stream handles
    r.infer_device(x.ctypes.data, y.ctypes.data, 3, stream=a)
    r.infer_device(x.ctypes.data, y.ctypes.data, 3, stream=b)
    r.infer(x)
    assert s.cudart.waits == [(a, None), (b, a), (r.stream, b)]  # the first waits on a never-recorded event
    del r
    gc.collect()
    assert s.cudart.live == set()


def test_tensorrt_runner_recaptures_its_cuda_graph_when_the_batch_changes(stub_trt):
    """Full TensorRT: one graph per batch size was kept and replayed after other shapes had run on the same
    context (a graph holds what was enqueued for its shape), and no captured cudaGraph_t was ever destroyed. Now
    infer pads every chunk to the profile maximum, so one graph serves all sizes (19 faces: 8, 8, 3 used to
    capture twice per call), and a shape infer_device ran in between makes it capture again."""
    s = stub_trt(cuda_graph=True)
    r = s.open()
    x = _faces(19)
    for n in (8, 3, 19, 1):
        np.testing.assert_allclose(r.infer(x[:n]), trt_fakes.embed(x[:n], 16), rtol=1e-6)
    assert s.cudart.calls.count("cudaStreamBeginCapture") == 1
    y = np.zeros((5, 16), np.float32)
    r.infer_device(x.ctypes.data, y.ctypes.data, 5)  # another shape on the context, outside the graph
    np.testing.assert_allclose(r.infer(x[:8]), trt_fakes.embed(x[:8], 16), rtol=1e-6)
    assert s.cudart.calls.count("cudaStreamBeginCapture") == 2
    assert s.cudart.calls.count("cudaGraphDestroy") == 2 and s.cudart.calls.count("cudaGraphExecDestroy") == 1
    del r
    gc.collect()
    assert s.cudart.live == set()


def test_tensorrt_rtx_runner_uses_its_built_in_cuda_graphs(stub_trt):
    """TensorRT-RTX captures graphs itself (IRuntimeConfig.cuda_graph_strategy); capturing its enqueue by hand
    needs engines built with REQUIRE_USER_ALLOCATION, which build-engine does not set."""
    s = stub_trt(cuda_graph=True, rtx=True)
    r = s.open()
    assert s.trt.engine.contexts[0].runtime_config.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE"
    x = _faces(5)
    np.testing.assert_allclose(r.infer(x), trt_fakes.embed(x, 16), rtol=1e-6)
    assert "cudaStreamBeginCapture" not in s.cudart.calls


@pytest.mark.parametrize("fail", [{"cudaStreamCreate": 1}, {"cudaMalloc": 2}, {"cudaMallocHost": 2}])
def test_tensorrt_runner_frees_what_a_failed_init_got(stub_trt, fail):
    """A second cudaMalloc failing leaked the first and the stream; a cudaMallocHost failing made __del__ raise
    AttributeError before it freed anything."""
    s = stub_trt(fail=fail)
    with pytest.raises(RuntimeError, match="CUDA error"):
        s.open()
    gc.collect()
    assert s.cudart.calls and s.cudart.live == set()


def test_tensorrt_runner_calls_cuda_python_with_its_real_signatures(stub_trt):
    """Every cudart call the runner makes also goes to cuda-python's own binding, which checks argument types
    and count before it fails for want of a driver: a wrong signature raises TypeError here."""
    if trt_fakes.real_cudart() is None:
        pytest.skip("needs cuda-python and no usable GPU")
    s = stub_trt(cuda_graph=True, lo=2)
    r = s.open()
    for n in (1, 3):
        r.infer(_faces(n))
    del r
    gc.collect()
    assert s.cudart.real is not None and {
        "cudaStreamCreate", "cudaMalloc", "cudaMallocHost", "cudaMemcpyAsync", "cudaStreamSynchronize",
        "cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphDestroy",
        "cudaGraphLaunch", "cudaGraphExecDestroy", "cudaFreeHost", "cudaFree", "cudaStreamDestroy"} <= set(s.cudart.calls)


def test_identify_from_threads_matches_serial(rec):
    gallery = rec.new_gallery()
    for ident in range(1, 6):
        rec.enroll(gallery, f"person{ident}", [draw_faces([(ident, 30, 30, 90)], jitter=ident)])
    frames = [draw_faces([(1 + i % 5, 20 + i, 40, 96), (1 + (i + 2) % 5, 180, 80, 70)], jitter=50 + i) for i in range(24)]

    def run(f):
        return [(r.identity, [(m.identity, round(m.similarity, 6)) for m in r.matches]) for r in rec.identify(f, gallery, 3)]
    serial = [run(f) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, frames))
    assert threaded == serial
    assert [s[0][0] for s in serial] == [f"person{1 + i % 5}" for i in range(24)]


def test_gallery_from_another_model_is_refused(rec):
    from maskfr.gallery import Gallery
    with pytest.raises(ValueError, match="re-enrol"):
        rec.identify(draw_faces([(1, 20, 30, 96)]), Gallery(128, "other-model"))


def test_mask_flag(rec, tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    assert mask_features(x).shape == (4, 272)
    # a mask flattens the mouth band: weight only its gradient feature (index 13)
    weights = np.zeros((272, 1))
    weights[13] = -1
    clf = MaskClassifier(mean=[0] * 272, std=[1] * 272, layers=[{"weights": weights.tolist(), "bias": [3.0]}])
    rec.mask_classifier = clf
    plain, masked = (rec.analyze([draw_faces([(7, 30, 30, 100)], masked=m)])[0][0] for m in (False, True))
    assert plain.masked is False and masked.masked is True and masked.mask_score > plain.mask_score


def test_mask_classifier_layers():
    """ReLU between layers, none after the last; layers that do not chain to one logit are refused."""
    feats = np.array([[1.0, -2.0], [0.5, 3.0]])
    clf = MaskClassifier(mean=[0, 0], std=[1, 2], layers=[{"weights": [[1, -1], [1, 1]], "bias": [0, 0]},
                                                            {"weights": [[2], [-1]], "bias": [-1]}])
    h = np.maximum((feats / [1, 2]) @ [[1, -1], [1, 1]], 0) @ [[2], [-1]] - 1  # by hand
    np.testing.assert_allclose(clf.proba_from_features(feats), 1 / (1 + np.exp(-h[:, 0])), rtol=1e-6)
    for layers in ([{"weights": [[1, 1]], "bias": [0, 0]}], [{"weights": [[1], [1]], "bias": [0]}] * 2,
                   [{"weights": [[1, 1], [1, 1]], "bias": [0, 0]}]):
        with pytest.raises(ValueError, match="chain"):
            MaskClassifier(mean=[0, 0], std=[1, 1], layers=layers)


def test_shipped_mask_classifier_loads():
    clf = MaskClassifier.load()
    if clf is None:
        pytest.skip("mask classifier not trained yet")
    assert len(clf.mean) == 272 and clf.info["test_accuracy_masked_grey"] > 0.9 and clf.info["test_accuracy"] > 0.9


# -- command line -------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch, model, capsys):
    import maskfr.recognizer as r
    from maskfr.cli import main
    monkeypatch.setattr(r, "_default_detector", lambda threads=None, min_face=None: MarkerDetector())

    def run(*args):
        rc = main([str(a) for a in args] + ["--model", str(model), "--json"])
        out = capsys.readouterr().out
        return rc, (json.loads(out) if out.strip() else None)
    run.model = model
    return run


def test_cli_verify_embed_exit_codes(cli, tmp_path):
    paths = {}
    for name, faces in {"a": [(1, 20, 30, 96)], "b": [(1, 150, 60, 80)], "c": [(2, 40, 40, 100)], "none": []}.items():
        paths[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(paths[name]), draw_faces(faces, jitter=3))
    rc, out = cli("verify", paths["a"], paths["b"])
    assert rc == 0 and out["same"] and out["threshold"] == 0.8
    assert cli("verify", paths["a"], paths["c"])[0] == 1
    assert cli("verify", paths["a"], paths["none"])[0] == 2
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert cli("verify", paths["a"], tmp_path / "bad.jpg")[0] == 2
    rc, out = cli("embed", paths["a"], paths["c"], "--out", tmp_path / "e.npy")
    assert rc == 0 and np.load(tmp_path / "e.npy").shape == (2, 128) and len(out["images"][0]["faces"][0]["embedding"]) == 128
    assert cli("embed", paths["none"])[0] == 1


def test_cli_enroll_identify_calibrate(cli, tmp_path):
    root = tmp_path / "people"
    for ident in range(1, 5):
        (root / f"p{ident}").mkdir(parents=True)
        for j in range(3):
            cv2.imwrite(str(root / f"p{ident}" / f"{j}.png"), draw_faces([(ident, 30 + 10 * j, 40, 90)], jitter=j + 1))
    gal = tmp_path / "g.npz"
    rc, out = cli("enroll", gal, root)
    assert rc == 0 and out["identities"] == 4 and out["templates"] == 12
    probe = tmp_path / "probe.png"
    cv2.imwrite(str(probe), draw_faces([(3, 100, 80, 100), (9, 10, 10, 60)], jitter=7))
    rc, out = cli("identify", gal, probe, "--top-k", "2")
    faces = out["results"][0]["faces"]
    assert rc == 0 and [f["identity"] for f in faces] == ["p3", None] and len(faces[0]["matches"]) == 2
    assert set(out["thresholds"]) == {"any", "u-u", "m-u", "m-m"} and faces[0]["threshold"] in out["thresholds"].values()
    assert cli("enroll", gal, "--rename", "p3", "carol")[1]["renamed"] == ["p3", "carol"]
    assert cli("identify", gal, probe)[1]["results"][0]["faces"][0]["identity"] == "carol"
    assert cli("enroll", gal, "--remove", "carol")[1]["identities"] == 3
    assert cli("identify", gal, probe)[0] == 1
    gal.write_bytes(gal.read_bytes()[:100])
    assert cli("identify", gal, probe)[0] == 2
    rc, out = cli("calibrate", root, "--far", "0.1", "-o", tmp_path / "thr.json")
    assert rc == 0 and out["genuine_pairs"] == 12 and out["impostor_pairs"] == 54 and out["tar"] == 1.0
    thr = json.loads((tmp_path / "thr.json").read_text())
    assert thr["far=1e-1"] == round(out["threshold"], 4)
    assert {f"far=1e-1,{c}" for c in out["by_condition"]} == set(thr) - {"far=1e-1"}
    a, b = sorted((root / "p1").iterdir())[:2]
    assert cli("verify", a, b, "--thresholds", tmp_path / "thr.json")[1]["threshold"] in thr.values()
    assert out["conditions_not_calibrated"] == [c for c in ("u-u", "m-u", "m-m") if c not in out["by_condition"]]
    copies = tmp_path / "copies"  # as `maskfr mask` lays its copies out: same names, plus an _occlusion folder
    shutil.copytree(root, copies)
    (copies / "_occlusion" / "p1").mkdir(parents=True)
    rc, out = cli("calibrate", root, copies, "--far", "0.1")
    # 4 people x 6 faces: 15 pairs each, less the 3 of a photo with its own copy; 276 - 60 impostor pairs
    assert rc == 0 and out["images"] == 24 and out["genuine_pairs"] == 48 and out["impostor_pairs"] == 216


def test_cli_os_errors_and_bad_arguments_exit_2(cli, tmp_path, capsys):
    """Errors scripts must not read as "no match" (exit 1): a file given as --identity's folder
    (NotADirectoryError), a directory as a gallery, --far outside (0, 1], --top-k 0, a folder without faces."""
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), draw_faces([(1, 20, 30, 96)]))
    gal = tmp_path / "g.npz"
    rc, out = cli("enroll", gal, img, "--identity", "x")
    assert rc == 2 and out["exit_code"] == 2 and "Not a directory" in out["error"]  # --json: failures too
    assert cli("enroll", tmp_path, img, "--identity", "x")[0] == 2
    assert cli("enroll", gal, tmp_path, "--identity", "x")[0] == 0
    assert cli("identify", gal, img, "--top-k", "0")[0] == 2
    assert cli("enroll", gal, "--identity", "x")[0] == 2  # used to be ignored, exit 0
    assert cli("bench", "--gallery-size", "0", "--seconds", "0.01")[0] == 2
    root = tmp_path / "people"
    for k in range(2):
        (root / f"p{k}").mkdir(parents=True)
        for j in range(2):
            cv2.imwrite(str(root / f"p{k}" / f"{j}.png"), draw_faces([(k + 1, 30 + 10 * j, 40, 90)], jitter=j + 1))
    for far in ("0", "-1", "2"):
        assert cli("calibrate", root, "--far", far)[0] == 2
    empty = tmp_path / "nofaces"
    for k in range(2):
        (empty / f"p{k}").mkdir(parents=True)
        cv2.imwrite(str(empty / f"p{k}" / "0.png"), draw_faces([]))
    capsys.readouterr()
    from maskfr.cli import main
    assert main(["calibrate", str(empty), "--model", str(cli.model)]) == 2
    assert "no face found" in capsys.readouterr().err
    assert main(["enroll", str(gal), "--remove", "nobody", "--model", str(cli.model)]) == 2
    assert "error: no identity 'nobody' in the gallery\n" in capsys.readouterr().err  # no KeyError quotes


def test_cli_embed_out_is_the_path_given(cli, tmp_path):
    """np.save("emb") wrote emb.npy while the report said "emb"."""
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), draw_faces([(1, 20, 30, 96)]))
    rc, out = cli("embed", img, "--out", tmp_path / "emb")
    assert rc == 0 and out["out"] == str(tmp_path / "emb") and np.load(tmp_path / "emb").shape == (1, 128)
    assert not (tmp_path / "emb.npy").exists()


def test_calibrate_json_is_valid_when_an_impostor_pair_scores_highest():
    """A mislabelled duplicate made the threshold inf, printed by --json as Infinity (not JSON)."""
    from maskfr.metrics import calibrate
    rng = np.random.default_rng(0)
    e = rng.standard_normal((6, 16)).astype(np.float32)
    e[5] = e[0]  # the same photo filed under another identity
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    r = calibrate(e, np.array([0, 0, 1, 1, 2, 2]), 1e-3)
    json.dumps(r, allow_nan=False)
    assert 1.0 <= r["threshold"] < 1.0 + 1e-6 and "impostor" in r["note"]


def test_calibrate_picks_threshold_for_far():
    from maskfr.metrics import calibrate
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 128))
    e = np.repeat(centres, 4, 0) + 0.6 * rng.standard_normal((200, 128))
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    r = calibrate(e, np.repeat(np.arange(50), 4), 1e-3)
    s = e @ e.T
    impostor = s[np.not_equal.outer(np.repeat(np.arange(50), 4), np.repeat(np.arange(50), 4))]
    assert (impostor >= r["threshold"]).mean() <= 1e-3 and r["tar"] > 0.5


def test_calibrate_per_mask_condition_and_thresholds_file(tmp_path, model):
    """Masked faces made alike (a shared component): the masked-masked pairs get their own, higher threshold, each
    condition meets the FAR on its own pairs, and the file of `calibrate -o` replaces the model's thresholds."""
    from maskfr.metrics import calibrate
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), 4)
    e = np.repeat(rng.standard_normal((60, 64)), 4, 0) + 0.6 * rng.standard_normal((240, 64))
    masked = np.arange(240) % 2 == 1
    e[masked] += 1.2 * rng.standard_normal(64)  # what every mask adds
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    r = calibrate(e, labels, 1e-2, masked=masked)
    by = r["by_condition"]
    assert set(by) == {"u-u", "m-u", "m-m"} and by["m-m"]["threshold"] > r["threshold"] > by["u-u"]["threshold"]
    s, diff = e @ e.T, np.not_equal.outer(labels, labels)
    for c, rows, cols in (("u-u", ~masked, ~masked), ("m-u", masked, ~masked), ("m-m", masked, masked)):
        imp = s[np.ix_(rows, cols)][diff[np.ix_(rows, cols)]]
        assert (imp >= by[c]["threshold"]).mean() <= 1e-2, c
    path = tmp_path / "thr.json"
    path.write_text(json.dumps({"far=1e-2": r["threshold"], **{f"far=1e-2,{c}": v["threshold"] for c, v in by.items()}}))
    rec = FaceRecognizer(model, detector=MarkerDetector(), thresholds=path)
    assert rec.threshold == r["threshold"] and rec.threshold_for(True, True) == by["m-m"]["threshold"]
    path.write_text('{"far=1e-3,m-m": 0.6}')  # no threshold for all comparisons
    with pytest.raises(ValueError, match="thr.json: expected thresholds"):
        FaceRecognizer(model, detector=MarkerDetector(), thresholds=path)


def test_cli_demo_message_without_default_model(capsys, monkeypatch, tmp_path):
    import maskfr.recognizer as r
    from maskfr.cli import main
    monkeypatch.setattr(r, "DEFAULT_MODEL", tmp_path / "missing.onnx")
    assert main(["demo"]) == 2 and "not installed" in capsys.readouterr().err


def test_demo_mask_covers_lower_face_only():
    from maskfr.align import ARCFACE_112
    from maskfr.demo import draw_mask, mask_polygon
    img = np.full((112, 112, 3), 90, np.uint8)
    out = draw_mask(img, ARCFACE_112, colour=(255, 0, 0))
    covered = out[..., 0] == 255
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = np.round(ARCFACE_112).astype(int)
    assert covered[lmy, lmx] and covered[rmy, rmx] and covered[lmy + 12, (lmx + rmx) // 2]  # mouth and chin
    assert not covered[ley, lex] and not covered[rey, rex] and not covered[ny - 3, nx]  # eyes, nose tip
    assert not covered[:int(ny)].any()
    # a tilted face gets the same mask, tilted
    c, s = np.cos(0.4), np.sin(0.4)
    rot = (ARCFACE_112 - 56) @ np.array([[c, s], [-s, c]]) + 56
    ref = (mask_polygon(ARCFACE_112) - 56) @ np.array([[c, s], [-s, c]]) + 56
    assert np.abs(mask_polygon(rot) - ref).max() <= 1.5


def test_cli_demo_without_scikit_image(model, monkeypatch, capsys):
    from maskfr.cli import main
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage -> ImportError
    assert main(["demo", "--model", str(model)]) == 2
    assert "pip install 'maskfr[demo]'" in capsys.readouterr().err


def test_cli_demo_runs_offline(model, capsys, tmp_path):
    """The public-domain astronaut photo from scikit-image, masked, against itself and a photo without a face."""
    import maskfr.recognizer as r
    from maskfr.cli import main
    pytest.importorskip("skimage")
    pytest.importorskip("maskfr.detector")
    args = [] if r.DEFAULT_MODEL.exists() else ["--model", str(model)]  # the stand-in when no model ships
    rc = main(["demo", *args, "--json", "--out", str(tmp_path / "out")])
    out = json.loads(capsys.readouterr().out)
    assert rc == (0 if out["all_correct"] else 1)
    same, no_face = out["verify"]
    assert same["expected"] == "same" and same["answer"] in ("same", "different") and -1 <= same["similarity"] <= 1
    assert no_face["answer"] == "no face" and no_face["correct"] and no_face["similarity"] is None
    assert out["face"]["score"] > 0.9 and out["masked_face"] is not None  # the drawn mask does not hide the face
    if r.MaskClassifier.load() is not None:
        assert [m["masked"] for m in out["mask_flags"]] == [False, True]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut.png", "astronaut_masked.png", "coffee.png"]
    assert cv2.imread(out["out"][1]).shape == (512, 512, 3)
    assert main(["demo", *args]) == rc  # the readable report
    text = capsys.readouterr().out
    assert "no face in coffee" in text and ("all correct" in text) == out["all_correct"]


class _AllMasked:
    """A mask classifier stand-in that calls every face masked."""
    threshold = 0.5

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones(len(x))


def test_thresholds_per_mask_condition(tmp_path):
    """Masked-masked comparisons get their own (stricter) threshold, the others theirs, when both mask flags are
    known; an unknown flag, an embedding or a threshold given by the caller fall back to one threshold."""
    thr = {"far=1e-3": 0.8, "far=1e-3,u-u": 0.7, "far=1e-3,m-u": 0.75, "far=1e-3,m-m": 0.9}
    model = make_model(tmp_path / "m.onnx", thresholds=thr)
    rec = FaceRecognizer(model, detector=MarkerDetector(), mask_classifier=_AllMasked())
    assert [rec.threshold_for(*m) for m in ((False, False), (True, False), (False, True), (True, True))] == \
        [0.7, 0.75, 0.75, 0.9]
    assert rec.threshold_for(None, True) == rec.threshold_for(True, None) == rec.threshold == 0.8
    assert FaceRecognizer(model, detector=MarkerDetector(), threshold=0.5).threshold_for(True, True) == 0.5
    pooled_only = FaceRecognizer(make_model(tmp_path / "p.onnx", thresholds={"far=1e-3": 0.8}), detector=MarkerDetector())
    assert pooled_only.threshold_for(True, True) == 0.8

    a, b = draw_faces([(1, 20, 30, 96)]), draw_faces([(1, 150, 60, 80)], jitter=3)
    assert rec.verify(a, b).threshold == 0.9  # both faces masked
    assert rec.verify(rec.embed(a)[0], b).threshold == 0.8  # an embedding: its flag is not known
    fa = rec.face(a)
    fa.masked = False
    assert rec.verify(fa, b).threshold == 0.75

    g = rec.new_gallery()
    g.add("bare", rec.embed(a), masked=False)
    hit = rec.identify(b, g)[0]
    assert hit.matches[0].masked is False and hit.threshold == 0.75 and hit.identity == "bare"
    assert rec.enroll(g, "masked", b) == 1 and g.search(rec.embed(b)[0], 2)[0][0].masked is True
    g.add("unknown", rec.embed(a))  # raw embeddings: flag not known
    assert {m.identity: m.masked for m in g.search(rec.embed(a)[0], 3)[0]}["unknown"] is None


def test_identify_accepts_when_any_template_clears_its_condition(tmp_path):
    """A masked visitor and an identity enrolled masked and bare: the masked template scores higher but under the
    masked-masked threshold, the bare one clears the masked-unmasked one: accepted (enrolling a masked photo too
    must not make a person harder to recognise)."""
    thr = {"far=1e-3": 0.8, "far=1e-3,u-u": 0.7, "far=1e-3,m-u": 0.75, "far=1e-3,m-m": 0.9}
    rec = FaceRecognizer(make_model(tmp_path / "m.onnx", thresholds=thr), detector=MarkerDetector(),
                         mask_classifier=_AllMasked())
    frame = draw_faces([(1, 20, 30, 96)])
    p = rec.embed(frame)[0]
    u = np.roll(p, 1) - (np.roll(p, 1) @ p) * p
    u /= np.linalg.norm(u)
    at = lambda c: c * p + np.sqrt(1 - c * c) * u  # noqa: E731  a template at cosine c from the probe
    g = rec.new_gallery()
    g.add("x", at(0.85), masked=True)
    hit = rec.identify(frame, g)[0]
    assert hit.identity is None and hit.threshold == 0.9
    g.add("x", at(0.8), masked=False)
    hit = rec.identify(frame, g)[0]
    assert hit.matches[0].similarity == pytest.approx(0.85, abs=1e-5) and hit.identity == "x" and hit.threshold == 0.75



def test_enrolment_names_identity_folders_without_images(tmp_path, capsys):
    from maskfr.cli_runtime import folder_images
    for rel in ("ann/a.png", "dave/2019/b.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list(folder_images(tmp_path)) == ["ann"]
    assert "dave" in capsys.readouterr().err


def test_cli_setup_errors_are_named_up_front(cli, tmp_path):
    """identify: every face would read "unknown" (exit 1, as if no one matched), so an empty gallery is a setup
    error; enroll: a gallery path in a missing folder is refused before the enrolment work, not after."""
    (tmp_path / "root" / "ann").mkdir(parents=True)
    probe = tmp_path / "root" / "ann" / "a.png"
    cv2.imwrite(str(probe), draw_faces([(3, 100, 80, 100)]))
    gal = tmp_path / "g.npz"
    assert cli("enroll", gal, tmp_path / "root")[0] == 0
    assert cli("enroll", gal, "--remove", "ann")[1]["identities"] == 0
    rc, out = cli("identify", gal, probe)
    assert rc == 2 and "holds no identities" in out["error"]
    rc, out = cli("enroll", tmp_path / "nowhere" / "g.npz", tmp_path / "root")
    assert rc == 2 and "does not exist" in out["error"]

def test_cli_verify_and_demo_use_the_threshold_of_the_mask_condition(tmp_path, monkeypatch, capsys):
    """`maskfr verify` and `maskfr demo` judge a pair as FaceRecognizer.verify does on images: by the threshold of
    both faces' mask condition, not the pooled one (they passed bare embeddings, whose flags are not known)."""
    import maskfr.recognizer as r
    from maskfr.cli import main
    thr = {"far=1e-3": 0.8, "far=1e-3,u-u": 0.7, "far=1e-3,m-u": 0.75, "far=1e-3,m-m": 0.9}
    model = make_model(tmp_path / "m.onnx", thresholds=thr)
    monkeypatch.setattr(r.MaskClassifier, "load", staticmethod(lambda *a: _AllMasked()))
    monkeypatch.setattr(r, "_default_detector", lambda threads=None, min_face=None: MarkerDetector())
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), draw_faces([(1, 20, 30, 96)]))
    cv2.imwrite(str(b), draw_faces([(1, 150, 60, 80)], jitter=3))
    main(["verify", str(a), str(b), "--model", str(model), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["masked"] == [True, True] and out["threshold"] == 0.9
    pytest.importorskip("skimage")
    monkeypatch.undo()  # the demo needs the real detector
    monkeypatch.setattr(r.MaskClassifier, "load", staticmethod(lambda *a: _AllMasked()))
    main(["demo", "--model", str(model), "--json"])
    out = json.loads(capsys.readouterr().out)
    same = out["verify"][0]
    assert same["masked"] == [True, True] and same["threshold"] == 0.9 == out["thresholds"]["m-m"]


def test_cli_bench_runs(cli):
    """Every stage, gallery search included (its stand-in gallery lacked the mask flags galleries now keep)."""
    rc, out = cli("bench", "--batch", "1", "--seconds", "0.01", "--gallery-size", "10")
    assert rc == 0 and [r["stage"] for r in out["results"]] == ["embed", "preprocess", "gallery_search"]


def test_engine_with_a_damaged_sidecar_is_refused_in_one_line(tmp_path, monkeypatch):
    """A sidecar that is JSON but not build-engine's object was an AttributeError (a list) or KeyError (keys
    missing) from deep in the loader; both now say the sidecar is damaged and how to rebuild."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    (tmp_path / "m.engine.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"m\.engine\.json is not a JSON object"):
        backends.load_runner(engine, "tensorrt")
    engine_mod = pytest.importorskip("maskfr.export.engine")
    if backends._tensorrt() is None:
        pytest.skip("no tensorrt(-rtx) package")
    monkeypatch.setattr(backends, "_cudart", lambda: object())  # never reached: the sidecar check comes first
    (tmp_path / "m.engine.json").write_text(json.dumps({"sm": 86}))
    with pytest.raises(engine_mod.EngineMismatch, match=r"m\.engine\.json is damaged.*maskfr build-engine"):
        backends.load_runner(engine, "tensorrt")


def test_none_image_says_what_gives_none(rec, tmp_path):
    """cv2.imread returns None for a file it cannot read: embed/enroll raised "'NoneType' object is not
    iterable", identify/verify "image must be (H, W) ..., got ()"."""
    g = rec.new_gallery()
    face = draw_faces([(1, 20, 30, 96)])
    for call in (lambda: load_image(None), lambda: rec.embed(None), lambda: rec.enroll(g, "a", None),
                 lambda: rec.identify(None, g), lambda: rec.verify(face, None),
                 lambda: rec.embed(cv2.imread(str(tmp_path / "missing.jpg")))):
        with pytest.raises(ImageError, match="image is None .*cv2.imread"):
            call()
