"""MEER-style multi-task masked face recogniser (after Wang et al. 2023, "MEER: mask decoupling ...").

MEER's idea, on the G2D building blocks of :mod:`maskfr.training.models`:

* a *mask-decoupling* module: an occlusion head predicts, from the generative encoder's features,
  where the mask is (supervised by the cache's occlusion map resampled to the 35x35 feature grid);
  the features are multiplied by ``1 - occlusion`` before the reformer, so identity has to come from
  the visible regions rather than from mask texture;
* an unmasked-face *synthesis* decoder on the (unsuppressed) features, trained jointly, so the encoder
  keeps describing what is under the mask;
* an *id-preserving* loss: the synthesised face, embedded by the frozen teacher, must match the real
  unmasked face's teacher embedding (pixels that look right but change the person are penalised).

The recognition branch is trained like G2D's reformer (relation + instance distillation from the
teacher on the unmasked face). Deployment needs only encoder -> occlusion head -> reformer
(:class:`MeerEmbedder`); the decoder and the teacher are training-only.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from maskfr.training.losses import inpaint_loss, instance_kd, relation_kd
from maskfr.training.models import Decoder, G2DStudent, GenerativeEncoder, Reformer
from maskfr.training.teacher import DlibResNet
from maskfr.training.train import warm_up

FEAT_CH, FEAT_SIZE = 32, 35


class OcclusionHead(nn.Module):
    """Encoder features -> occlusion logits on the feature grid; starts near 'nothing occluded'."""

    def __init__(self, ch: int = FEAT_CH, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(ch, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
        nn.init.constant_(self.net[-1].bias, -4.0)  # sigmoid ~0.02: the dlib-initialised reformer starts unchanged

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


@dataclass
class MeerOutput:
    embedding: torch.Tensor  # (N,128) unit
    occ_logits: torch.Tensor  # (N,1,35,35)
    synth: torch.Tensor | None  # (N,3,150,150) in [-1,1], dlib chip frame; None when not asked for


class MEER(nn.Module):
    """Encoder -> (occlusion head, feature suppression) -> reformer, plus a synthesis decoder."""

    def __init__(self):
        super().__init__()
        self.encoder = GenerativeEncoder()
        self.occ_head = OcclusionHead()
        self.reformer = Reformer()
        self.decoder = Decoder()

    def forward(self, x: torch.Tensor, synthesise: bool = True) -> MeerOutput:
        f = self.encoder(x)
        occ = self.occ_head(f)
        emb = self.reformer(f * (1 - torch.sigmoid(occ)))
        return MeerOutput(emb, occ, self.decoder(f) if synthesise else None)


class MeerEmbedder(nn.Module):
    """The deployed part: (N,3,112,112) normalised crop -> (N,128) unit embedding."""

    def __init__(self, meer: MEER):
        super().__init__()
        self.encoder, self.occ_head, self.reformer = meer.encoder, meer.occ_head, meer.reformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        return self.reformer(f * (1 - torch.sigmoid(self.occ_head(f))))


def create_meer(pretrained: bool = True) -> MEER:
    """MEER with encoder and reformer from dlib's ResNet (as the G2D student) when ``pretrained``."""
    model = MEER()
    if pretrained:
        from maskfr.training.teacher import load_dlib_resnet
        student = G2DStudent().init_from_dlib(load_dlib_resnet())
        model.encoder.load_state_dict(student.encoder.state_dict())
        model.reformer.load_state_dict(student.reformer.state_dict())
    return model


def occ_target(encoder: GenerativeEncoder, occ112: torch.Tensor) -> torch.Tensor:
    """Occlusion map of the 112 crop (N,1,112,112 in {0,1}) -> share occluded per 35x35 feature cell."""
    return F.interpolate(encoder.chip(occ112), size=(FEAT_SIZE, FEAT_SIZE), mode="area").clamp(0, 1)


def teacher_on_synth(teacher: DlibResNet, synth: torch.Tensor) -> torch.Tensor:
    """Frozen teacher on synthesised chips ([-1,1], dlib chip frame) -> unit embeddings (gradients reach synth)."""
    return F.normalize(teacher(teacher.normalize(synth * 127.5 + 127.5)), dim=1)


DEFAULT_WEIGHTS = {"relation": 10.0, "instance": 1.0, "occ": 1.0, "synth": 1.0, "id_preserve": 1.0}


