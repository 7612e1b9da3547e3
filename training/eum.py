"""Embedding Unmasking Model (EUM) with the Self-restrained Triplet loss (Boutros et al., Pattern Recognition 2022).

EUM leaves the recogniser frozen (here dlib's ResNet, the teacher) and learns a small MLP that moves a
masked face's embedding towards the same person's unmasked one. It only ever touches the masked side:
a deployment runs the recogniser, and the EUM graph on top when the face is masked.

* :class:`EUM`: four Linear(d, d) + BatchNorm1d, LeakyReLU(0.2) after the first three (the paper's model).
* :func:`srt_loss`: self-restrained triplet; :func:`triplet_loss`: the plain triplet of the paper's ablation.
* :class:`ResidualMLP` + MSE: the regression floor, masked -> the same face's unmasked embedding.

Training data are teacher embeddings (L2-normalised, not centred) of the training faces, unmasked and
with the cache's fixed synthetic mask: :func:`training_embeddings`.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskfr.training.cache import CACHE_ROOT
from maskfr.training.teacher import OnnxTeacher

EMBED_DIM = 128


class EUM(nn.Module):
    """Masked-face embedding -> unit embedding meant to match the same person's unmasked one."""

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Linear(dim, dim), nn.BatchNorm1d(dim)]
            if i < 3:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(F.normalize(x, dim=1)), dim=1)


class ResidualMLP(nn.Module):
    """MSE floor: identity plus a learnt correction, so an untrained model is the teacher itself."""

    def __init__(self, dim: int = EMBED_DIM, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        return F.normalize(x + self.net(x), dim=1)


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum(1)


def srt_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 2.0) -> torch.Tensor:
    """Self-restrained triplet loss on unit vectors, d = squared Euclidean.

    When the anchors are on average already as far from the negatives as the positives are
    (mean d(a,n) >= mean d(p,n)), pushing negatives further would distort the space the frozen
    recogniser defined; the loss then only pulls the anchor to within ``margin`` of the
    positive-negative distance: ReLU(d(a,p) + m - mean d(p,n)). Otherwise it is the triplet loss.
    """
    d_ap, d_an, d_pn = _sqdist(anchor, positive), _sqdist(anchor, negative), _sqdist(positive, negative)
    if d_an.mean() >= d_pn.mean():
        return F.relu(d_ap + margin - d_pn.mean()).mean()
    return F.relu(d_ap + margin - d_an).mean()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 2.0) -> torch.Tensor:
    """Plain triplet loss (the paper's ablation), same distance and margin as :func:`srt_loss`."""
    return F.relu(_sqdist(anchor, positive) + margin - _sqdist(anchor, negative)).mean()


