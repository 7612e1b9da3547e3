import math

import pytest
import torch

from maskfr.training.losses import inpaint_loss, instance_kd, relation_kd
from maskfr.training.models import CosFaceHead


def test_relation_kd_zero_when_relations_match_even_if_vectors_differ():
    t = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    q, _ = torch.linalg.qr(torch.randn(16, 16))  # a rotation keeps every pairwise cosine
    assert relation_kd(t @ q, t).item() == pytest.approx(0.0, abs=1e-6)
    assert instance_kd(t @ q, t).item() > 0.1  # while the vectors themselves differ


def test_relation_kd_hand_computed():
    # 3 unit vectors; teacher: e0,e1,e2 orthogonal; student: s0=s1, s2 orthogonal
    t = torch.eye(3)
    s = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    tau = 1.0
    # off-diagonal rows: teacher [0,0] each -> p=(.5,.5); student row0 [1,0], row1 [1,0], row2 [0,0]
    q = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    kl_row = (0.5 * (math.log(0.5) - torch.log(q))).sum().item()
    expected = (2 * kl_row + 0.0) / 3
    assert relation_kd(s, t, tau).item() == pytest.approx(expected, rel=1e-5)


def test_instance_kd_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert instance_kd(a, b).item() == pytest.approx(0.5)  # (1-1 + 1-0) / 2


def test_inpaint_loss_weights_the_hole():
    target = torch.zeros(1, 3, 2, 2)
    out = torch.zeros(1, 3, 2, 2)
    out[..., 0, 0] = 1.0  # error only at pixel (0,0)
    occ = torch.zeros(1, 1, 2, 2)
    assert inpaint_loss(out, target, occ).item() == pytest.approx(0.25)  # mean L1 only
    occ[..., 0, 0] = 1
    assert inpaint_loss(out, target, occ, hole_weight=5).item() == pytest.approx(0.25 + 5 * 1.0)


def test_cosface_margin_and_loss():
    head = CosFaceHead(3, dim=2, s=10.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0]]))
    emb = torch.tensor([[1.0, 0.0]])
    logits = head(emb, torch.tensor([0]))
    assert torch.allclose(logits, torch.tensor([[10 * (1 - 0.5), 0.0, -10.0]]))
    assert torch.allclose(head(emb), torch.tensor([[10.0, 0.0, -10.0]]))
