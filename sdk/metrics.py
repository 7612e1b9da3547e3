"""Verification metrics: k-fold accuracy (LFW protocol), TAR at FAR, ROC.

Scores are similarities (higher = more likely the same person). A pair whose
face could not be found is scored ``-inf``: it is always called "different", so
detection failures cost accuracy on matched pairs instead of vanishing.
"""
from __future__ import annotations

from math import comb

import numpy as np


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score >= t``; returns (threshold, accuracy).

    Candidates are midpoints between consecutive distinct finite scores (plus both ends).
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    finite = np.unique(scores[np.isfinite(scores)])
    if len(finite) == 0:
        return np.inf, float((~same).mean())
    cands = np.concatenate([[finite[0] - 1.0], (finite[:-1] + finite[1:]) / 2, [finite[-1] + 1.0]])
    order = np.argsort(scores, kind="stable")
    s_sorted, y_sorted = scores[order], same[order]
    # accuracy(t) = (#same with s>=t + #diff with s<t) / n, via cumulative counts
    idx = np.searchsorted(s_sorted, cands, side="left")  # number of scores < t
    diff_below = np.concatenate([[0], np.cumsum(~y_sorted)])[idx]
    same_below = np.concatenate([[0], np.cumsum(y_sorted)])[idx]
    acc = (diff_below + (same.sum() - same_below)) / len(scores)
    k = int(np.argmax(acc))
    return float(cands[k]), float(acc[k])


def kfold_correct(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """LFW protocol per pair: whether each pair is decided right with the threshold chosen on the other
    folds; returns (correct per pair, threshold per fold in ``np.unique(folds)`` order)."""
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(folds)
    correct, thrs = np.zeros(len(scores), bool), []
    for f in np.unique(folds):
        test = folds == f
        t, _ = best_threshold(scores[~test], same[~test])
        correct[test] = (scores[test] >= t) == same[test]
        thrs.append(t)
    return correct, thrs


def _fold_means(correct: np.ndarray, folds: np.ndarray) -> np.ndarray:
    return np.array([correct[folds == f].mean() for f in np.unique(folds)])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """LFW protocol: threshold chosen on the other folds, accuracy measured on the held-out fold."""
    folds = np.asarray(folds)
    correct, thrs = kfold_correct(scores, same, folds)
    accs = _fold_means(correct, folds).tolist()
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "fold_accuracies": accs,
            "thresholds": thrs}


def paired_comparison(scores_a: np.ndarray, scores_b: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """Model A against model B on the *same* pairs, each with its own cross-validated thresholds.

    The fold-to-fold spread of one model's accuracy (the ``std`` of :func:`kfold_accuracy`) mostly
    measures how hard each fold's pairs are, which both models share; whether A beats B is read from
    the pairs they decide differently. McNemar's exact test: under "equally good", each of the n
    discordant pairs is A's with probability 1/2, so p = P(|Bin(n, 1/2) - n/2| >= |a_only - n/2|).
    """
    folds = np.asarray(folds)
    ca, _ = kfold_correct(scores_a, same, folds)
    cb, _ = kfold_correct(scores_b, same, folds)
    diffs = _fold_means(ca, folds) - _fold_means(cb, folds)
    a_only, b_only = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    n, k = a_only + b_only, min(a_only, b_only)
    # exact two-sided binomial tail, in integers (n is at most the number of pairs)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"difference": float(diffs.mean()), "fold_differences": diffs.tolist(),
            "folds_a_better": int(np.sum(diffs > 0)), "folds_b_better": int(np.sum(diffs < 0)),
            "a_only_correct": a_only, "b_only_correct": b_only, "mcnemar_p": float(p)}


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, threshold) for every distinct threshold, sorted by increasing FAR."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # keep the last index of each tied run
    tar = np.r_[0.0, tp[last] / max(y.sum(), 1)]
    far = np.r_[0.0, fp[last] / max((~y).sum(), 1)]
    thr = np.r_[np.inf, s[last]]
    return far, tar, thr


def tar_at_far(scores: np.ndarray, same: np.ndarray, far_target: float) -> tuple[float, float]:
    """Highest TAR whose FAR <= far_target; returns (tar, threshold)."""
    far, tar, thr = roc(scores, same)
    ok = np.flatnonzero(far <= far_target + 1e-12)
    k = ok[-1]
    return float(tar[k]), float(thr[k])


