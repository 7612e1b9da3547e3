"""Export chain on a random-init student: ONNX (+metadata, parity), golden file, FP16/INT8 QDQ,
TensorRT-RTX ahead-of-time engines and sidecars, Triton config, CLI wiring. No data needed."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from maskfr.align import align_face  # noqa: E402
from maskfr.export import onnx_export as ox  # noqa: E402
from conftest import draw_face, face_landmarks  # noqa: E402

HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def faces(n: int = 8) -> np.ndarray:
    """Aligned crops of drawn faces (varied pose, scale, colours), half with a grey 'mask' drawn on."""
    out = []
    for i in range(n):
        lm = face_landmarks(100 + 3 * i, 95 - 2 * i, 1.0 + 0.05 * (i % 3), angle=0.05 * (i - n / 2))
        img = draw_face(lm, seed=i)
        if i % 2:
            img[int(lm[29, 1]):int(lm[8, 1]), int(lm[2, 0]):int(lm[14, 0])] = (90, 110, 140)
        five = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
        out.append(align_face(img, five))
    return np.stack(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """FP32 export, FP16 and INT8 (TensorRT and CPU flavours) of one random student, made once."""
    from maskfr.export.quantize import to_fp16, to_int8
    from maskfr.training.models import create_student

    torch.manual_seed(0)
    student = create_student(pretrained=False)
    d = tmp_path_factory.mktemp("export")
    f = faces()
    rep = ox.export_onnx(student, d / "m.onnx", faces=f, simplify=False, verbose=False,
                         metadata={"model_version": "test-1", "recommended_thresholds": json.dumps({"far=1e-3": 0.4})})
    return {"dir": d, "faces": f, "student": student, "report": rep, "fp32": d / "m.onnx",
            "fp16": to_fp16(d / "m.onnx", d / "m.fp16.onnx"),
            "int8": to_int8(d / "m.onnx", d / "m.int8.onnx", f),
            "int8cpu": to_int8(d / "m.onnx", d / "m.int8-cpu.onnx", f, target="cpu")}


def test_export_checker_metadata_and_parity(models):
    proto = onnx.load(models["fp32"])
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["embedding"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert proto.opset_import[0].version == 17
    meta = ox.read_metadata(models["fp32"])
    assert meta["colour_order"] == "RGB" and float(meta["mean"]) == 127.5 and float(meta["std"]) == 127.5
    assert json.loads(meta["input_size"]) == [112, 112] and meta["embedding_size"] == "128"
    assert np.allclose(json.loads(meta["alignment_template"]), ox.ARCFACE_112, atol=1e-4)
    assert json.loads(meta["recommended_thresholds"]) == {"far=1e-3": 0.4} and meta["model_version"] == "test-1"
    assert "training_data" in meta
    par = models["report"]["parity"]
    assert par["passed"] and par["min_cosine"] >= ox.MIN_COSINE
    # any batch size, unit-norm output, same as torch
    sess = ox.ort_session(models["fp32"])
    for n in (1, 5):
        emb = ox.ort_embed(sess, models["faces"][:n])
        assert emb.shape == (n, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    ref = ox.torch_embed(models["student"], models["faces"])
    assert ox.compare(ref, ox.ort_embed(sess, models["faces"]), verbose=False)["passed"]


def _affine_conv_model(pads: int) -> "onnx.ModelProto":
    """x -> x * a + b (per channel) -> Conv 3x3 with ``pads``: the pattern fold_input_affine looks for."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "a": rng.uniform(0.5, 2, (1, 3, 1, 1)), "b": rng.normal(0, 1, (1, 3, 1, 1)),
        "w": rng.normal(0, 1, (4, 3, 3, 3)), "wb": rng.normal(0, 1, 4)}.items()]
    nodes = [helper.make_node("Mul", ["x", "a"], ["xa"], name="mul"),
             helper.make_node("Add", ["xa", "b"], ["xb"], name="add"),
             helper.make_node("Conv", ["xb", "w", "wb"], ["y"], name="conv", pads=[pads] * 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, None, None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("pads", [0, 1])
def test_fold_input_affine_is_exact_and_skips_padded_convs(tmp_path, pads):
    import onnxruntime as ort

    proto = _affine_conv_model(pads)
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    def run(p: "onnx.ModelProto") -> np.ndarray:
        return ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(proto)
    assert ox.fold_input_affine(proto) == (1 if pads == 0 else 0)
    assert [n.op_type for n in proto.graph.node] == (["Conv"] if pads == 0 else ["Mul", "Add", "Conv"])
    onnx.checker.check_model(proto)
    np.testing.assert_allclose(run(proto), before, rtol=1e-5, atol=1e-5)


def test_export_folds_the_students_input_normalisation(models):
    assert models["report"]["folded_input_affines"] == 1
    ops = [n.op_type for n in onnx.load(models["fp32"]).graph.node]
    assert "Mul" not in ops[:ops.index("Conv")]  # the first Conv reads the padded chip directly


def test_reexport_from_onnx_keeps_weights_and_metadata(tmp_path, models):
    """A released ONNX file re-exported with this exporter: same weights (every Affine mapped back to its
    module), same function, same metadata; a foreign ONNX file is refused by name."""
    from maskfr.training.models import create_student

    torch.manual_seed(1)
    student = create_student(pretrained=False)
    with torch.no_grad():  # distinct values everywhere, so a weight mapped to the wrong module shows
        for t in list(student.parameters()) + [student.reformer.center]:
            t.add_(torch.randn_like(t) * 0.05)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    ox.export_onnx(student, a, faces=models["faces"], simplify=False, verbose=False, metadata={"model_version": "rt-1"})
    model, info = ox.load_student(a)
    assert info["metadata"]["model_version"] == "rt-1"
    for k, v in student.state_dict().items():  # the folded first conv comes back unfolded, to rounding
        if k.startswith("encoder.conv."):
            torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-5)
        else:
            assert torch.equal(model.state_dict()[k], v), k
    x = torch.from_numpy(ox.to_input(models["faces"]))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), student(x), rtol=0, atol=1e-5)
    rep = ox.export_onnx(a, b, faces=models["faces"], simplify=False, verbose=False)
    assert rep["parity"]["passed"] and rep["folded_input_affines"] == 1  # the identity affine, folded away again
    assert ox.read_metadata(b) == ox.read_metadata(a)
    assert ox.compare(ox.ort_embed(a, models["faces"]), ox.ort_embed(b, models["faces"]), verbose=False)["passed"]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(_affine_conv_model(0), foreign)
    with pytest.raises(ValueError, match="not a maskfr student ONNX file"):
        ox.load_student(foreign)


