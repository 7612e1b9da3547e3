"""Losses for G2D: relation distillation, instance distillation, inpainting reconstruction, perception and the
critic's hinge."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def relation_kd(student: torch.Tensor, teacher: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """KL(teacher || student) between row-softmaxed cosine-similarity matrices of one batch.

    The student sees MASKED faces, the teacher the same faces UNMASKED: the student must
    reproduce how similar the teacher finds every pair, not copy its vectors. The
    diagonal (self-similarity, always 1) carries no relation and is left out. Scaled
    by tau^2 so gradients keep their size across temperatures (Hinton et al.).
    """
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher, dim=1)
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    ls = (s @ s.T / tau)[off].view(n, n - 1)
    lt = (t @ t.T / tau)[off].view(n, n - 1)
    return F.kl_div(F.log_softmax(ls, 1), F.log_softmax(lt, 1), log_target=True, reduction="batchmean") * tau**2


def instance_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between each student embedding and its teacher embedding."""
    return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()


def inpaint_loss(out: torch.Tensor, target: torch.Tensor, occ: torch.Tensor, hole_weight: float = 5.0) -> torch.Tensor:
    """L1 over the whole face plus ``hole_weight`` x L1 inside the occluded region (occ in {0,1}, N1HW)."""
    err = (out - target).abs()
    hole = (err * occ).sum() / (occ.sum() * out.shape[1]).clamp_min(1)
    return err.mean() + hole_weight * hole


def perceptual_loss(net: torch.nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How differently a frozen face network (dlib's ResNet, :class:`~maskfr.training.teacher.DlibResNet`) sees
    the inpainted chip and the clean one: per layer (its stem and every residual block), mean L1 of the
    activations over the clean activations' mean magnitude, so every depth counts alike; plus ``1 - cos`` of the
    two embeddings. L1 on pixels alone draws a generic blurry lower face; this asks for the person's own.
    ``out``, ``target``: (N, 3, 150, 150) RGB in [-1, 1] in dlib's chip frame (the decoder's output space).
    """
    def features(x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = F.max_pool2d(F.relu(net.aff(net.conv(net.normalize((x + 1) * 127.5)))), 3, 2)
        layers = [x]
        for block in net.blocks:
            x = block(x)
            layers.append(x)
        return layers, net.fc(x.mean(dim=(2, 3)))

    with torch.no_grad():
        want, want_emb = features(target)
    got, got_emb = features(out)
    layer = sum((g - w).abs().mean() / w.abs().mean().clamp_min(1e-6) for g, w in zip(got, want)) / len(got)
    return layer + instance_kd(got_emb, want_emb)


def hinge_critic_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's hinge loss: real patches pushed to scores >= 1, inpainted ones to <= -1 (and no further)."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """The inpainter's adversarial term: raise the critic's scores of its patches."""
    return -fake.mean()
