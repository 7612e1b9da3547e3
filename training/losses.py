"""Losses for G2D: relation distillation, instance distillation, inpainting reconstruction."""
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