def test_export_from_checkpoint(tmp_path, models):
    ckpt = tmp_path / "final.pt"
    torch.save({"model": models["student"].state_dict(), "config": {"training_data": "CelebA subset"},
                "git_rev": "abcdef1234567890", "stage": "classifier"}, ckpt)
    model, info = ox.load_student(ckpt)
    assert info["stage"] == "classifier"
    meta = ox.default_metadata(info)
    assert meta["model_version"] == "classifier-abcdef123456" and meta["training_data"] == "CelebA subset"
    x = torch.from_numpy(ox.to_input(models["faces"][:2]))
    with torch.inference_mode():
        assert torch.allclose(model(x), models["student"](x))


def test_golden_file(models, tmp_path):
    from maskfr.export.golden import check_golden, golden_path, write_golden

    path = write_golden(models["fp32"], models["faces"])
    assert path == golden_path(models["fp32"]) and path.name == "m.golden.npz"
    rep = check_golden(models["fp32"])
    assert rep["passed"] and rep["same_model"] and rep["min_cosine"] > 0.99999
    # the variants are checked against the FP32 golden file with looser bounds
    assert check_golden(models["fp16"], path, min_cosine=0.999)["passed"]
    assert not check_golden(models["fp16"], path, min_cosine=0.999)["same_model"]
    # a wrong runtime is caught
    wrong = check_golden(models["fp32"], embed=lambda x: np.roll(ox.ort_embed(models["fp32"], x), 1, axis=1))
    assert not wrong["passed"]


def test_fp16_model(models):
    proto = onnx.load(models["fp16"])
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 IO kept
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    rep = ox.compare(ox.ort_embed(models["fp32"], models["faces"]), ox.ort_embed(models["fp16"], models["faces"]),
                     min_cosine=0.999, verbose=False)
    assert rep["passed"]