def verification_report(scores: np.ndarray, same: np.ndarray, folds: np.ndarray,
                        fars: tuple[float, ...] = (1e-2, 1e-3)) -> dict:
    """Every figure the evaluation tables print, as plain JSON-able values."""
    out = kfold_accuracy(scores, same, folds)
    out["n_pairs"] = int(len(scores))
    out["n_unscored"] = int((~np.isfinite(np.asarray(scores, np.float64))).sum())
    for f in fars:
        out[f"tar@far={f:g}"] = tar_at_far(scores, same, f)[0]
    return out


def check_far(far: float) -> None:
    if not 0 < far <= 1:
        raise ValueError(f"--far must be in (0, 1], got {far:g}")


def calibration_pairs(labels: np.ndarray, photos: np.ndarray | None = None, max_impostors: int = 2_000_000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs for TAR at FAR: every genuine pair (never two copies of one photo), and every impostor pair while
    all pairs number at most ``max_impostors``, else that many random pairs kept when their labels differ.

    Drawn, not enumerated past that: all pairs of 15,000 faces are 112 M, gigabytes of indices.
    """
    labels = np.asarray(labels)
    n = len(labels)
    photos = np.arange(n) if photos is None else np.asarray(photos)
    if n * (n - 1) // 2 <= max_impostors:
        i, j = np.triu_indices(n, 1)
    else:
        order = np.argsort(labels, kind="stable")
        groups = np.split(order, np.flatnonzero(labels[order][1:] != labels[order][:-1]) + 1)  # one label's rows
        tri = [np.triu_indices(len(g), 1) for g in groups]
        rng = np.random.default_rng(seed)
        ii, ij = rng.integers(0, n, max_impostors), rng.integers(0, n, max_impostors)
        imp = labels[ii] != labels[ij]
        i = np.concatenate([g[a] for g, (a, _) in zip(groups, tri)] + [ii[imp]])
        j = np.concatenate([g[b] for g, (_, b) in zip(groups, tri)] + [ij[imp]])
    keep = photos[i] != photos[j]
    return i[keep], j[keep]


def calibrate(embeddings: np.ndarray, labels: np.ndarray, far: float, max_impostors: int = 2_000_000,
              seed: int = 0, masked: np.ndarray | None = None, photos: np.ndarray | None = None) -> dict:
    """Threshold for a target FAR over the pairs of :func:`calibration_pairs`.

    ``masked``: each face's mask flag; then ``by_condition`` also holds the threshold of each comparison condition
    ("u-u", "m-u", "m-m") that has genuine and impostor pairs, from those pairs alone (what
    :meth:`FaceRecognizer.threshold_for` applies; masked faces look more alike, so "m-m" needs a higher one).
    ``photos``: faces with the same number are copies of one photo (a photo and its ``maskfr mask`` copy); they
    are never paired, as such a pair is far easier than two photos of one person.
    """
    check_far(far)
    labels = np.asarray(labels)
    i, j = calibration_pairs(labels, photos, max_impostors, seed)
    scores = np.concatenate([np.einsum("nd,nd->n", embeddings[i[k:k + 100_000]], embeddings[j[k:k + 100_000]])
                             for k in range(0, len(i), 100_000)] or [np.zeros(0)])  # a chunk at a time: 2 M x 512
    same = labels[i] == labels[j]
    if same.sum() == 0 or (~same).sum() == 0:
        raise ValueError("calibration needs at least one identity with 2+ images and 2+ identities")
    report = {"far": far, **_threshold_at(scores, same, far)}
    if masked is not None:
        m = np.asarray(masked, int)
        cond = np.array(["u-u", "m-u", "m-m"])[m[i] + m[j]]  # how many of the two faces are masked
        report["by_condition"] = {c: _threshold_at(scores[cond == c], same[cond == c], far)
                                  for c in ("u-u", "m-u", "m-m") if same[cond == c].any() and (~same[cond == c]).any()}
    return report


def _threshold_at(scores: np.ndarray, same: np.ndarray, far: float) -> dict:
    tar, thr = tar_at_far(scores, same, far)
    if (~same).sum() * far < 10:
        note = f"only {(~same).sum()} impostor pairs: FAR {far:g} is poorly estimated (want >= {int(10 / far)})"
    else:
        note = ""
    if not np.isfinite(thr):  # inf would print as Infinity, which is not JSON
        thr = float(np.nextafter(float(scores.max()), np.inf))
        note = ("the most similar pair is an impostor pair (mislabelled images?): only a threshold above every "
                f"score reaches FAR {far:g}" + (f"; {note}" if note else ""))
    return {"threshold": thr, "tar": tar, "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum()),
            "note": note}
