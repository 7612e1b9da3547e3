"""The dlib teacher port: format reader, architecture, chip extraction and parity with dlib."""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from maskfr.training.dlib_format import DlibFormatError, Reader, read_network  # noqa: E402
from maskfr.training.teacher import DlibResNet, add_prev  # noqa: E402

# ---------------------------------------------------------------- an independent encoder, from dlib's spec


def enc_int(v: int) -> bytes:
    """Control byte (size | 0x80 if negative) then little-endian magnitude bytes."""
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def enc_float(v: float) -> bytes:
    """float_details of a float32: 24-bit mantissa, zero low bytes shifted off, then (mantissa, exponent)."""
    if math.isinf(v):
        return enc_int(0) + enc_int(32000 if v > 0 else 32001)
    frac, e = math.frexp(float(np.float32(v)))
    man, exp = int(frac * 2**24), e - 24
    for _ in range(8):
        if man & 0xFF:
            break
        man >>= 8
        exp += 8
    return enc_int(man) + enc_int(exp)


def enc_str(s: str) -> bytes:
    return enc_int(len(s)) + s.encode()


def enc_tensor(a, version: int = 2) -> bytes:
    a = np.asarray(a, np.float32)
    shape = list(a.shape) + [1] * (4 - a.ndim)
    head = enc_int(version) + b"".join(enc_int(s) for s in shape)
    body = a.astype("<f4").tobytes() if version == 2 else b"".join(enc_float(x) for x in a.ravel())
    return head + body


def enc_alias(*shape: int) -> bytes:
    return enc_int(1) + b"".join(enc_int(s) for s in shape)


EMPTY_STATE = b"110" + enc_tensor(np.zeros((0,))) * 3  # flags, x_grad, cached_output, params_grad


# ---------------------------------------------------------------- primitive decoding


@pytest.mark.parametrize("raw, value", [
    (b"\x01\x80\x81\x07", 1.0),               # 0x80 * 2^-7
    (b"\x81\xa0\x81\x06", -2.5),              # -0xA0 * 2^-6
    (b"\x01\x00\x01\x28", 0.0),               # dlib writes 0 as mantissa 0, exponent 40
    (b"\x03\x0a\xd7\xa3\x81\x1c", math.ldexp(0xA3D70A, -28)),  # loss_metric margin 0.04 in the real file
    (b"\x03\x62\x90\xf5\x81\x11", math.ldexp(0xF59062, -17)),  # 122.782, the red mean
    (b"\x01\x00\x02\x00\x7d", math.inf),
])
def test_float_decoding_hand_computed(raw, value):
    assert Reader(raw).float() == value
    if value == 1.0 or value == -2.5:
        assert enc_float(value) == raw  # the test's encoder agrees with the hand-computed bytes


def test_integers_and_strings():
    r = Reader(b"\x02\x80\x12" + b"\x81\x11" + b"\x01\x00" + b"\x01\x04fc_2" + b"10")
    assert (r.int(), r.int(), r.int(), r.string(), r.bool(), r.bool()) == (4736, -17, 0, "fc_2", True, False)
    with pytest.raises(DlibFormatError):
        Reader(b"\x01").int()


# ---------------------------------------------------------------- a tiny hand-written network


def tiny_network() -> tuple[bytes, dict]:
    w = np.array([0.5, -1.25], np.float32)       # con: 2 filters of 1x1 over 1 channel
    b = np.array([0.125, 3.0], np.float32)
    gamma, beta = np.array([2.0, -0.5], np.float32), np.array([1.0, 0.0], np.float32)
    fc = np.arange(6, dtype=np.float32).reshape(2, 3) / 8  # (in=2, out=3)
    con = (enc_str("con_4") + enc_tensor(np.r_[w, b], version=1) + enc_int(2) + enc_int(1) + enc_int(1)
           + enc_int(1) + enc_int(1) + enc_int(0) + enc_int(0) + enc_alias(2, 1, 1, 1) + enc_alias(1, 2, 1, 1)
           + enc_float(1) + enc_float(1) + enc_float(1) + enc_float(0))
    affine = enc_str("affine_") + enc_tensor(np.r_[gamma, beta]) + enc_alias(1, 2, 1, 1) * 2 + enc_int(0)
    fcrec = (enc_str("fc_2") + enc_int(3) + enc_int(2) + enc_tensor(fc.ravel()) + enc_alias(2, 3, 1, 1)
             + enc_alias(0, 0, 0, 0) + enc_int(1) + enc_float(1) + enc_float(1) + enc_float(1) + enc_float(0))
    stream = (enc_int(1) + enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)  # add_loss_layer
              + enc_int(2) + enc_int(2) + enc_int(1) + enc_int(3)  # fc, affine, tag, layer over input
              + enc_str("input_rgb_image_sized") + enc_float(122.782) + enc_float(117.001) + enc_float(104.298)
              + enc_int(150) + enc_int(150)
              + con + EMPTY_STATE + enc_int(1)  # + sample expansion factor (version 3)
              + affine + EMPTY_STATE + fcrec + EMPTY_STATE)
    return stream, {"w": w, "b": b, "gamma": gamma, "beta": beta, "fc": fc}


