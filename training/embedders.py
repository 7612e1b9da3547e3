"""Embedding functions for evaluation: dlib's recogniser (the teacher) or any exported ONNX model.

Each takes the cache (dict of arrays) and returns ``embed(masked) -> (N, d)``
L2-normalised float32, cached on disk under ``$MASKFR_CACHE`` (``~/.cache/maskfr``) because the
dlib teacher costs ~0.1 s per face on a CPU.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from maskfr.training.cache import CACHE_ROOT


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _cached(tag: str, cache: dict, compute: Callable[[np.ndarray], np.ndarray], key: str) -> np.ndarray:
    # keyed by the pixels too: caches of the same images with other masks (--mask-style) must not share it
    h = hashlib.sha1("\n".join(cache["path"].tolist()).encode() + key.encode())
    h.update(np.ascontiguousarray(cache[key]).data)
    digest = h.hexdigest()[:12]
    path = CACHE_ROOT / f"emb-{tag}-{digest}.npy"
    if path.exists():
        return np.load(path)
    out = l2n(compute(cache[key]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.rename(path)
    return out


def dlib_embedder(cache: dict) -> Callable[[bool], np.ndarray]:
    """dlib's ResNet via dlib itself, on its own 150x150 chips."""
    from maskfr.training.dlib_models import dlib_embed
    return lambda masked: _cached("dlib", cache, dlib_embed, "chip150_masked" if masked else "chip150")


def dlib_port_embedder(cache: dict) -> Callable[[bool], np.ndarray]:
    """dlib's ResNet through our parity-tested port under ONNX Runtime (~8x faster than dlib on CPU)."""
    def compute(chips: np.ndarray) -> np.ndarray:
        from maskfr.training.teacher import OnnxTeacher
        return OnnxTeacher()(chips)
    return lambda masked: _cached("dlibport", cache, compute, "chip150_masked" if masked else "chip150")


def onnx_embedder(model: str | Path, batch: int = 64) -> Callable[[dict], Callable[[bool], np.ndarray]]:
    """An exported student (112x112 ArcFace crops, RGB, (x-127.5)/127.5) under ONNX Runtime.

    Opened as the runtime opens it (:func:`maskfr.backends.load_runner`), so a missing file, one that is not ONNX
    or a model without (N, 3, 112, 112) -> (N, D) is named, where onnxruntime's own errors were a traceback.
    """
    from maskfr.align import to_input
    from maskfr.backends import load_runner
    runner = load_runner(model, backend="cpu")

    def run(imgs: np.ndarray) -> np.ndarray:
        return np.concatenate([runner.infer(to_input(imgs[i:i + batch])) for i in range(0, len(imgs), batch)])

    def make(cache: dict) -> Callable[[bool], np.ndarray]:
        return lambda masked: l2n(run(cache["img112_masked" if masked else "img112"]))
    return make


def torch_embedder(model, batch: int = 128) -> Callable[[dict], Callable[[bool], np.ndarray]]:
    """A torch student (112x112 crops in, unit vectors out), evaluated before export."""
    import torch

    from maskfr.align import to_input
    model.eval()

    @torch.inference_mode()
    def run(imgs: np.ndarray) -> np.ndarray:
        return np.concatenate([model(torch.from_numpy(to_input(imgs[i:i + batch]))).numpy()
                               for i in range(0, len(imgs), batch)])

    def make(cache: dict) -> Callable[[bool], np.ndarray]:
        return lambda masked: l2n(run(cache["img112_masked" if masked else "img112"]))
    return make


def inpaint_teacher_embedder(student, decoder, batch: int = 64) -> Callable[[dict], Callable[[bool], np.ndarray]]:
    """Inpaint-then-teacher: our inpainter fills the masked region (in dlib's chip frame), dlib's ResNet embeds.

    Only pixels under the mask are replaced, and the mask region is the synthesiser's own occlusion
    map (``occ112``, an oracle a deployment would have to predict); unmasked faces pass unchanged.
    """
    import torch

    from maskfr.align import to_input
    from maskfr.training.teacher import load_dlib_resnet
    teacher = load_dlib_resnet()
    student.eval()
    decoder.eval()

    @torch.inference_mode()
    def run(imgs: np.ndarray, occ: np.ndarray | None) -> np.ndarray:
        out = []
        for i in range(0, len(imgs), batch):
            x = torch.from_numpy(to_input(imgs[i:i + batch]))
            chip = student.encoder.chip(x)
            if occ is not None:
                hole = (student.encoder.chip(torch.from_numpy(occ[i:i + batch, None].astype(np.float32))) > 0.5).float()
                chip = chip * (1 - hole) + decoder(student.encoder(x)) * hole
            out.append(teacher(teacher.normalize(chip * 127.5 + 127.5)).numpy())
        return np.concatenate(out)

    def make(cache: dict) -> Callable[[bool], np.ndarray]:
        return lambda masked: l2n(run(cache["img112_masked"], cache["occ112"]) if masked else run(cache["img112"], None))
    return make
