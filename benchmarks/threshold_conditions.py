"""One pooled threshold against one per mask condition: FAR and TAR on people the thresholds never saw.

Masked faces look more alike than bare ones, so a threshold calibrated on masked and unmasked comparisons pooled
(the packaged model's ``far=1e-3``) lets more masked-masked impostors through than its FAR says and is stricter
than it needs to be on the other comparisons. Here the people of LFW folds 6-10 (never trained on) are split in
two halves at random; both kinds of threshold are calibrated on one half (:func:`recommended_thresholds`, as
``maskfr thresholds`` does) and measured on the other, on every pair of different faces of each condition:
unmasked-unmasked (u-u), masked-unmasked (m-u) and masked-masked (m-m). Several random splits.

    PYTHONPATH=... python benchmarks/threshold_conditions.py --lfw ../shared/data/lfw [--model M.onnx] [--splits 3]

Needs the aligned-face cache of all of LFW (``maskfr train`` or ``maskfr eval`` builds it).
"""
from __future__ import annotations

import argparse

import numpy as np

from maskfr.recognizer import DEFAULT_MODEL
from maskfr.training import cache as fc
from maskfr.training.data import LFW
from maskfr.training.embedders import onnx_embedder
from maskfr.training.evaluate import recommended_thresholds

CONDITIONS = ("u-u", "m-u", "m-m")


def condition_scores(clean: np.ndarray, masked: np.ndarray, labels: np.ndarray) -> dict[str, tuple]:
    """(genuine, impostor) similarities per condition over every pair of different faces (ordered for m-u)."""
    same = labels[:, None] == labels[None, :]
    upper, off = np.triu(np.ones_like(same), 1), ~np.eye(len(labels), dtype=bool)
    out = {}
    for cond, a, b in zip(CONDITIONS, (clean, masked, masked), (clean, clean, masked)):
        s, pairs = a @ b.T, (off if cond == "m-u" else upper)
        out[cond] = (s[same & pairs], s[~same & pairs])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--splits", type=int, default=3)
    a = ap.parse_args(argv)
    lfw = LFW(a.lfw)
    people = sorted({p for fold in lfw.people_folds()[5:10] for p in fold})
    with np.load(fc.lfw_cache_path(), allow_pickle=False) as z:
        rows = np.flatnonzero(np.isin(z["identity"], people))
        sub = {k: z[k][rows] for k in z.files if k != "masks"}  # every field but the mask recipe
    embed = onnx_embedder(a.model)(sub)
    clean, masked = embed(False), embed(True)
    names, labels = np.unique(sub["identity"], return_inverse=True)
    rng = np.random.default_rng(0)
    print(f"{a.model}: {len(labels)} faces of {len(names)} people (LFW folds 6-10), two halves of the people\n")
    print("| split | FAR | condition | pooled threshold: FAR / TAR | per-condition threshold: FAR / TAR |")
    print("|---|---|---|---|---|")
    for split in range(a.splits):
        half = rng.permutation(len(names))[: len(names) // 2]
        fit, test = np.isin(labels, half), ~np.isin(labels, half)
        thr = recommended_thresholds(lambda m: (masked if m else clean)[fit],
                                     {"identity": sub["identity"][fit]})["thresholds"]
        scores = condition_scores(clean[test], masked[test], labels[test])
        for far in ("far=1e-2", "far=1e-3"):
            for cond in CONDITIONS:
                gen, imp = scores[cond]
                cells = [f"{np.mean(imp >= t):.1e} / {100 * np.mean(gen >= t):.1f} % (>= {t:.4f})"
                         for t in (thr[far], thr[f"{far},{cond}"])]
                print(f"| {split} | {far[4:]} | {cond} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
