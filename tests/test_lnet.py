"""The landmark stage (maskfr.training.lnet): geometric jitter keeps points on their pixels, the
loss on known values, training learns and resumes exactly, ONNX parity, and the detector's
mapping of LNet's answer back to frame pixels."""
from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from maskfr.detector import MIRROR, MODELS_DIR, FaceDetector, _square  # noqa: E402
from maskfr.training import lnet  # noqa: E402
from maskfr.training.dlib_models import MIRROR68, five_from_68  # noqa: E402

from test_detector import public_faces  # noqa: E402


def _blobs(lm: torch.Tensor, side: int = 96) -> torch.Tensor:
    """(N, 5, side, side): channel k holds a small Gaussian blob at point k (fractions, edge coordinates)."""
    c = torch.arange(side) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    d2 = (xx - lm[..., 0, None, None] * side) ** 2 + (yy - lm[..., 1, None, None] * side) ** 2
    return 255 * torch.exp(-d2 / (2 * 1.5 ** 2))


def _centroids(img: torch.Tensor) -> torch.Tensor:
    c = torch.arange(img.shape[-1]) + 0.5
    m = img.sum((2, 3))
    return torch.stack([(img.sum(2) * c).sum(2) / m, (img.sum(3) * c).sum(2) / m], 2) / img.shape[-1]


@pytest.mark.parametrize("n,order", [(5, MIRROR), (68, MIRROR68)], ids=["5 points", "68 points"])
def test_jitter_moves_points_with_their_pixels(n: int, order) -> None:
    gen = torch.Generator().manual_seed(0)
    lm = 0.3 + 0.4 * torch.rand(16, n, 2, generator=gen)
    views, pts = lnet.jitter(_blobs(lm), lm, gen)
    assert views.shape == (16, n, lnet.INPUT, lnet.INPUT)
    found = _centroids(views)  # channel k: the blob of original point k
    plain = (found - pts).norm(dim=2).max(1).values
    mirrored = (found[:, order] - pts).norm(dim=2).max(1).values  # new point j came from point order[j]
    best = torch.minimum(plain, mirrored)
    assert best.max() < 0.2 / lnet.INPUT  # a fifth of a pixel
    assert (plain < mirrored).any() and (mirrored < plain).any()  # both kinds were drawn
    moved = (pts - lm).norm(dim=2).mean()
    assert moved > 0.01  # and the views really were jittered


def test_prepared_face_points_sit_on_their_pixels() -> None:
    """``mtcnn prepare``'s face crops: a bright pixel at each of the 5 points (frame pixel centres) is
    found at ``face_lm`` (edge coordinates of the crop), so no half-pixel bias enters training."""
    from maskfr.training.mtcnn import FACE_SIDE, _landmark_faces
    five = np.array([[80, 84], [104, 83], [92, 98], [82, 110], [103, 111]], np.float32)
    box = np.array([60.0, 62.0, 124.0, 122.0])  # 64 wide: the crop is 96 frame pixels, one per crop pixel
    lm68 = np.tile(five, (14, 1))[:68]  # the 68 points go the same way (here: the five, repeated)
    centroids = []
    for x, y in five:
        rgb = np.zeros((200, 200, 3), np.uint8)
        rgb[int(y), int(x)] = 255
        face = _landmark_faces(rgb, [(box, five, lm68)])["face"][0, :, :, 0].astype(np.float64)
        c = np.arange(FACE_SIDE) + 0.5
        centroids.append([(face.sum(0) * c).sum() / face.sum(), (face.sum(1) * c).sum() / face.sum()])
    out = _landmark_faces(np.zeros((200, 200, 3), np.uint8), [(box, five, lm68), (None, five, lm68)])
    assert out["face"].shape[0] == 1  # a face without a teacher box is left out
    assert np.abs(np.array(centroids) / FACE_SIDE - out["face_lm"][0]).max() < 0.01 / FACE_SIDE
    np.testing.assert_allclose(out["face_lm68"][0], np.tile(out["face_lm"][0], (14, 1))[:68])


def test_point_loss_known_values() -> None:
    target = torch.zeros(2, 5, 2)
    pred = torch.zeros(2, 10)
    pred[0, :5] = 0.3   # x off by 0.3 ...
    pred[0, 5:] = 0.4   # ... and y by 0.4: 0.5 per point
    assert lnet.point_loss(pred, target).item() == pytest.approx(0.25)  # sample 2 is exact


def test_68_points_loss_and_five_of_them() -> None:
    lm68 = np.random.default_rng(0).uniform(0.2, 0.8, (3, 68, 2)).astype(np.float32)
    np.testing.assert_allclose(lnet.five_of(torch.from_numpy(lm68)).numpy(), np.stack([five_from_68(m) for m in lm68]),
                               atol=1e-6)
    target = torch.from_numpy(lm68)
    pred = torch.cat([target[..., 0] + 0.3, target[..., 1] + 0.4], 1)  # every point 0.5 away, the five too
    assert lnet.point_loss(pred, target).item() == pytest.approx(1.0)  # 68 points + their five, equal weights
    pred = torch.cat([target[..., 0], target[..., 1]], 1)
    pred[:, 0] += 0.6  # jaw point 0 only: 0.6 / 68 on the 68, nothing on the five
    assert lnet.point_loss(pred, target).item() == pytest.approx(0.6 / 68, rel=1e-4)


