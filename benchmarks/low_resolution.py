"""Low-resolution faces: accuracy of ONNX students and the teacher when every face is shrunk and scaled back up.

A camera a few metres away gives faces of 30-60 pixels, which the alignment scales up to the 112x112 crop.
This shrinks the oracle-aligned crops of the LFW cache to N pixels across (INTER_AREA) and back (bilinear),
and dlib's 150x150 chips, which show the face 1.5x larger, to the same number of pixels per face, then scores
the pairs of the chosen folds, masked and not, each model against the teacher pair by pair:

    python benchmarks/low_resolution.py --lfw ../shared/data/lfw --model sdk/models/g2d_student.onnx --px 112,56,40,28
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from maskfr.training import cache as fc
from maskfr.training.embedders import dlib_port_embedder, onnx_embedder
from maskfr.training.evaluate import compare, evaluate, lfw_pairs
from maskfr.training.train import shrink_and_restore

#: dlib's chip shows the face 1.5x larger than the 112 crop (the student's first layer, models.ChipResample)
CHIP_FACE_SCALE = 1.5


def shrink(imgs: np.ndarray, scale: float) -> np.ndarray:
    return np.stack([shrink_and_restore(im, scale) for im in imgs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--model", type=Path, action="append", required=True, help="ONNX student (repeatable)")
    ap.add_argument("--folds", default="6-10")
    ap.add_argument("--px", default="112,56,40,28", help="crop widths to shrink to (112 = as cached)")
    a = ap.parse_args()
    lo, _, hi = a.folds.partition("-")
    pairs = lfw_pairs(a.lfw, list(range(int(lo), int(hi or lo) + 1)))
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    cache = fc.load(fc.lfw_cache_path())
    rows = np.flatnonzero(np.isin(cache["path"], need))
    sub = {k: v[rows] for k, v in cache.items()}
    print("| crop px | model | accuracy % u-u / m-u / m-m | model - teacher, points (McNemar p) |\n|---|---|---|---|")
    for px in (int(v) for v in a.px.split(",")):
        s = px / 112
        d = sub if px == 112 else dict(sub, **{k: shrink(sub[k], s) for k in ("img112", "img112_masked")},
                                       **{k: shrink(sub[k], s / CHIP_FACE_SCALE) for k in ("chip150", "chip150_masked")})
        teacher = dlib_port_embedder(d)
        t = {m: teacher(m) for m in (False, True)}
        acc = lambda e: " / ".join(f"{100 * r['accuracy']:.2f}"  # noqa: E731
                                   for r in evaluate(e.__getitem__, d, pairs)["settings"].values())
        print(f"| {px} | teacher (dlib ResNet) | {acc(t)} | |", flush=True)
        for model in a.model:
            embed = onnx_embedder(model)(d)
            e = {m: embed(m) for m in (False, True)}
            diff = " / ".join(f"{100 * c['difference']:+.2f} ({c['mcnemar_p']:.2g})"
                              for c in compare(e, t, d, pairs).values())
            print(f"| {px} | {model.stem} | {acc(e)} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
