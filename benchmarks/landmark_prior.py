"""How well the visible face predicts the points a mask hides: a shape prior on dlib's 68 reference points.

Each face of the LFW cache is put in eye-centre coordinates (left eye centre at (0, 0), right at (1, 0), so errors
are fractions of the eye distance, as in ``detection.py``); a ridge regression fitted on two thirds of the faces
predicts the nose tip (30) and the mouth corners (48, 54) of the other third from sets of other points, exact or
perturbed by Gaussian noise of about a landmark net's error. No images: it bounds what a landmark net could
learn from the shape alone (benchmarks/RESULTS.md, "How much of the hidden points the rest of the face tells").

    python benchmarks/landmark_prior.py [--cache ~/.cache/maskfr/lfw.npz]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from maskfr.training import cache as fc

TARGETS = {"nose tip": [30], "mouth corner 48": [48], "mouth corner 54": [54]}
UPPER = [*range(17, 29), *range(36, 48)]  # brows, nose bridge 27-28, eye contours: what a mask leaves
PREDICTORS = {"none (mean shape)": ([], 0.0),
              "brows, eye contours, nose bridge 27-28": (UPPER, 0.0),
              "those + jaw 0-4, 12-16": (UPPER + [*range(0, 5), *range(12, 17)], 0.0),
              "those + whole jaw 0-16": (UPPER + list(range(17)), 0.0),
              "brows, eyes, bridge, whole jaw, noise sigma 0.02": (UPPER + list(range(17)), 0.02),
              "brows, eyes, bridge, noise sigma 0.02": (UPPER, 0.02)}


def eye_frame(lm68: np.ndarray) -> np.ndarray:
    """(N, 68, 2) points -> the same points in coordinates where the eye centres are (0, 0) and (1, 0)."""
    left, right = lm68[:, 36:42].mean(1), lm68[:, 42:48].mean(1)
    v = right - left
    scale = np.hypot(v[:, 0], v[:, 1])[:, None]
    cos, sin = v[:, :1] / scale, v[:, 1:] / scale
    rel = lm68 - left[:, None]
    rotated = np.stack([rel[..., 0] * cos + rel[..., 1] * sin, rel[..., 1] * cos - rel[..., 0] * sin], -1)
    return rotated / scale[..., None]


def prior_error(pts: np.ndarray, feats: list[int], target: list[int], sigma: float, seed: int = 0) -> float:
    """Mean held-out distance (eye distances) between the target points and their ridge prediction."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pts))
    train, test = order[: len(pts) * 2 // 3], order[len(pts) * 2 // 3:]
    y = pts[:, target].reshape(len(pts), -1)
    if feats:
        xf = pts[:, feats] + rng.normal(0, sigma, pts[:, feats].shape)
        x = np.c_[xf.reshape(len(pts), -1), np.ones(len(pts))]
        w = np.linalg.solve(x[train].T @ x[train] + 1e-3 * np.eye(x.shape[1]), x[train].T @ y[train])
        pred = x[test] @ w
    else:
        pred = np.repeat(y[train].mean(0, keepdims=True), len(test), 0)
    return float(np.linalg.norm((pred - y[test]).reshape(len(test), -1, 2), axis=2).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=fc.lfw_cache_path(), help="aligned-face cache (lm68_112, found)")
    a = ap.parse_args()
    with np.load(a.cache) as z:
        pts = eye_frame(z["lm68_112"][z["found"].astype(bool)].astype(np.float64))
    print(f"{len(pts)} faces; mean held-out error, % of the eye-centre distance\n")
    print("| predictors | " + " | ".join(TARGETS) + " |\n|---|" + "---|" * len(TARGETS))
    for name, (feats, sigma) in PREDICTORS.items():
        errs = [100 * prior_error(pts, feats, t, sigma) for t in TARGETS.values()]
        print(f"| {name} | " + " | ".join(f"{e:.1f}" for e in errs) + " |")


if __name__ == "__main__":
    main()
