"""Locate and load dlib's pretrained models from the ``face-recognition-models`` wheel.

We find the files without importing ``face_recognition_models`` (it imports
``pkg_resources``, which new setuptools no longer ships).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np


def model_path(name: str) -> Path:
    """Path of one of dlib's model files, e.g. ``shape_predictor_68_face_landmarks.dat``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face-recognition-models is not installed: pip install 'maskfr[train]'")
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the face-recognition-models package")
    return path


@functools.lru_cache(maxsize=None)
def hog_detector():
    import dlib
    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def shape_predictor(points: int = 68):
    import dlib
    return dlib.shape_predictor(str(model_path(f"shape_predictor_{points}_face_landmarks.dat")))


@functools.lru_cache(maxsize=None)
def face_recognizer():
    import dlib
    return dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))


# iBUG 68-point index of each point's mirror image (jaw, brows, nose, eyes, lips)
MIRROR68 = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, *range(35, 30, -1),
                     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, *range(54, 47, -1), *range(59, 54, -1),
                     *range(64, 59, -1), 67, 66, 65])


def five_from_68(lm68: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points (eye centres, nose tip, mouth corners) from 68-point landmarks."""
    lm68 = np.asarray(lm68, np.float32)
    return np.stack([lm68[36:42].mean(0), lm68[42:48].mean(0), lm68[30], lm68[48], lm68[54]])


def detect_landmarks(rgb: np.ndarray, upsample: int = 1, fallback_box: tuple | None = None):
    """Detect the face nearest the image centre and its 68 landmarks with dlib HOG.

    Returns ``(lm68 (68,2) float32, score, found)``; when nothing is found and a
    fallback box ``(l, t, r, b)`` is given, landmarks are fitted inside it and
    ``found`` is False (so callers can count it), else ``(None, 0.0, False)``.
    """
    import dlib
    dets, scores, _ = hog_detector().run(rgb, upsample, 0.0)
    if dets:
        h, w = rgb.shape[:2]
        k = int(np.argmin([((d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2) for d in dets]))
        rect, score, found = dets[k], float(scores[k]), True
    elif fallback_box is not None:
        rect, score, found = dlib.rectangle(*[int(v) for v in fallback_box]), 0.0, False
    else:
        return None, 0.0, False
    shape = shape_predictor(68)(rgb, rect)
    lm = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    return lm, score, found


def _embed_chunk(chips: np.ndarray) -> np.ndarray:
    rec = face_recognizer()
    return np.array(rec.compute_face_descriptor([np.ascontiguousarray(c) for c in chips]), np.float32)


def dlib_embed(chips: np.ndarray, workers: int = 2, chunk: int = 64) -> np.ndarray:
    """dlib's 128-d descriptors of 150x150 RGB chips (N,150,150,3), as dlib itself computes them."""
    import multiprocessing as mp

    from tqdm import tqdm
    parts = [chips[i:i + chunk] for i in range(0, len(chips), chunk)]
    with mp.get_context("fork").Pool(workers) as pool:
        out = list(tqdm(pool.imap(_embed_chunk, parts), total=len(parts), desc="dlib embed", unit="chunk"))
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)
