"""MTCNN fine-tuning pieces: mirrored targets follow the pixels, grey crops, the loss terms, a tiny fine-tuning
run that lowers the loss and resumes from its checkpoint exactly, and camera-degraded data preparation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maskfr.detector import MODELS_DIR, to_net_input  # noqa: E402
from maskfr.training import mtcnn  # noqa: E402


def test_mirror_moves_landmarks_with_the_pixels() -> None:
    """Mark each of the 5 points with its own value; after mirroring, every (re-ordered) point still
    sits on the pixel that carries the value of the point it now names (left/right swapped)."""
    side = 48  # a crop of 48 frame pixels: fraction f is pixel f * 48
    pts = np.array([[14, 18], [33, 17], [24, 27], [17, 36], [31, 37]])
    crop = np.zeros((1, side, side, 3), np.uint8)
    for k, (x, y) in enumerate(pts):
        crop[0, y, x] = 40 * (k + 1)
    lm = torch.tensor(np.r_[pts[:, 0], pts[:, 1]][None] / side, dtype=torch.float32)
    reg = torch.tensor([[0.1, -0.05, -0.2, 0.15]])
    xb, reg2, lm2 = mtcnn._mirror(crop, reg, lm, torch.tensor([float(side)]), np.array([True]))
    swapped = [1, 0, 2, 4, 3]  # the new left eye is the old right eye, and so on
    for k in range(5):
        x, y = np.round(lm2[0, k].item() * side), np.round(lm2[0, 5 + k].item() * side)
        assert xb[0, int(y), int(x), 0] == 40 * (swapped[k] + 1)
    assert np.allclose(reg2.numpy(), [[0.2, -0.05, -0.1, 0.15]])  # box edges swap sides
    same = mtcnn._mirror(crop, reg, lm, torch.tensor([float(side)]), np.array([False]))
    assert np.array_equal(same[0], crop) and torch.equal(same[2], lm)


def test_grey_crops_are_luma_and_only_the_flagged_ones() -> None:
    import cv2
    x = np.random.default_rng(0).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    which = np.array([True, False, True, True, False, False])
    g = mtcnn._grey(x, which)
    assert np.array_equal(g[~which], x[~which]) and g.dtype == np.uint8
    assert all(np.array_equal(g[which][..., 0], g[which][..., c]) for c in (1, 2))
    np.testing.assert_array_equal(g[which][..., 0], np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in x[which]]))


def test_loss_terms_on_known_values() -> None:
    """Classification on positives and negatives only; box and landmarks on positives and parts only."""
    label = torch.tensor([mtcnn.POS, mtcnn.NEG, mtcnn.PART])
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, -5.0]])  # the part's logits must not count
    reg, lm = torch.zeros(3, 4), torch.zeros(3, 10)
    out_reg = torch.tensor([[0.1] * 4, [9.0] * 4, [0.1] * 4])  # the negative's box must not count
    out_lm = torch.tensor([[0.2] * 10, [9.0] * 10, [0.0] * 10])
    terms = mtcnn._loss("onet", (logits, out_reg, out_lm), label, reg, lm)
    assert terms["cls"].item() == pytest.approx(np.log(2))
    assert terms["box"].item() == pytest.approx(mtcnn.LOSS_WEIGHTS["box"] * 0.01)
    assert terms["landmarks"].item() == pytest.approx(mtcnn.LOSS_WEIGHTS["landmarks"] * 0.02)
    assert "landmarks" not in mtcnn._loss("rnet", (logits, out_reg), label, reg, lm)


def _toy_data(path: Path, n: int = 96) -> None:
    """Bright blobs are faces (POS, centred targets), dark noise is background (NEG)."""
    rng = np.random.default_rng(0)
    label = np.where(np.arange(n) % 2 == 0, mtcnn.POS, mtcnn.NEG).astype(np.int8)
    crops = {}
    for s in mtcnn.SIZES.values():
        c = rng.integers(0, 60, (n, s, s, 3), dtype=np.uint8)
        c[label == mtcnn.POS, s // 4:3 * s // 4, s // 4:3 * s // 4] = 220
        crops[f"crop{s}"] = c
    lm = np.tile(np.r_[[0.3, 0.7, 0.5, 0.35, 0.65], [0.35, 0.35, 0.5, 0.7, 0.7]], (n, 1)).astype(np.float32)
    np.savez(path / "0000000.npz", **crops, label=label, reg=np.zeros((n, 4), np.float32), lm=lm,
             side=np.full(n, 48, np.float32))


class _Stop(Exception):
    pass


def test_finetune_learns_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _toy_data(data)
    z = np.load(data / "0000000.npz")
    x = torch.from_numpy(to_net_input(z["crop48"]))
    label, reg, lm = (torch.from_numpy(z[k]) for k in ("label", "reg", "lm"))

    def loss(net: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(sum(mtcnn._loss("onet", net.eval()(x), label.long(), reg, lm).values()))

    before = loss(mtcnn.from_onnx(MODELS_DIR / "mtcnn_onet.onnx", "onet"))
    kw = dict(name="onet", lr=1e-3, batch=32, init_dir=MODELS_DIR, p_grey=0.5)  # grey crops resume exactly too
    straight = mtcnn.finetune(data, epochs=3, out_dir=tmp_path / "a", **kw)
    assert loss(straight) < before
    replace = Path.replace

    def replace_then_stop(self, target):  # killed right after its first checkpoint lands ...
        replace(self, target)
        raise _Stop

    monkeypatch.setattr(Path, "replace", replace_then_stop)
    with pytest.raises(_Stop):
        mtcnn.finetune(data, epochs=3, out_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(Path, "replace", replace)
    resumed = mtcnn.finetune(data, epochs=3, out_dir=tmp_path / "b", **kw)  # ... and carried on
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_prepare_degrades_copies_but_keeps_their_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prepare(degrade=1)``: every copy is camera-degraded (softer pixels), while the points it trains on
    still come from the sharp original (dlib on the public astronaut portrait; packaged nets as the teacher)."""
    import cv2
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from test_detector import public_faces
    (tmp_path / "orig").symlink_to(MODELS_DIR)
    monkeypatch.setattr(mtcnn, "CACHE", tmp_path)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), public_faces()[0])
    sharp, soft = (np.load(mtcnn.prepare([str(path)], tmp_path / name, None, masked_copies=1, degrade=d)
                           / "0000000.npz") for name, d in (("sharp", 0.0), ("soft", 1.0)))
    assert len(sharp["face"]) == len(soft["face"]) == 2  # one face, unmasked and masked
    np.testing.assert_array_equal(sharp["face_lm"], soft["face_lm"])

    def detail(faces: np.ndarray) -> float:
        return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in faces]))

    assert detail(soft["face"]) < 0.5 * detail(sharp["face"])  # measured: 277 against 1244


def test_a_damaged_checkpoint_is_named_and_kept(tmp_path: Path) -> None:
    """Resuming from a truncated per-epoch checkpoint was a torch zip-error traceback naming no file."""
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    ckpt = tmp_path / "pnet.pt"
    mtcnn.save_checkpoint(ckpt, net, opt, sched, 2)
    assert mtcnn.resume(ckpt, net, opt, sched) == 2
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} is damaged"):
        mtcnn.resume(ckpt, net, opt, sched)
    assert len(ckpt.read_bytes()) == 100


@pytest.mark.parametrize("part", ["1", "2/2", "a/b", "1/"])
def test_prepare_part_is_checked(part, capsys):
    from maskfr.training.mtcnn import main
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--part", part])
    assert e.value.code == 2 and "expected k/K" in capsys.readouterr().err