def meer_loss(model: MEER, teacher: DlibResNet, batch, center: torch.Tensor | None = None,
              weights: dict[str, float] | None = None, tau: float = 0.1,
              hole_weight: float = 5.0) -> tuple[torch.Tensor, dict[str, float]]:
    """All four MEER terms on one batch ``(masked, clean, occ, teacher_emb, labels)`` (as train.MaskedFaces yields).

    ``teacher_emb`` is the unmasked face's teacher embedding as the trainset stores it (centred on
    ``center`` and re-normalised), so the synthesised face's teacher embedding is put in the same space.
    """
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    masked, clean, occ, t_emb, _ = batch
    out = model(masked)
    rel, inst = relation_kd(out.embedding, t_emb, tau), instance_kd(out.embedding, t_emb)
    occ_l = F.binary_cross_entropy_with_logits(out.occ_logits, occ_target(model.encoder, occ))
    occ_chip = (model.encoder.chip(occ) > 0.5).float()
    rec = inpaint_loss(out.synth, model.encoder.chip(clean), occ_chip, hole_weight)
    s = teacher_on_synth(teacher, out.synth)
    if center is not None:
        s = F.normalize(s - center, dim=1)
    idp = instance_kd(s, t_emb)
    parts = {"relation": rel, "instance": inst, "occ": occ_l, "synth": rec, "id_preserve": idp}
    loss = sum(w[k] * v for k, v in parts.items())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def frozen_teacher(net: DlibResNet) -> DlibResNet:
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def train_meer(model: MEER, teacher: DlibResNet, loader, steps: int, center: torch.Tensor | None = None,
               lr: float = 1e-3, lr_encoder: float = 1e-5, lr_reformer: float = 3e-5, warmup_steps: int = 20,
               weights: dict[str, float] | None = None, log: Path | None = None) -> list[float]:
    """Adam on all branches jointly; returns the loss of every step.

    As in G2D, the dlib-initialised layers (encoder levels, reformer) get small rates and a linear
    warm-up: Adam's first steps move every weight by about the rate, and at 1e-4 one step took the
    reformer's output to cosine ~0.03 with the teacher's. New layers (occlusion head, dilated blocks,
    decoder) learn at ``lr``. The dlib layers' ``Affine`` are frozen statistics, so train/eval mode only
    matters for the decoder's BatchNorm.
    """
    dlib_enc, dilated = model.encoder.dlib_and_new_parameters()
    new = dilated + list(model.occ_head.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam([{"params": dlib_enc, "lr": lr_encoder},
                            {"params": list(model.reformer.parameters()), "lr": lr_reformer},
                            {"params": new, "lr": lr}])
    base = [g["lr"] for g in opt.param_groups]
    model.train()
    losses, t0, n = [], time.time(), 0
    fh = open(log, "a") if log else None
    while len(losses) < steps:
        for batch in loader:
            warm_up(opt, base, len(losses), warmup_steps)
            loss, parts = meer_loss(model, teacher, batch, center, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            n += len(batch[0])
            if fh:
                fh.write(json.dumps({"step": len(losses), "loss": losses[-1], **parts,
                                     "img_per_s": n / (time.time() - t0)}) + "\n")
                fh.flush()
            if len(losses) >= steps:
                break
    model.eval()
    if fh:
        fh.close()
    return losses


def parameter_count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def main(argv: list[str] | None = None) -> int:
    """``python -m maskfr.training.meer``: train on G2D's training set (LFW people folds 1-5 + CelebA), fresh masks."""
    import argparse

    from maskfr.training import cache as fc
    from maskfr.training.data import LFW, celeba
    from maskfr.training.masks import MaskSynth
    from maskfr.training.teacher import load_dlib_resnet
    from maskfr.training.train import MaskedFaces, build_trainset, centred
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--lfw", required=True)
    ap.add_argument("--celeba")
    ap.add_argument("--masks", required=True)
    ap.add_argument("--out", default=str(fc.CACHE_ROOT / "runs" / "meer"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    lfw = fc.load(fc.build(LFW(a.lfw).samples(), fc.lfw_cache_path(), a.masks))
    cel = fc.load(fc.build(celeba(a.celeba), fc.CACHE_ROOT / "celeba.npz", a.masks)) if a.celeba else None
    data = centred(build_trainset({"train_lfw_folds": [1, 2, 3, 4, 5]}, lfw, cel, Path(a.lfw), fc.CACHE_ROOT))
    del lfw, cel
    model = create_meer()
    center = torch.from_numpy(data.center)
    model.reformer.center.copy_(center)
    ds = MaskedFaces(data, MaskSynth(a.masks), p_mask=0.75, seed=a.seed, stage=7)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(a.seed))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train_meer(model, frozen_teacher(load_dlib_resnet()), loader, a.steps, center, log=out / "log.jsonl")
    torch.save({"model": model.state_dict(), "steps": a.steps, "batch": a.batch}, out / "meer.pt")
    print(f"checkpoint: {out / 'meer.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["MEER", "MeerEmbedder", "MeerOutput", "OcclusionHead", "create_meer", "frozen_teacher", "meer_loss",
           "occ_target", "parameter_count", "teacher_on_synth", "train_meer"]