def test_int8_qdq_model_is_tensorrt_ready(models):
    from maskfr.export.quantize import qdq_summary

    proto = onnx.load(models["int8"])
    n_conv = sum(n.op_type == "Conv" for n in proto.graph.node)
    s = qdq_summary(models["int8"])
    assert s["tensorrt_ready"], s
    assert s["int32_dq"] == 0 and s["nonzero_zero_point"] == 0 and s["uint8"] == 0  # no bias DQ, symmetric int8
    assert s["per_channel_conv_weights"] == n_conv > 0 and s["per_tensor_conv_weights"] == 0
    assert ox.read_metadata(models["int8"])["colour_order"] == "RGB"  # metadata survives quantization
    ref = ox.ort_embed(models["fp32"], models["faces"])
    for key in ("int8", "int8cpu"):
        assert ox.compare(ref, ox.ort_embed(models[key], models["faces"]), min_cosine=0.98, verbose=False)["passed"]
    cpu = qdq_summary(models["int8cpu"])
    assert cpu["uint8"] > 0 and not cpu["tensorrt_ready"]  # the CPU flavour is not for TensorRT
    # CPU flavour: each ReLU folded into its producer's uint8 scale (no requantization around it);
    # symmetric int8 cannot fold it, so TensorRT's keeps them
    assert not any(n.op_type == "Relu" for n in onnx.load(models["int8cpu"]).graph.node)
    relus = [sum(n.op_type == "Relu" for n in onnx.load(models[k]).graph.node) for k in ("int8", "fp32")]
    assert relus[0] == relus[1] > 0


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install tensorrt-rtx-cu13)")
def test_engines_build_aot_and_sidecar_checks(models):
    from maskfr.export.engine import (AOT, EngineMismatch, build_engine, check_sidecar, import_trt, load_engine,
                                      sidecar_path)

    trt = import_trt("tensorrt_rtx")
    for prec in ("fp32", "fp16", "int8"):  # the precision is the ONNX's own unless asked (a default fp16 refused fp32)
        side = build_engine(models[prec], models["dir"] / f"m.{prec}.engine", precision=None if prec == "int8" else prec,
                            batch=(1, 4, 16), sm=86, flavour="tensorrt_rtx")
        on_disk = json.loads((models["dir"] / f"m.{prec}.engine.json").read_text())
        assert on_disk["precision"] == prec and on_disk["onnx_precision"] == prec and on_disk["strongly_typed"]
        assert on_disk["sm"] == 86 and on_disk["compute_capability"] == "8.6" and on_disk["gpu"] == AOT
        assert on_disk["flavour"] == "tensorrt_rtx" and on_disk["tensorrt_version"] == trt.__version__
        assert on_disk["onnx_sha256"] == ox.sha256(models[prec]) and on_disk["profile"]["batch"] == [1, 4, 16]
        assert on_disk["layers"] > 0 and side["engine_bytes"] > 0
        # the model's contract travels with the engine, so the runtime finds thresholds and version
        assert on_disk["model_metadata"] == ox.read_metadata(models[prec])
        assert json.loads(on_disk["model_metadata"]["recommended_thresholds"]) == {"far=1e-3": 0.4}
    # every ONNX node parses (a failed parse raises with the parser's errors)
    net = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, trt.Logger(trt.Logger.ERROR))
    assert parser.parse_from_file(str(models["int8"])) and parser.num_errors == 0
    # strongly typed: precision must come from the ONNX
    with pytest.raises(ValueError, match="FP16 ONNX"):
        build_engine(models["fp32"], models["dir"] / "bad.engine", precision="fp16", sm=86, flavour="tensorrt_rtx")
    with pytest.raises(ValueError, match="cannot target SM"):
        build_engine(models["fp32"], models["dir"] / "bad.engine", precision="fp32", sm=52, flavour="tensorrt_rtx")
    # mismatches refuse with the rebuild command
    eng = models["dir"] / "m.fp16.engine"
    with pytest.raises(EngineMismatch, match=r"SM86.*RTX 4090 \(SM89\).*maskfr build-engine m.fp16.onnx "
                                             r"--precision fp16 --batch 1:4:16 --sm 89"):
        check_sidecar(eng, gpu={"name": "RTX 4090", "sm": 89}, trt=trt)
    with pytest.raises(EngineMismatch, match="another ONNX"):
        check_sidecar(eng, models["fp32"], gpu={"name": "RTX 3090", "sm": 86}, trt=trt)
    assert check_sidecar(eng, models["fp16"], gpu={"name": "RTX 3090", "sm": 86}, trt=trt)["precision"] == "fp16"
    side = json.loads((models["dir"] / "m.fp16.engine.json").read_text())
    (models["dir"] / "m.fp16.engine.json").write_text(json.dumps({**side, "tensorrt_version": "0.9"}))
    with pytest.raises(EngineMismatch, match="built with tensorrt_rtx 0.9"):
        check_sidecar(eng, gpu={"name": "RTX 3090", "sm": 86}, trt=trt)
    (models["dir"] / "m.fp16.engine.json").write_text(json.dumps(side))
    with pytest.raises(EngineMismatch, match="no sidecar"):
        check_sidecar(models["dir"] / "missing.engine")
    sidecar_path(models["dir"] / "damaged.engine").write_text('{"flavour": ')
    with pytest.raises(EngineMismatch, match="damaged.engine.json is damaged"):
        check_sidecar(models["dir"] / "damaged.engine")
    from maskfr.export.engine import current_gpu
    if current_gpu() is None:
        with pytest.raises(EngineMismatch, match="no GPU is usable here"):
            load_engine(eng, flavour="tensorrt_rtx")


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed")
def test_engines_run_on_gpu(models):
    from maskfr.backends import TensorRTRunner
    from maskfr.export.engine import build_engine, current_gpu

    if current_gpu() is None:
        pytest.skip("no CUDA GPU")
    x = ox.to_input(models["faces"])
    ref = ox.ort_embed(models["fp32"], models["faces"])
    for prec, bound in (("fp32", 0.9999), ("fp16", 0.999), ("int8", 0.98)):
        side = build_engine(models[prec], models["dir"] / f"gpu.{prec}.engine", precision=prec, batch=(1, 4, 16))
        out = TensorRTRunner(side["engine"]).infer(x)
        assert ox.compare(ref, out, min_cosine=bound, verbose=False)["passed"], prec


