"""Train the runtime's mask / no-mask flag: logistic regression on ``maskfr.recognizer.mask_features``.

Data: the aligned-face cache (``img112`` unmasked, ``img112_masked`` with a synthetic mask).
People of LFW ``people.txt`` folds 1-5 train it, folds 6-10 measure it, so the reported
accuracy is on unseen people. The result is a few numbers in ``sdk/models/mask_classifier.json``.

    python -m maskfr.training.mask_classifier --lfw ../shared/data/lfw
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from maskfr.align import to_input
from maskfr.recognizer import MASK_CLASSIFIER, mask_features
from maskfr.training.cache import lfw_cache_path
from maskfr.training.data import LFW


def features(crops: np.ndarray, chunk: int = 512) -> np.ndarray:
    return np.concatenate([mask_features(to_input(crops[i:i + chunk])) for i in range(0, len(crops), chunk)])


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iters: int = 50) -> tuple[np.ndarray, float]:
    """Newton / IRLS on standardised features; 16 weights need no optimiser library."""
    a = np.c_[x, np.ones(len(x))]
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-a @ w))
        grad = a.T @ (p - y) + ridge * np.r_[w[:-1], 0]
        hess = (a * (p * (1 - p))[:, None]).T @ a + ridge * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lfw", required=True, help="LFW root (people.txt)")
    p.add_argument("--cache", default=str(lfw_cache_path()))
    p.add_argument("--out", default=str(MASK_CLASSIFIER))
    a = p.parse_args(argv)
    folds = LFW(a.lfw).people_folds()
    train_people, test_people = set(sum(folds[:5], [])), set(sum(folds[5:], []))
    with np.load(a.cache, allow_pickle=False) as z:
        person = np.array([Path(s).parent.name for s in z["path"]])
        rows = {"train": np.flatnonzero(np.isin(person, list(train_people))),
                "test": np.flatnonzero(np.isin(person, list(test_people)))}
        feats = {}
        for key in ("img112", "img112_masked"):
            arr = z[key]
            feats[key] = {split: features(arr[r]) for split, r in rows.items()}
            del arr
    data = {s: (np.concatenate([feats["img112"][s], feats["img112_masked"][s]]),
                np.r_[np.zeros(len(rows[s])), np.ones(len(rows[s]))]) for s in rows}
    x, y = data["train"]
    mean, std = x.mean(0), x.std(0) + 1e-6
    w, b = fit_logistic((x - mean) / std, y)

    def accuracy(xs: np.ndarray, ys: np.ndarray) -> float:
        return float(((((xs - mean) / std) @ w + b >= 0) == ys).mean())
    xt, yt = data["test"]
    n = len(rows["test"])
    info = {"train_accuracy": accuracy(x, y), "test_accuracy": accuracy(xt, yt),
            "test_accuracy_unmasked": accuracy(xt[:n], yt[:n]), "test_accuracy_masked": accuracy(xt[n:], yt[n:]),
            "n_train_images": int(len(rows["train"])), "n_test_images": n,
            "data": "LFW aligned-face cache, synthetic masks; train people.txt folds 1-5, test folds 6-10"}
    out = {"mean": mean.round(6).tolist(), "std": std.round(6).tolist(), "weights": w.round(6).tolist(),
           "bias": round(b, 6), "threshold": 0.5, **info}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    main()
