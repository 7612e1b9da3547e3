"""Seed methods: EUM with the self-restrained triplet loss, the MSE floor, and the MEER-style model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maskfr.training.eum import (EUM, EmbeddingPairs, ResidualMLP, apply, random_negatives, srt_loss, train_eum,
                                 triplet_loss)
from maskfr.training.meer import MEER, MeerEmbedder, frozen_teacher, meer_loss, train_meer
from maskfr.training.teacher import DlibResNet

T = torch.tensor


def test_srt_restrained_branch_hand_computed():
    # rows (a, p, n): ((1,0),(0,1),(-1,0)) -> d_ap=2, d_an=4, d_pn=2;  ((1,0),(1,0),(0,1)) -> 0, 2, 2
    a, p, n = T([[1.0, 0], [1, 0]]), T([[0.0, 1], [1, 0]]), T([[-1.0, 0], [0, 1]])
    # mean d_an = 3 >= mean d_pn = 2: L = mean ReLU(d_ap + m - 2)
    assert srt_loss(a, p, n, margin=2.0).item() == pytest.approx((2 + 2 - 2 + 0) / 2)  # rows: 2, 0
    assert srt_loss(a, p, n, margin=1.0).item() == pytest.approx((1 + 0) / 2)  # rows: 1, ReLU(-1)
    assert triplet_loss(a, p, n, margin=1.0).item() == pytest.approx(0.0)  # rows: ReLU(-1), ReLU(-1)


def test_srt_triplet_branch_hand_computed():
    # rows: ((0,1),(1,0),(0,1)) -> d_ap=2, d_an=0, d_pn=2;  ((1,0),(1,0),(-1,0)) -> 0, 4, 4
    a, p, n = T([[0.0, 1], [1, 0]]), T([[1.0, 0], [1, 0]]), T([[0.0, 1], [-1, 0]])
    # mean d_an = 2 < mean d_pn = 3: L = mean ReLU(d_ap + m - d_an); rows 4 and ReLU(-2)
    assert srt_loss(a, p, n, margin=2.0).item() == pytest.approx(2.0)
    assert triplet_loss(a, p, n, margin=2.0).item() == pytest.approx(2.0)


def test_random_negatives_are_other_identities():
    labels = T([0, 0, 1, 1, 2, 2, 2])
    neg = random_negatives(labels, torch.Generator().manual_seed(0))
    assert (labels[neg] != labels).all()


def test_eum_shapes_and_unit_output():
    m = EUM().eval()
    assert [type(x).__name__ for x in m.net] == ["Linear", "BatchNorm1d", "LeakyReLU"] * 3 + ["Linear", "BatchNorm1d"]
    out = m(torch.randn(5, 128))
    assert out.shape == (5, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    x = torch.nn.functional.normalize(torch.randn(3, 128), dim=1)
    assert torch.allclose(ResidualMLP()(x), x, atol=1e-6)  # the floor starts as the identity


def _generated_pairs(n_id: int = 64, per: int = 8, seed: int = 0) -> EmbeddingPairs:
    """Identities = random unit centres; 'masking' = a fixed linear distortion plus noise."""
    rng = np.random.default_rng(seed)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    labels = np.repeat(np.arange(n_id), per)
    un = unit(rng.normal(size=(n_id, 128))[labels] + 0.3 * rng.normal(size=(len(labels), 128)))
    distort = np.eye(128) + 0.5 * rng.normal(size=(128, 128)) / np.sqrt(128)
    return EmbeddingPairs(unit(un @ distort + 0.05 * rng.normal(size=un.shape)), un, labels.astype(np.int64))


@pytest.mark.parametrize("loss", ["srt", "mse"])
def test_eum_tiny_training_lowers_the_loss(loss):
    torch.set_num_threads(1)
    data = _generated_pairs()
    model = EUM() if loss == "srt" else ResidualMLP()
    hist = train_eum(model, data, loss, epochs=20, batch=64, step=10)  # the paper's optimiser, 160 steps
    assert hist[-1] < 0.9 * hist[0]
    before = float((data.masked * data.unmasked).sum(1).mean())
    after = float((apply(model, data.masked) * data.unmasked).sum(1).mean())
    assert after > before  # masked embeddings moved towards the same face's unmasked one


def test_eum_onnx_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from maskfr.training.eum import INPUT_NAME, OUTPUT_NAME, export_eum_onnx
    model = EUM()
    train_eum(model, _generated_pairs(16, 4), "srt", epochs=1, batch=32)  # non-trivial BatchNorm statistics
    path = export_eum_onnx(model, tmp_path / "eum.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME] and [o.name for o in sess.get_outputs()] == [OUTPUT_NAME]
    x = np.random.default_rng(1).normal(size=(7, 128)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {INPUT_NAME: x})[0], apply(model, x), atol=1e-5)


def _meer_batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, 112, 112, generator=g) * 2 - 1
    occ = torch.zeros(n, 1, 112, 112)
    occ[:, :, 60:] = 1.0  # lower half "masked"
    masked = clean * (1 - occ) + 0.2 * occ
    t_emb = torch.nn.functional.normalize(torch.randn(n, 128, generator=g), dim=1)
    return masked, clean, occ, t_emb, torch.arange(n)


def test_meer_forward_shapes_and_loss_terms():
    torch.manual_seed(0)
    model = MEER()
    out = model(_meer_batch(2)[0])
    assert out.embedding.shape == (2, 128) and out.occ_logits.shape == (2, 1, 35, 35)
    assert out.synth.shape == (2, 3, 150, 150)
    assert MeerEmbedder(model)(_meer_batch(2)[0]).shape == (2, 128)
    loss, parts = meer_loss(model, frozen_teacher(DlibResNet()), _meer_batch(4))
    assert set(parts) == {"relation", "instance", "occ", "synth", "id_preserve"}
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values())


def test_meer_tiny_training_lowers_the_loss():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    batch = _meer_batch(4)
    losses = train_meer(MEER(), frozen_teacher(DlibResNet()), [batch], steps=6, lr=1e-3, lr_encoder=1e-3,
                        lr_reformer=1e-3, warmup_steps=1)
    assert losses[-1] < losses[0]