def test_triton_repository(models, tmp_path):
    from maskfr.export.triton import parse_config, write_repository

    (d,) = write_repository(tmp_path / "repo", models["fp32"], name="maskfr", max_batch=16)
    cfg = parse_config(d / "config.pbtxt")
    assert (d / "1" / "model.onnx").exists()
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": ["3", "112", "112"]}]
    assert cfg["output"] == [{"name": "embedding", "data_type": "TYPE_FP32", "dims": ["128"]}]
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8, 16]
    assert cfg["parameters"]["maskfr.colour_order"]["string_value"] == "RGB"
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"plan")
    plan.with_name("m.engine.json").write_text(json.dumps({"profile": {"batch": [1, 8, 32]}}))
    (t,) = write_repository(tmp_path / "repo", models["fp16"], plan=plan, include_onnx=False)
    assert parse_config(t / "config.pbtxt")["platform"] == "tensorrt_plan" and (t / "1" / "model.plan").exists()
    with pytest.raises(ValueError, match="exceeds the engine profile"):
        write_repository(tmp_path / "repo", models["fp16"], plan=plan, include_onnx=False, max_batch=64)
    (tmp_path / "bad.pbtxt").write_text('name: "x"\nmax_batch: 4\n')
    with pytest.raises(Exception, match="max_batch"):
        parse_config(tmp_path / "bad.pbtxt")


def test_cli_commands_registered():
    from maskfr.cli import build_parser

    p = build_parser()
    a = p.parse_args(["build-engine", "m.int8.onnx", "--precision", "int8", "--batch", "1:4:8", "--sm", "86"])
    assert a.precision == "int8" and a.batch == "1:4:8" and a.sm == 86
    a = p.parse_args(["quantize", "m.onnx", "--int8", "--fp16", "--calib", "c.npz"])
    assert a.int8 and a.fp16 and a.calib == "c.npz" and a.folds == "1-5"
    assert p.parse_args(["export", "final.pt", "-o", "m.onnx"]).output == "m.onnx"
    assert p.parse_args(["export-triton", "m.onnx", "--repo", "r"]).repo == "r"
    quantize = next(a for a in p._subparsers._group_actions[0].choices["quantize"]._actions if a.dest == "int8")
    assert "MODEL.int8-cpu.onnx" in quantize.help  # the file --target cpu writes


def test_golden_faces_come_from_the_public_photo():
    pytest.importorskip("skimage")
    from maskfr.export.golden import public_faces
    faces = public_faces(4)
    assert faces.shape == (4, 112, 112, 3) and faces.dtype == np.uint8
    assert not np.array_equal(faces[0], faces[1])  # the second crop carries the drawn mask
    assert np.array_equal(faces, public_faces(4))  # reproducible
    lower, upper = faces[:, 70:], faces[:, :50]
    assert np.abs(lower[1].astype(int) - lower[0]).mean() > 5 * np.abs(upper[1].astype(int) - upper[0]).mean()