@pytest.mark.parametrize("hidden", [128, 512])  # another head, and the packaged one's width
def test_68_point_net_exports_five_points(tmp_path: Path, hidden: int) -> None:
    """Trained on 68 points (from a packaged 5-point file's layers), exported with the 5-point contract."""
    import onnxruntime as ort
    faces = np.random.default_rng(0).integers(0, 255, (16, 96, 96, 3), dtype=np.uint8)
    lm68 = np.random.default_rng(1).uniform(0.3, 0.7, (16, 68, 2)).astype(np.float32)
    packaged = lnet.from_onnx(MODELS_DIR / "mtcnn_lnet.onnx")
    net = lnet.train(faces, lm68, epochs=1, batch=8, out_dir=tmp_path, init=MODELS_DIR / "mtcnn_lnet.onnx",
                     hidden=hidden)
    assert net.head[3].out_features == 136 and net.head[1].out_features == hidden
    # the conv layers start from the packaged file (its BatchNorm statistics stay frozen, so they are unchanged)
    assert torch.equal(net.features[0][1].running_var, packaged.features[0][1].running_var)
    path = lnet.export_onnx(net, tmp_path / "lnet68.onnx")
    x = torch.randn(3, 3, lnet.INPUT, lnet.INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = lnet.five_of(net.eval()(x).view(3, 2, 68).transpose(1, 2))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, torch.cat([want[..., 0], want[..., 1]], 1).numpy(), atol=1e-4)


def test_soft_argmax_on_known_maps() -> None:
    """A map peaked at one cell answers that cell's centre (x's then y's, fractions); a flat map the middle."""
    head = lnet.SoftArgmax(4, 2, 4, grid=16)
    maps = torch.zeros(1, 2, 16, 16)
    maps[0, 0, 3, 12] = 100.0  # point 0 at row 3, column 12
    head.maps = torch.nn.Identity()
    np.testing.assert_allclose(head(maps).numpy(), [[12.5 / 16, 0.5, 3.5 / 16, 0.5]], atol=1e-6)


