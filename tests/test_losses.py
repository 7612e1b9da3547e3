import math

import pytest
import torch

from maskfr.training.losses import (hinge_critic_loss, hinge_generator_loss, inpaint_loss, instance_kd,
                                    perceptual_loss, relation_kd)
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


class _OneChannelNet(torch.nn.Module):
    """DlibResNet's layout at its smallest: normalise to [0, 1], a 1x1 identity conv, no blocks, a fixed fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1, bias=False)
        self.conv.weight.data.fill_(1 / 3)  # the mean of the channels
        self.aff = torch.nn.Identity()
        self.blocks = torch.nn.Sequential()
        self.fc = torch.nn.Linear(1, 2, bias=False)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb / 255.0


def test_perceptual_loss_hand_computed():
    """Flat grey faces: the one layer sees (x + 1) / 2, so a target at 0 (0.5) against an output at 0.5 (0.75)
    differs by 0.25 / 0.5; one-channel embeddings are parallel (cosine 1). Gradients reach the output only."""
    net = _OneChannelNet().requires_grad_(False)
    target = torch.zeros(2, 3, 9, 9)
    out = torch.full((2, 3, 9, 9), 0.5, requires_grad=True)
    loss = perceptual_loss(net, out, target)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    loss.backward()
    assert out.grad.abs().sum() > 0 and net.conv.weight.grad is None
    assert perceptual_loss(net, target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_hinge_losses_hand_computed():
    """Real scores 2 (past the margin: 0) and 0 (1 short); inpainted -3 (0) and 0.5 (1.5 short): (0 + 1) / 2 +
    (0 + 1.5) / 2 = 1.25. The inpainter's term is minus the mean score of its patches."""
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 0.5])
    assert hinge_critic_loss(real, fake).item() == pytest.approx(1.25)
    assert hinge_critic_loss(torch.ones(3), -torch.ones(3)).item() == 0.0
    assert hinge_generator_loss(fake).item() == pytest.approx(1.25)