def test_quantize_calibrates_on_a_folder_of_images(models, tmp_path, capsys):
    """`maskfr quantize --int8 --calib FOLDER`: faces found and aligned as the runtime does, bad files skipped."""
    pytest.importorskip("skimage")
    import cv2

    from maskfr.cli import main
    from maskfr.demo import demo_images, draw_mask
    from maskfr.detector import FaceDetector
    from maskfr.export.quantize import folder_faces, qdq_summary

    photos = demo_images()
    face = photos["astronaut"]
    lm = max(FaceDetector().detect(face), key=lambda d: d.score).landmarks
    (tmp_path / "cams" / "door").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "cams" / "door" / "a.jpg"), face)
    cv2.imwrite(str(tmp_path / "cams" / "b_masked.png"), draw_mask(face, np.asarray(lm).reshape(5, 2)))
    cv2.imwrite(str(tmp_path / "cams" / "coffee.jpg"), photos["coffee"])
    (tmp_path / "cams" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "cams" / "notes.txt").write_text("ignored")

    crops, skipped = folder_faces(tmp_path / "cams", drawn_masks=0.0)
    assert crops.shape == (2, 112, 112, 3) and crops.dtype == np.uint8
    assert skipped == {"unreadable": 1, "no_face": 1}
    drawn, _ = folder_faces(tmp_path / "cams", drawn_masks=1.0)  # same faces, same order, each with a mask drawn
    lower = np.abs(drawn.astype(int) - crops)[:, 80:].mean((1, 2, 3))
    assert np.all(np.abs(drawn.astype(int) - crops)[:, :45].mean((1, 2, 3)) < 1) and lower.max() > 5
    model = tmp_path / "m.onnx"
    model.write_bytes(models["fp32"].read_bytes())
    assert main(["quantize", str(model), "--int8", "--target", "cpu", "--calib", str(tmp_path / "cams"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # --json: stdout is the JSON report alone
    assert out["calibration_faces"] == 2 and out["calibration_skipped"] == skipped
    assert qdq_summary(tmp_path / "m.int8-cpu.onnx")["uint8"] > 0
    (tmp_path / "empty").mkdir()
    cv2.imwrite(str(tmp_path / "empty" / "coffee.jpg"), photos["coffee"])
    with pytest.raises(ValueError, match="no face found in the 1 images"):
        folder_faces(tmp_path / "empty")


def test_int8_histogram_calibration_takes_any_face_count(models, tmp_path, capsys):
    """18 faces are a batch of 16 and one of 2, which ORT's percentile calibrator could not stack; and its
    progress lines must not reach stdout (``maskfr quantize --json``)."""
    from maskfr.export.quantize import FaceCalibrationReader, qdq_summary, to_int8

    f = faces(18)
    reader = FaceCalibrationReader(f)
    batches = list(iter(reader.get_next, None))
    assert len({len(b["input"]) for b in batches}) == 1 and sum(len(b["input"]) for b in batches) == 18
    capsys.readouterr()
    to_int8(models["fp32"], tmp_path / "q.onnx", f, method="percentile")
    assert qdq_summary(tmp_path / "q.onnx")["tensorrt_ready"]
    assert capsys.readouterr().out == ""


def test_cli_names_bad_inputs_instead_of_tracebacks(models, tmp_path, capsys):
    """Not ONNX, truncated, another model's IO, a damaged checkpoint, bad option values: exit 2 and a line that
    says what is wrong, for every export command, and nothing half-written."""
    from maskfr.cli import main

    garbage, trunc, foreign = tmp_path / "g.onnx", tmp_path / "t.onnx", tmp_path / "f.onnx"
    garbage.write_bytes(b"not a model")
    trunc.write_bytes(models["fp32"].read_bytes()[:100_000])
    onnx.save(_affine_conv_model(0), foreign)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "other.pt")
    torch.save({"weights": {"x": torch.zeros(1)}}, tmp_path / "nomodel.pt")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    np.save(tmp_path / "nchw.npy", np.zeros((4, 3, 112, 112), np.float32))
    repo = tmp_path / "repo"
    cases = [(["quantize", str(models["fp32"]), "--int8", "--calib", str(tmp_path / "other.npz")],
              "not an aligned-face cache"),
             (["quantize", str(models["fp32"]), "--int8", "--calib", str(tmp_path / "nchw.npy")], "(N, 112, 112, 3)"),
             (["quantize", str(garbage), "--fp16"], "not an ONNX model"),
             (["quantize", str(trunc), "--fp16"], "not an ONNX model"),
             (["quantize", str(foreign), "--int8"], "not a maskfr face embedder"),
             (["quantize", str(models["fp32"]), "--int8", "--calib", str(tmp_path / "nope")], "--calib"),
             (["build-engine", str(garbage), "--sm", "86"], "not an ONNX model"),
             (["build-engine", str(foreign), "--sm", "86", "--precision", "fp32"], "not a maskfr face embedder"),
             (["build-engine", str(models["fp32"]), "--sm", "86", "--batch", "a:b:c"], "--batch"),
             (["build-engine", str(models["int8cpu"]), "--sm", "86", "--precision", "int8"], "CPU INT8 flavour"),
             (["build-engine", str(models["int8"]), "--sm", "86", "--precision", "int8", "-o", str(models["int8"])],
              "is the ONNX model itself"),
             (["export-triton", str(garbage), "--repo", str(repo)], "not an ONNX model"),
             (["export-triton", str(models["fp32"]), "--repo", str(repo), "--plan-only"], "--plan"),
             (["export-triton", str(models["fp32"]), "--repo", str(repo), "--plan", str(tmp_path / "no.engine")],
              "no such file"),
             (["export-triton", str(models["fp32"]), "--repo", str(repo), "--max-batch", "0"], "max_batch"),
             (["export", str(garbage), "-o", str(tmp_path / "x.onnx")], "not an ONNX model"),
             (["export", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "x.onnx")], "bad.pt is damaged"),
             (["export", str(tmp_path / "other.pt"), "-o", str(tmp_path / "x.onnx")], "not a maskfr student's"),
             (["export", str(tmp_path / "nomodel.pt"), "-o", str(tmp_path / "x.onnx")], "lacks model"),
             (["export", str(tmp_path / "bad.pt"), "--thresholds", "0.5"], "JSON object of numbers"),
             (["export", str(tmp_path / "bad.pt"), "--thresholds", str(tmp_path / "thr.json")], "--thresholds"),
             (["export", str(tmp_path / "bad.pt"), "--meta", "version"], "--meta")]
    before = models["int8"].read_bytes()
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"maskfr {argv[0]}: error:") and message in err, (argv, err)
    assert models["int8"].read_bytes() == before  # -o onto the ONNX did not overwrite it
    assert not repo.exists() and not (tmp_path / "x.onnx").exists()


