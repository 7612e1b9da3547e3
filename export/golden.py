"""Golden embeddings shipped next to a released model (``model.onnx`` -> ``model.golden.npz``).

The file holds a few aligned faces (RGB uint8, masked and unmasked), the embeddings the
released FP32 model gives them, and the model's sha256. Any later runtime (a new ONNX
Runtime, a TensorRT engine, the FP16/INT8 variants, the C++ path) can then prove it
still computes the same function without the training code, the data or torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from maskfr.export.onnx_export import MIN_COSINE, compare, ort_embed, sha256
from maskfr.fileio import written_then_renamed


def golden_path(model: str | os.PathLike) -> Path:
    """Where the golden file of ``model`` lives: same folder, ``<stem>.golden.npz``."""
    p = Path(model)
    return p.with_name(p.stem + ".golden.npz")


def public_faces(n: int = 16, seed: int = 0) -> np.ndarray:
    """(n,112,112,3) RGB crops of the public-domain astronaut photo (scikit-image), half with a drawn mask.

    Released golden files must not carry dataset faces (LFW, CelebA), so they use this photo:
    the detector's landmarks, jittered by a few pixels per crop so every crop differs.
    """
    from maskfr.align import similarity_transform, template, warp_face
    from maskfr.demo import demo_images, draw_mask
    from maskfr.detector import FaceDetector
    img = demo_images()["astronaut"]
    faces = FaceDetector().detect(img)
    if not faces:
        raise RuntimeError("the detector found no face in the astronaut photo")
    lm = np.asarray(max(faces, key=lambda f: f.score).landmarks, np.float64).reshape(5, 2)
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(n):
        src = draw_mask(img, lm) if k % 2 else img
        jit = lm + rng.normal(0, 1.5, lm.shape) if k > 1 else lm
        crops.append(warp_face(src, similarity_transform(jit, template(112)))[..., ::-1])
    return np.ascontiguousarray(np.stack(crops))


def write_golden(model: str | os.PathLike, faces: np.ndarray, out: str | os.PathLike | None = None,
                 model_name: str | None = None) -> Path:
    """Record ``faces`` (N,112,112,3 RGB uint8) and this model's ONNX Runtime embeddings of them.

    Written then renamed: a failed write leaves the previous golden file whole. ``model_name`` (default the
    file name of ``model``) is the name recorded, for a model still under its temporary name.
    """
    faces = np.ascontiguousarray(faces, np.uint8)
    if faces.ndim != 4 or faces.shape[1:] != (112, 112, 3):
        raise ValueError(f"golden faces must be (N,112,112,3) uint8 crops, got {faces.shape}")
    out = Path(out) if out else golden_path(model)
    # an open file: given a path, numpy would append .npz to the temporary's name
    with written_then_renamed(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, inputs=faces, embeddings=ort_embed(model, faces), model_sha256=np.array(sha256(model)),
                            model_name=np.array(model_name or Path(model).name))
    return out


def read_golden(path: str | os.PathLike) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {"inputs": z["inputs"], "embeddings": z["embeddings"], "model_sha256": str(z["model_sha256"]),
                "model_name": str(z["model_name"])}


def check_golden(model: str | os.PathLike, golden: str | os.PathLike | None = None,
                 embed: Callable[[np.ndarray], np.ndarray] | None = None, min_cosine: float = MIN_COSINE,
                 verbose: bool = False) -> dict[str, Any]:
    """Compare ``embed(inputs)`` (default: ONNX Runtime on ``model``) with the recorded embeddings.

    Pass a looser ``min_cosine`` for FP16/INT8 variants or a different runtime via ``embed``;
    the report says whether ``model`` is byte-identical to the one the golden file was made from.
    """
    g = read_golden(golden or golden_path(model))
    out = embed(g["inputs"]) if embed else ort_embed(model, g["inputs"])
    rep = compare(g["embeddings"], out, min_cosine, ref_name="golden", out_name=Path(model).name, verbose=verbose)
    rep["same_model"] = sha256(model) == g["model_sha256"]
    return rep


__all__ = ["check_golden", "golden_path", "public_faces", "read_golden", "write_golden"]