def test_heatmap_net_trains_from_the_packaged_convs_and_exports(tmp_path: Path) -> None:
    """``heatmap=True`` keeps the packaged file's convs up to 8x8 (their folded BatchNorms frozen) under a fresh
    soft-argmax head whose BatchNorms do learn their statistics; the ONNX file keeps the (N, 10) contract."""
    import onnxruntime as ort
    faces, lm = _toy_faces(16)
    packaged = lnet.from_onnx(MODELS_DIR / "mtcnn_lnet.onnx")
    net = lnet.train(faces, lm, epochs=1, batch=8, out_dir=tmp_path, init=MODELS_DIR / "mtcnn_lnet.onnx", heatmap=True)
    assert isinstance(net.head, lnet.SoftArgmax) and len(net.features) == 5
    assert torch.equal(net.features[4][1].running_var, packaged.features[4][1].running_var)
    assert not torch.equal(net.head.maps[0][1].running_var, torch.ones_like(net.head.maps[0][1].running_var))
    path = lnet.export_onnx(net, tmp_path / "hm.onnx")
    x = torch.randn(3, 3, lnet.INPUT, lnet.INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == (3, 10) and np.abs(got - want).max() < 1e-4


def _toy_faces(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares on noise; the 'points' are the square's corners and centre."""
    rng = np.random.default_rng(0)
    side = 96
    faces = rng.integers(0, 60, (n, side, side, 3), dtype=np.uint8)
    lm = np.zeros((n, 5, 2), np.float32)
    for i in range(n):
        x0, y0 = rng.integers(30, 45, 2)
        faces[i, y0:y0 + 24, x0:x0 + 24] = 220
        corners = np.array([[x0, y0], [x0 + 24, y0], [x0 + 12, y0 + 12], [x0, y0 + 24], [x0 + 24, y0 + 24]])
        lm[i] = corners / side
    return faces, lm


class _Stop(Exception):
    pass


def test_train_learns_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faces, lm = _toy_faces()
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float()

    def error(net: lnet.LNet) -> float:
        views, pts = lnet.jitter(x, torch.from_numpy(lm), torch.Generator().manual_seed(99), rotate=0, scale=0,
                                 shift=0)
        with torch.no_grad():
            return lnet.point_loss(net.eval()((views - 127.5) / 128), pts).item()

    torch.manual_seed(0)
    before = error(lnet.LNet(hidden=128))  # a small head: the toy is learnt in 3 epochs
    straight = lnet.train(faces, lm, epochs=3, batch=16, hidden=128, out_dir=tmp_path / "a")
    assert error(straight) < 0.7 * before
    replace = pathlib.Path.replace

    def replace_then_stop(self, target):  # killed right after its first checkpoint ...
        replace(self, target)
        raise _Stop

    monkeypatch.setattr(pathlib.Path, "replace", replace_then_stop)
    with pytest.raises(_Stop):
        lnet.train(faces, lm, epochs=3, batch=16, hidden=128, out_dir=tmp_path / "b")
    monkeypatch.setattr(pathlib.Path, "replace", replace)
    assert torch.load(tmp_path / "b" / "lnet.pt", weights_only=True)["epoch"] == 1
    resumed = lnet.train(faces, lm, epochs=3, batch=16, hidden=128, out_dir=tmp_path / "b")  # ... and carried on
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("size", [lnet.INPUT, 112])
def test_onnx_parity(tmp_path: Path, size: int) -> None:
    """Any input size exports (a 112x112 net gets one more stride-2 block: the head still sees 4x4) and
    reads back from its file at that size."""
    import onnxruntime as ort
    torch.manual_seed(0)
    net = lnet.LNet(size=size).eval()
    assert net.features(torch.zeros(1, 3, size, size)).shape[2:] == (4, 4)
    for m in net.modules():  # non-trivial BatchNorm statistics, so folding them is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = lnet.export_onnx(net, tmp_path / "lnet.onnx")
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == (3, 10) and np.abs(got - want).max() < 1e-4
    assert lnet.from_onnx(path).size == size


def test_from_onnx_restores_the_packaged_net_and_trains_on_it(tmp_path: Path) -> None:
    """The packaged LNet read back from ONNX answers as the file does, and training on from it moves the
    weights but never the folded BatchNorms' frozen statistics."""
    import onnxruntime as ort
    x = torch.randn(4, 3, lnet.INPUT, lnet.INPUT, generator=torch.Generator().manual_seed(2))
    path = MODELS_DIR / "mtcnn_lnet.onnx"
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    net = lnet.from_onnx(path)
    with torch.no_grad():
        assert np.abs(lnet.answer(net).eval()(x).numpy() - want).max() < 1e-4
    faces, lm = _toy_faces()
    trained = lnet.train(faces, lm, epochs=1, batch=16, out_dir=tmp_path, init=path)
    bn = trained.features[0][1]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.allclose(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps))
    assert not torch.equal(trained.features[0][0].weight, net.features[0][0].weight)
    big = np.zeros((4, 168, 168, 3), np.uint8)  # crops for a 112x112 net: the 64x64 file can't start it
    with pytest.raises(ValueError, match="takes 64x64 crops, these data make 112x112"):
        lnet.train(big, lm[:4], epochs=1, out_dir=tmp_path / "big", init=path)


@pytest.mark.parametrize("size", [lnet.INPUT, 112])
def test_detector_maps_lnet_points_to_frame_pixels(tmp_path: Path, size: int) -> None:
    """An LNet that always answers the same fractions: the detector averages them with their mirror
    image (the answer on the mirrored crop, mapped back) and places the result on the squared final
    box (edge coordinates: fraction f of a box from x0 of side s is x0 + f s - 0.5). It cuts the
    crops at the size the file takes."""
    frac = np.array([0.32, 0.7, 0.52, 0.35, 0.66, 0.4, 0.42, 0.55, 0.75, 0.77], np.float32)
    net = lnet.LNet(size=size).eval()
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.copy_(torch.from_numpy(frac - 0.5))
    models = tmp_path / "models"
    models.mkdir()
    for name in ("pnet", "rnet", "onet"):
        shutil.copy(MODELS_DIR / f"mtcnn_{name}.onnx", models)
    without = FaceDetector(backend="cpu", models_dir=models)
    lnet.export_onnx(net, models / "mtcnn_lnet.onnx")
    with_lnet = FaceDetector(backend="cpu", models_dir=models)
    assert with_lnet.has_landmark_net and not without.has_landmark_net
    frame = public_faces()[0]
    a, b = without.detect(frame), with_lnet.detect(frame)
    assert len(a) == len(b) >= 1
    for d0, d1 in zip(a, b):
        assert np.array_equal(d0.box, d1.box) and d0.score == d1.score  # only the points change
        sq = _square(d1.box[None].astype(np.float64))[0]
        f = frac.reshape(2, 5).T
        f = (f + np.stack([1 - f[MIRROR, 0], f[MIRROR, 1]], 1)) / 2
        want = sq[:2] + f * (sq[2:] - sq[:2]) - 0.5
        assert np.allclose(d1.landmarks, want, atol=1e-3)


def test_a_foreign_init_checkpoint_is_named(tmp_path: Path) -> None:
    """``--init`` with a checkpoint of another trainer was a bare KeyError ('net')."""
    init = tmp_path / "other.pt"
    torch.save({"model": {}}, init)
    faces, lm = np.zeros((4, 96, 96, 3), np.uint8), np.zeros((4, 5, 2), np.float32)
    with pytest.raises(ValueError, match=f"checkpoint {init} is not one this trainer wrote .*lacks net"):
        lnet.train(faces, lm, epochs=1, out_dir=tmp_path / "ck", init=init)