def test_failed_export_keeps_the_existing_model(models, tmp_path):
    """Written next to the destination and renamed once parity holds: a failed export leaves what was there."""
    out = tmp_path / "m.onnx"
    out.write_bytes(models["fp32"].read_bytes())
    with pytest.raises(RuntimeError, match="disagrees with torch"):
        ox.export_onnx(models["student"], out, faces=models["faces"][:2], simplify=False, verbose=False,
                       min_cosine=1.5)
    assert out.read_bytes() == models["fp32"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left behind


def test_onnxslim_result_is_renamed_within_the_output_folder(models, tmp_path, monkeypatch):
    """os.replace cannot cross filesystems (a tmpfs /tmp): the slimmed candidate must live next to the model."""
    import errno
    import os
    import sys
    import types

    monkeypatch.setitem(sys.modules, "onnxslim", types.SimpleNamespace(slim=lambda proto: proto))
    real_replace = os.replace

    def one_filesystem(src, dst):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", one_filesystem)
    rep = ox.export_onnx(models["student"], tmp_path / "s.onnx", faces=models["faces"][:2], verbose=False)
    assert rep["onnxslim"]["kept"] and rep["parity"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]


def test_triton_plan_whatever_its_suffix_and_profile_checks(models, tmp_path):
    from maskfr.export.triton import parse_config, write_repository

    plan = tmp_path / "m.trt"  # an engine suffix the runtime accepts too
    plan.write_bytes(b"plan")
    o, t = write_repository(tmp_path / "repo", models["fp32"], plan=plan, kind="KIND_CPU")
    assert parse_config(t / "config.pbtxt")["platform"] == "tensorrt_plan" and (t / "1" / "model.plan").exists()
    assert not (t / "1" / "model.onnx").exists()
    # --cpu: the ONNX model on CPU instances, the plan still on the GPU (TensorRT has no CPU instances)
    assert parse_config(o / "config.pbtxt")["instance_group"][0]["kind"] == "KIND_CPU"
    assert parse_config(t / "config.pbtxt")["instance_group"][0]["kind"] == "KIND_GPU"
    # checked before anything is written: no ONNX model left without its plan
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"plan")
    eng.with_name("m.engine.json").write_text(json.dumps({"profile": {"batch": [4, 8, 32]}}))
    with pytest.raises(ValueError, match="minimum batch is 4"):
        write_repository(tmp_path / "repo2", models["fp32"], plan=eng)
    eng.with_name("m.engine.json").write_text(json.dumps({"profile": {"batch": [1, 8, 16]}}))
    with pytest.raises(ValueError, match="exceeds the engine profile"):
        write_repository(tmp_path / "repo2", models["fp32"], plan=eng)
    assert not (tmp_path / "repo2").exists()


def test_runtime_points_to_the_real_engine_command(models):
    from maskfr import backends

    with pytest.raises(backends.BackendUnavailable, match="maskfr build-engine"):
        backends.load_runner(models["fp32"], "tensorrt")


def test_quantize_refuses_a_model_that_is_already_fp16_or_int8(models, tmp_path, capsys):
    """Variants come from the FP32 export: an INT8 model quantized again ran for over ten minutes, and FP16 or
    INT8 ones came out as mixed graphs (m.fp16.int8.onnx) that nothing had checked."""
    from maskfr.cli import main
    from maskfr.export.quantize import to_fp16, to_int8

    np.save(tmp_path / "crops.npy", models["faces"])
    for key, flag in (("fp16", "--int8"), ("int8", "--fp16"), ("int8", "--int8")):
        src = tmp_path / f"m.{key}.onnx"
        src.write_bytes(models[key].read_bytes())
        assert main(["quantize", str(src), flag, "--calib", str(tmp_path / "crops.npy")]) == 2, (key, flag)
        err = capsys.readouterr().err
        assert f"already an {key.upper()} model" in err and "FP32" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops.npy", "m.fp16.onnx", "m.int8.onnx"]
    with pytest.raises(ValueError, match="already an INT8 model"):
        to_int8(models["int8"], tmp_path / "q.onnx", models["faces"])
    with pytest.raises(ValueError, match="already an FP16 model"):
        to_fp16(models["fp16"], tmp_path / "q.onnx")