def test_reader_on_hand_written_stream():
    stream, v = tiny_network()
    layers = read_network(stream)
    assert [l.kind for l in layers] == ["input_rgb_image_sized", "con", "tag_or_skip", "affine", "fc_no_bias",
                                        "loss_metric"]
    inp, con, _, aff, fc, loss = layers
    assert inp.attrs["nr"] == inp.attrs["nc"] == 150
    assert inp.attrs["avg_red"] == pytest.approx(122.782, abs=1e-5)
    np.testing.assert_array_equal(con.params["weight"].ravel(), v["w"])
    np.testing.assert_array_equal(con.params["bias"], v["b"])
    assert (con.attrs["num_filters"], con.attrs["stride_y"], con.attrs["padding_x"]) == (2, 1, 0)
    np.testing.assert_array_equal(aff.params["gamma"], v["gamma"])
    np.testing.assert_array_equal(aff.params["beta"], v["beta"])
    np.testing.assert_array_equal(fc.params["weight"], v["fc"])
    assert "bias" not in fc.params
    assert loss.attrs == {"margin": pytest.approx(0.04), "dist_thresh": pytest.approx(0.6)}


def test_reader_rejects_truncated_and_trailing_bytes():
    stream, _ = tiny_network()
    with pytest.raises(DlibFormatError):
        read_network(stream[:-5])
    with pytest.raises(DlibFormatError, match="trailing"):
        read_network(stream + b"\x01\x00")


# ---------------------------------------------------------------- architecture


def test_architecture_shapes():
    net = DlibResNet().eval()
    sizes = []
    for b in net.blocks:
        b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 150, 150))
    assert out.shape == (2, 128)
    assert sizes[0] == (32, 35, 35)
    # down-sampling blocks: 35 -> 17 -> 8 -> 4 (stride path 3x3 padded to the 4x4 shortcut) -> 2
    assert [s for s, b in zip(sizes, net.blocks) if b.down] == [(64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
    assert len(net.blocks) == 14


def test_add_prev_pads_top_left():
    a = torch.ones(1, 2, 1, 1)
    b = torch.full((1, 1, 2, 2), 10.0)
    out = add_prev(a, b)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 0].tolist() == [[11, 10], [10, 10]]
    assert out[0, 1].tolist() == [[1, 0], [0, 0]]
    # channels are padded by an identity-embedding 1x1 conv: exactly the zero padding it replaces
    a, b = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 4, 4)
    assert torch.equal(add_prev(a, b), F.pad(a, (0, 1, 0, 1)) + F.pad(b, (0, 0, 0, 0, 0, 4)))


# ---------------------------------------------------------------- parity with real dlib on real faces


def _data_root() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("MASKFR_DATA"), here / ".." / "shared" / "data"):
        if cand and (Path(cand) / "lfw").is_dir():
            return Path(cand)
    return None


@pytest.mark.data
def test_parity_with_dlib_on_real_faces():
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models not installed")
    root = _data_root()
    if root is None:
        pytest.skip("LFW data not present")
    import cv2
    import dlib

    from maskfr.training.dlib_models import hog_detector, shape_predictor
    from maskfr.training.teacher import DlibTeacher, dlib_chip, dlib_reference_embeddings

    paths = sorted((root / "lfw").glob("images_*/*/*.jpg"))[::997]
    theirs, ours = [], []
    for p in paths:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        dets = hog_detector()(rgb, 1)
        if not dets:
            continue
        shape = shape_predictor(68)(rgb, dets[0])
        theirs.append(np.asarray(dlib.get_face_chip(rgb, shape, 150, 0.25)))
        ours.append(dlib_chip(rgb, np.array([[q.x, q.y] for q in shape.parts()])))
        if len(theirs) == 5:
            break
    assert len(theirs) == 5
    theirs, ours = np.stack(theirs), np.stack(ours)
    np.testing.assert_array_equal(ours, theirs)
    ref, got = dlib_reference_embeddings(theirs), DlibTeacher()(theirs)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.9999
    assert np.linalg.norm(ref - got, axis=1).max() <= 1e-3


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models not installed")
    from maskfr.export.teacher_onnx import export_teacher
    from maskfr.training.teacher import load_dlib_resnet

    sess = ort.InferenceSession(export_teacher(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert "raw RGB 0..255" in meta["maskfr.input"]
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 150, 150)).astype(np.float32)
    got = sess.run(None, {"input": x})[0]
    net = load_dlib_resnet()
    with torch.no_grad():
        want = net(net.normalize(torch.from_numpy(x))).numpy()
    assert got.shape == (3, 128)
    np.testing.assert_allclose(got, want, atol=1e-4)