def random_negatives(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For every row, the index of a random row of another identity in the batch."""
    score = torch.rand(len(labels), len(labels), generator=gen)
    score[labels[:, None] == labels[None, :]] = -1.0
    return score.argmax(1)


# --------------------------------------------------------------------------- data


@dataclass
class EmbeddingPairs:
    """Teacher embeddings (unit, not centred) of the same faces masked and unmasked, with identity labels."""
    masked: np.ndarray  # (N,128) float32
    unmasked: np.ndarray  # (N,128) float32
    labels: np.ndarray  # (N,) int64


def cached_teacher(chips: np.ndarray, out: Path, threads: int = 1, chunk: int = 512) -> np.ndarray:
    """Unit teacher embeddings of ``chips``, computed in chunks saved as they finish (an interrupted run resumes)."""
    if out.exists():
        return np.load(out)
    parts = out.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    teacher = None
    for start in range(0, len(chips), chunk):
        part = parts / f"{start:07d}.npy"
        if part.exists():
            continue
        teacher = teacher or OnnxTeacher(threads=threads)  # capped: the training machine shares its cores
        t0 = time.time()
        emb = teacher(chips[start:start + chunk])
        np.save(part.with_suffix(".tmp.npy"), emb / np.linalg.norm(emb, axis=1, keepdims=True))
        part.with_suffix(".tmp.npy").rename(part)
        print(f"{out.name}: {min(start + chunk, len(chips))}/{len(chips)} ({(time.time() - t0) / len(emb) * 1e3:.1f} ms/face)",
              flush=True)
    emb = np.concatenate([np.load(parts / f"{s:07d}.npy") for s in range(0, len(chips), chunk)]).astype(np.float32)
    np.save(out.with_suffix(".tmp.npy"), emb)
    out.with_suffix(".tmp.npy").rename(out)
    for p in parts.iterdir():
        p.unlink()
    parts.rmdir()
    return emb


def training_rows(cache_path: Path, tag: str, lfw_root: Path | None, folds: list[int]) -> tuple[np.ndarray, str]:
    """Rows :func:`maskfr.training.train.build_trainset` trains on, and its cache key (same teacher files)."""
    with np.load(cache_path) as z:
        paths, identity = z["path"], z["identity"]
        if tag == "lfw":
            from maskfr.training.data import LFW
            pf = LFW(lfw_root).people_folds()
            keep = np.isin(identity, sorted({p for f in folds for p in pf[f - 1]}))
        else:
            keep = z["found"].astype(bool)
    rows = np.flatnonzero(keep)
    return rows, tag + "-" + hashlib.sha1("\n".join(paths[rows].tolist()).encode()).hexdigest()[:12]


def cached_student(model: Path, crops: np.ndarray, out: Path) -> np.ndarray:
    """Unit embeddings of 112x112 crops by an exported student (ONNX), cached at ``out``."""
    if out.exists():
        return np.load(out)
    from maskfr.export.onnx_export import ort_embed
    emb = ort_embed(model, crops).astype(np.float32)
    np.save(out.with_suffix(".tmp.npy"), emb / np.linalg.norm(emb, axis=1, keepdims=True))
    out.with_suffix(".tmp.npy").rename(out)
    return np.load(out)


def training_embeddings(lfw_root: Path, folds: list[int] = (1, 2, 3, 4, 5), threads: int = 1,
                        model: Path | None = None) -> EmbeddingPairs:
    """Masked + unmasked embeddings of the G2D training faces (LFW people of ``folds`` + CelebA).

    By the teacher (on dlib chips), or by an exported student ``model`` (on 112 crops) to train EUM
    on top of G2D. Only the needed arrays are read from the .npz caches (the full caches are ~4 GB).
    """
    masked, unmasked, ids = [], [], []
    for tag in ("lfw", "celeba"):
        path = CACHE_ROOT / f"{tag}.npz"
        rows, key = training_rows(path, tag, lfw_root, list(folds))
        with np.load(path) as z:
            ids.append(z["identity"][rows])
            if model is not None:
                from maskfr.export.onnx_export import sha256
                stem = f"student-{sha256(model)[:12]}-{key}"
                unmasked.append(cached_student(model, z["img112"][rows], CACHE_ROOT / f"{stem}.npy"))
                masked.append(cached_student(model, z["img112_masked"][rows], CACHE_ROOT / f"{stem}-masked.npy"))
                continue
            un = CACHE_ROOT / f"teacher-{key}.npy"
            unmasked.append(np.load(un) if un.exists() else cached_teacher(z["chip150"][rows], un, threads))
            mk = CACHE_ROOT / f"teacher-masked-{key}.npy"
            masked.append(np.load(mk) if mk.exists() else cached_teacher(z["chip150_masked"][rows], mk, threads))
    unmasked = [u / np.linalg.norm(u, axis=1, keepdims=True) for u in unmasked]
    _, labels = np.unique(np.concatenate(ids), return_inverse=True)
    return EmbeddingPairs(np.concatenate(masked).astype(np.float32), np.concatenate(unmasked).astype(np.float32),
                          labels.astype(np.int64))


# --------------------------------------------------------------------------- training

LOSSES = ("srt", "triplet", "mse")


def train_eum(model: nn.Module, data: EmbeddingPairs, loss: str = "srt", epochs: int = 10, batch: int = 512,
              lr: float = 0.1, step: int = 3, margin: float = 2.0, seed: int = 0) -> list[float]:
    """The paper's schedule: SGD (momentum 0.9, Nesterov), lr x0.1 every ``step`` epochs; returns mean loss per epoch.

    Anchor = model(masked embedding), positive = the same face's unmasked embedding, negative = the
    unmasked embedding of a random other identity in the batch; ``mse`` regresses onto the positive.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step, 0.1)
    x, y, lab = (torch.from_numpy(a) for a in (data.masked, data.unmasked, data.labels))
    history = []
    model.train()
    for _ in range(epochs):
        order, total, n = torch.randperm(len(x), generator=gen), 0.0, 0
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            a, p = model(x[idx]), y[idx]
            if loss == "mse":  # squared error summed over dimensions: the triplet losses' distance
                value = _sqdist(a, p).mean()
            else:
                neg = p[random_negatives(lab[idx], gen)]
                value = (srt_loss if loss == "srt" else triplet_loss)(a, p, neg, margin)
            opt.zero_grad()
            value.backward()
            opt.step()
            total, n = total + value.item(), n + 1
        sched.step()
        history.append(total / max(n, 1))
    model.eval()
    return history


@torch.inference_mode()
def apply(model: nn.Module, emb: np.ndarray) -> np.ndarray:
    """Run a trained EUM (eval mode) on (N,128) embeddings."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(emb, np.float32))).numpy()


INPUT_NAME, OUTPUT_NAME = "embedding", "unmasked_embedding"


def export_eum_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> str:
    """EUM as a second small graph run after the recogniser: ``embedding`` (N,128) -> ``unmasked_embedding`` (N,128).

    ONNX names are single-assignment, so the output cannot also be called ``embedding``; the input
    keeps the recogniser's output name so the two graphs chain by name. Output is L2-normalised.
    """
    model.eval()
    path = str(path)
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, EMBED_DIM),), path, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, dynamo=False)
    return path
