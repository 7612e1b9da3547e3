"""Small, moving, compressed faces: accuracy of ONNX students and the teacher on degraded LFW crops.

A camera a few metres away gives faces of 30-60 pixels, which the alignment scales up to the 112x112 crop; a
walking person smears them, and the stream is compressed. Each condition (``--conditions``, comma-separated)
degrades the oracle-aligned crops of the LFW cache with ``maskfr.training.train.degrade``, tokens joined by
``+``: ``N`` shrinks the crop to N pixels across, ``blurL`` smears it with an L-pixel motion blur (one random
direction per image), ``jpegQ`` JPEG-compresses it at quality Q (at the small size), ``grey`` keeps the
luma only (a night camera in infrared mode, roughly: skin and eyes look different in real infrared). dlib's
150x150 chips show the face 1.5x larger; they get the same degradation at the same pixels per face. ``112``
alone is the cache as is. Pairs of the chosen folds, masked and not, each model against the teacher pair by pair:

    python benchmarks/camera_degradation.py --lfw ../shared/data/lfw --model sdk/models/g2d_student.onnx \
        --conditions 112,56,40,28,blur7,jpeg30,40+blur5+jpeg50
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from maskfr.training import cache as fc
from maskfr.training.embedders import dlib_port_embedder, onnx_embedder
from maskfr.training.evaluate import compare, evaluate, lfw_pairs
from maskfr.training.train import degrade

#: dlib's chip shows the face 1.5x larger than the 112 crop (the student's first layer, models.ChipResample)
CHIP_FACE_SCALE = 1.5


def parse_condition(text: str) -> dict:
    """``"40+blur5+jpeg50"`` -> ``dict(px=40, blur_px=5.0, jpeg_quality=50, grey=False)``."""
    cond = dict(px=112, blur_px=0.0, jpeg_quality=None, grey=False)
    for tok in text.split("+"):
        if tok == "grey":
            cond["grey"] = True
        elif tok.startswith("blur"):
            cond["blur_px"] = float(tok[4:])
        elif tok.startswith("jpeg"):
            cond["jpeg_quality"] = int(tok[4:])
        elif tok.isdigit():
            cond["px"] = int(tok)
        else:
            raise ValueError(f"condition {text!r}: {tok!r} is none of N, blurL, jpegQ, grey")
    return cond


def degraded(sub: dict, cond: dict, seed: int) -> dict:
    """The crops and chips of ``sub`` under ``cond``; blur directions drawn per image from ``seed``."""
    if cond == parse_condition("112"):
        return sub
    s = cond["px"] / 112
    deg = np.random.default_rng(seed).uniform(0, 180, len(sub["path"]))
    out = dict(sub)
    for keys, scale, blur in ((("img112", "img112_masked"), s, cond["blur_px"]),
                              (("chip150", "chip150_masked"), s / CHIP_FACE_SCALE, cond["blur_px"] * CHIP_FACE_SCALE)):
        for k in keys:
            out[k] = np.stack([degrade(im, scale, blur, d, cond["jpeg_quality"], cond["grey"])
                               for im, d in zip(sub[k], deg)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--model", type=Path, action="append", required=True, help="ONNX student (repeatable)")
    ap.add_argument("--folds", default="6-10")
    ap.add_argument("--conditions", default="112,56,40,28", help="degradations, see the module docstring")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    lo, _, hi = a.folds.partition("-")
    pairs = lfw_pairs(a.lfw, list(range(int(lo), int(hi or lo) + 1)))
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    cache = fc.load(fc.lfw_cache_path())
    rows = np.flatnonzero(np.isin(cache["path"], need))
    sub = {k: v[rows] for k, v in cache.items()}
    conds = [(c, parse_condition(c)) for c in a.conditions.split(",")]  # all parsed before the first long run
    print("| condition | model | accuracy % u-u / m-u / m-m | model - teacher, points (McNemar p) |\n|---|---|---|---|")
    for name, cond in conds:
        d = degraded(sub, cond, a.seed)
        teacher = dlib_port_embedder(d)
        t = {m: teacher(m) for m in (False, True)}
        acc = lambda e: " / ".join(f"{100 * r['accuracy']:.2f}"  # noqa: E731
                                   for r in evaluate(e.__getitem__, d, pairs)["settings"].values())
        print(f"| {name} | teacher (dlib ResNet) | {acc(t)} | |", flush=True)
        for model in a.model:
            embed = onnx_embedder(model)(d)
            e = {m: embed(m) for m in (False, True)}
            diff = " / ".join(f"{100 * c['difference']:+.2f} ({c['mcnemar_p']:.2g})"
                              for c in compare(e, t, d, pairs).values())
            print(f"| {name} | {model.stem} | {acc(e)} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
