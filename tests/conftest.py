"""Shared fixtures: small generated faces (tests that must always run) and the real data (when present)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest


def data_root() -> Path | None:
    for cand in (os.environ.get("MASKFR_DATA"), Path(__file__).resolve().parents[1] / ".." / "shared" / "data"):
        if cand and (Path(cand) / "lfw").is_dir():
            return Path(cand).resolve()
    return None


@pytest.fixture
def shared_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("real face data (../shared/data or $MASKFR_DATA) not present")
    return root


def lfw_tree(root: Path) -> Path:
    """A two-fold LFW folder as its authors lay it out (pairs, people, a dev split; empty image files)."""
    for name, n in (("Ann_A", 3), ("Bob_B", 2), ("Cy_C", 1)):
        d = root / "images_deepfunneled" / name
        d.mkdir(parents=True)
        for i in range(1, n + 1):
            (d / f"{name}_{i:04d}.jpg").write_bytes(b"")
    (root / "pairs.txt").write_text("2\t1\nAnn_A\t1\t2\nAnn_A\t3\tBob_B\t1\nBob_B\t1\t2\nAnn_A\t2\tCy_C\t1\n")
    (root / "people.txt").write_text("2\n2\nAnn_A\t3\nCy_C\t1\n1\nBob_B\t2\n")
    (root / "pairsDevTest.txt").write_text("1\nAnn_A\t1\t3\nBob_B\t2\tCy_C\t1\n")
    (root / "peopleDevTest.txt").write_text("2\nAnn_A\t3\nBob_B\t2\n")
    return root


def face_landmarks(cx: float = 100, cy: float = 95, s: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """A plausible frontal 68-point layout (dlib/iBUG order) centred at (cx, cy), scaled and rotated."""
    t = np.linspace(np.pi, 0, 17)
    jaw = np.c_[48 * np.cos(t), -15 + 77 * np.sin(t) ** 1.2]
    brow_l = np.c_[np.linspace(-38, -8, 5), [-30, -34, -35, -34, -31]]
    brow_r = brow_l * [-1, 1]
    nose = np.r_[np.c_[np.zeros(4), np.linspace(-18, 12, 4)], np.c_[np.linspace(-9, 9, 5), [16, 18, 19, 18, 16]]]
    eye_l = np.c_[np.array([-30, -26, -21, -16, -21, -26]), np.array([-18, -21, -21, -18, -15, -15])]
    eye_r = np.c_[-eye_l[::-1, 0][[3, 2, 1, 0, 5, 4]], eye_l[:, 1]]
    mouth_out = np.c_[[-20, -12, -5, 0, 5, 12, 20, 12, 5, 0, -5, -12], [36, 32, 30, 31, 30, 32, 36, 41, 44, 45, 44, 41]]
    mouth_in = np.c_[[-16, -5, 0, 5, 16, 5, 0, -5], [36, 34, 35, 34, 36, 39, 40, 39]]
    pts = np.vstack([jaw, brow_l, brow_r[::-1], nose, eye_l, eye_r, mouth_out, mouth_in]).astype(np.float64)
    c, si = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, si], [-si, c]]) * s
    return (pts + [cx, cy]).astype(np.float32)


def draw_face(lm: np.ndarray, size: tuple[int, int] = (220, 200), seed: int = 0) -> np.ndarray:
    """An RGB uint8 drawing of a face with these landmarks (skin, eyes, brows, nose, mouth)."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), rng.integers(30, 200, 3), np.uint8)
    centre = lm[[0, 16, 8]].mean(0)
    axes = (int(np.linalg.norm(lm[16] - lm[0]) / 2 + 4), int(np.linalg.norm(lm[8] - lm[27]) * 0.75))
    cv2.ellipse(img, (int(centre[0]), int(centre[1] - 10)), axes, 0, 0, 360, (224, 180, 150), -1)
    for a, b in ((36, 42), (42, 48)):
        cv2.fillPoly(img, [lm[a:b].astype(np.int32)], (250, 250, 250))
        cv2.circle(img, tuple(lm[a:b].mean(0).astype(int)), 3, (40, 30, 20), -1)
    for a, b in ((17, 22), (22, 27), (27, 31), (31, 36)):
        cv2.polylines(img, [lm[a:b].astype(np.int32)], False, (60, 40, 30), 2)
    cv2.fillPoly(img, [lm[48:60].astype(np.int32)], (170, 60, 60))
    return img