def test_export_names_foreign_and_damaged_checkpoints_without_unpickling(tmp_path, capsys):
    """torch.load's own errors for such files were a traceback (an empty file), a bare number (a KeyError of
    its unpickler) or advice to turn weights_only off; and a pickled object must never run."""
    from maskfr.cli import main

    sentinel = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("junk\n")
    torch.save({"model": Payload()}, tmp_path / "objects.pt")
    for name in ("empty.pt", "text.pt", "objects.pt"):
        assert main(["export", str(tmp_path / name), "-o", str(tmp_path / "x.onnx"), "--golden", "0"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("maskfr export: error:") and f"{name} is damaged" in err, err
        assert "weights_only" not in err and "trust" not in err, err
    assert not sentinel.exists() and not (tmp_path / "x.onnx").exists()


def test_quantize_names_unreadable_calibration_files(models, tmp_path, capsys):
    """numpy's errors named neither the option nor the file (a truncated .npz was zipfile's traceback, text
    was 'pickled data', an .npy under another suffix a TypeError): each is now one line naming --calib's file."""
    from maskfr.cli import main

    np.save(tmp_path / "crops.npy", models["faces"])
    np.savez(tmp_path / "cache.npz", path=np.array(["a/a.jpg"] * 8), img112=models["faces"],
             img112_masked=models["faces"])
    npz, npy = (tmp_path / "cache.npz").read_bytes(), (tmp_path / "crops.npy").read_bytes()
    files = {"empty.npz": b"", "cut.npz": npz[:len(npz) // 2], "text.npz": b"junk\n", "crops.bin": npy,
             "empty.npy": b"", "cut.npy": npy[:60], "text.npy": b"junk\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert main(["quantize", str(models["fp32"]), "--int8", "--calib", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("maskfr quantize: error:") and f"{name}: not " in err, (name, err)
        assert "pickled" not in err, err


def test_quantize_writes_then_renames(models, tmp_path, monkeypatch):
    """A failed or interrupted quantization leaves the previous variant whole and no temporary behind."""
    from maskfr.export import quantize

    fp16, int8 = tmp_path / "m.fp16.onnx", tmp_path / "m.int8.onnx"
    fp16.write_bytes(b"previous fp16")
    int8.write_bytes(b"previous int8")
    real_save = onnx.save

    def disk_full(proto, path, *a, **k):  # half the file written, then ENOSPC
        real_save(proto, path, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        quantize.to_fp16(models["fp32"], fp16)
    monkeypatch.setattr(onnx, "save", real_save)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "_copy_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize.to_int8(models["fp32"], int8, models["faces"])
    assert fp16.read_bytes() == b"previous fp16" and int8.read_bytes() == b"previous int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fp16.onnx", "m.int8.onnx"]


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install tensorrt-rtx-cu13)")
def test_build_engine_failures_are_one_line_and_leave_nothing(models, tmp_path, capsys):
    """TensorRT's build failures (a fixed-batch ONNX against a 1:8:32 profile) and a missing TensorRT flavour
    were tracebacks; an output path that is a folder left the engine's and sidecar's temporaries behind."""
    from maskfr.cli import main

    proto = onnx.load(models["fp32"])
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, fixed)
    assert main(["build-engine", str(fixed), "--precision", "fp32", "--sm", "86", "--json"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("maskfr build-engine: error:") and "failed to build" in out.err, out.err
    assert "Traceback" not in out.err and json.loads(out.out)["exit_code"] == 2
    if importlib.util.find_spec("tensorrt") is None:
        assert main(["build-engine", str(models["fp32"]), "--precision", "fp32", "--sm", "86",
                     "--flavour", "tensorrt"]) == 2
        assert "no TensorRT found (tried tensorrt)" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    assert main(["build-engine", str(models["fp32"]), "--precision", "fp32", "--sm", "86", "-o",
                 str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "m.engine.json").mkdir()  # the sidecar cannot be replaced: found only after the build
    assert main(["build-engine", str(models["fp32"]), "--precision", "fp32", "--sm", "86", "-o",
                 str(tmp_path / "m.engine")]) == 2
    assert "m.engine.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.onnx", "m.engine.json", "out"]
    assert not any((tmp_path / "out").iterdir())


def test_triton_names_damaged_sidecars_and_refuses_tensorrt_rtx_plans(models, tmp_path):
    """The plan's sidecar gave json's message without the file, a TypeError traceback or a bare 'profile'; and a
    TensorRT-RTX engine (all a CPU machine builds) went into a repository Triton cannot load."""
    from maskfr.export.triton import write_repository

    plan = tmp_path / "m.engine"
    plan.write_bytes(b"plan")
    side = plan.with_name("m.engine.json")
    for text in ('{"profile": ', "[1, 2]", json.dumps({"sm": 86})):
        side.write_text(text)
        with pytest.raises(ValueError, match=r"m\.engine\.json.*damaged.*maskfr build-engine"):
            write_repository(tmp_path / "repo", models["fp32"], plan=plan)
    side.write_text(json.dumps({"flavour": "tensorrt_rtx", "profile": {"batch": [1, 8, 32]}}))
    with pytest.raises(ValueError, match="TensorRT-RTX.*Triton"):
        write_repository(tmp_path / "repo", models["fp32"], plan=plan)
    assert not (tmp_path / "repo").exists()


def test_export_writes_the_golden_file_then_renames_it_with_the_model(models, tmp_path, monkeypatch, capsys):
    """The golden file was written in place after the new model had been renamed into place: a failed write left
    the new model next to the previous (or a truncated) golden file. Both are now written first, then renamed."""
    import os

    from maskfr.cli import main
    from maskfr.export import golden

    ckpt = tmp_path / "final.pt"
    torch.save({"model": models["student"].state_dict()}, ckpt)
    monkeypatch.setattr(ox, "parity_faces", lambda: (models["faces"][:2], "test faces"))
    monkeypatch.setattr(golden, "public_faces", lambda n: models["faces"][:n])
    out = tmp_path / "out"
    out.mkdir()
    model, gold = out / "m.onnx", out / "m.golden.npz"
    model.write_bytes(b"previous model")
    gold.write_bytes(b"previous golden")
    real_savez = np.savez_compressed

    def disk_full(file, *args, **kwds):  # part of the file written, then ENOSPC
        real_savez(file, *args, **kwds)
        if isinstance(file, (str, os.PathLike)):
            os.truncate(file, 100)
        else:
            file.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    argv = ["export", str(ckpt), "-o", str(model), "--no-slim", "--golden", "2"]
    assert main(argv) == 2 and "No space" in capsys.readouterr().err
    assert model.read_bytes() == b"previous model" and gold.read_bytes() == b"previous golden"
    assert sorted(p.name for p in out.iterdir()) == ["m.golden.npz", "m.onnx"]  # no temporary left behind
    monkeypatch.setattr(np, "savez_compressed", real_savez)
    assert main(argv) == 0
    rep = golden.check_golden(model)
    assert rep["passed"] and rep["same_model"] and golden.read_golden(gold)["model_name"] == "m.onnx"
    assert sorted(p.name for p in out.iterdir()) == ["m.golden.npz", "m.onnx"]


def test_export_refuses_a_folder_or_an_uncreatable_folder_before_exporting(models, tmp_path, monkeypatch, capsys):
    """-o onto a folder failed only after the whole export, naming a temporary file; a folder that cannot be
    created gave errno's bare 'File exists'. Both are refused before exporting, naming the path."""
    from maskfr.cli import main

    ckpt = tmp_path / "final.pt"
    torch.save({"model": models["student"].state_dict()}, ckpt)

    def exported(*args, **kwds):
        raise AssertionError("exported before the output path was checked")

    monkeypatch.setattr(ox, "_torch_export", exported)
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("")
    for output, message in ((tmp_path / "out", "is a folder"), (tmp_path / "file" / "m.onnx", "cannot create"),
                            (tmp_path / "file" / "sub" / "m.onnx", "cannot create")):
        assert main(["export", str(ckpt), "-o", str(output), "--golden", "0"]) == 2, output
        err = capsys.readouterr().err
        assert message in err and str(output) in err and ".tmp" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "final.pt", "out"]
    assert not any((tmp_path / "out").iterdir())


def test_quantize_refuses_fewer_than_one_calibration_face(capsys):
    """-n -3 silently dropped the last three faces (a slice from the end), and -n 0 failed later with a message
    about the crops' shape: both are refused when the arguments are parsed."""
    from maskfr.cli import build_parser

    for n in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["quantize", "m.onnx", "--int8", "-n", n])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument -n" in err and "whole number >= 1" in err and repr(n) in err, err
    assert build_parser().parse_args(["quantize", "m.onnx", "--int8", "-n", "1"]).n == 1


def test_export_triton_refuses_model_names_that_are_not_one_folder(models, tmp_path):
    """--name is the model's folder in the repository: '../x' or an absolute path wrote outside it, '', '.' or
    'a/b' somewhere in it that Triton does not read as a model."""
    from maskfr.export.triton import write_repository

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    repo = tmp_path / "repo"
    for name in ("../escaped", str(tmp_path / "abs"), "a/b", "", ".", "..", "two words"):
        with pytest.raises(ValueError, match="model name"):
            write_repository(repo, models["fp32"], name=name)
        with pytest.raises(ValueError, match="model name"):
            write_repository(repo, models["fp32"], plan=plan, name=name, include_onnx=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan"]
    (d,) = write_repository(repo, models["fp32"], name="face-embed_v1.2")
    assert d == repo / "face-embed_v1.2" and (d / "1" / "model.onnx").exists()


def test_export_triton_refuses_an_empty_plan(models, tmp_path):
    """An empty --plan file went into the repository; Triton refused it only when loading the model."""
    from maskfr.export.triton import write_repository

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"")
    with pytest.raises(ValueError, match=r"m\.plan is empty"):
        write_repository(tmp_path / "repo", models["fp32"], plan=plan)
    assert not (tmp_path / "repo").exists()


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed")
def test_packaged_model_is_the_default_and_its_variants_land_here(tmp_path, monkeypatch, capsys):
    """Deploying the packaged model took its path inside the installed package, and outputs named after it
    would have been written there."""
    from maskfr.cli import main
    from maskfr.recognizer import DEFAULT_MODEL

    before = sorted(p.name for p in DEFAULT_MODEL.parent.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "--fp16"]) == 0
    assert main(["build-engine", "g2d_student.fp16.onnx", "--sm", "86", "--batch", "1:2:4"]) == 0
    assert main(["build-engine", "--sm", "86", "--batch", "1:2:4"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "g2d_student.fp16.engine", "g2d_student.fp16.engine.json", "g2d_student.fp16.onnx",
        "g2d_student.fp32.engine", "g2d_student.fp32.engine.json"]
    assert json.loads((tmp_path / "g2d_student.fp32.engine.json").read_text())["onnx_sha256"] == ox.sha256(DEFAULT_MODEL)
    assert main(["export-triton", "--repo", "repo"]) == 0 and (tmp_path / "repo/maskfr/1/model.onnx").is_file()
    assert sorted(p.name for p in DEFAULT_MODEL.parent.iterdir()) == before
