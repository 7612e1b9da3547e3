"""The product pipeline on masked LFW: FaceRecognizer (MTCNN detection + its 5 landmarks + G2D) on full images.

The evaluation tables align every face with dlib's landmarks of the *unmasked* image (an oracle, so that
recognition is measured on its own). A deployment has no such oracle: it must find the masked face and
place its landmarks itself. This script runs exactly what a user runs, ``FaceRecognizer.analyze`` on the
full 250x250 LFW image, unmasked and with the same synthetic mask as the aligned-face cache (same
landmarks, same seed), and scores the pairs of the chosen folds:

* found: MTCNN returned a face whose box overlaps dlib's unmasked box (IoU >= 0.5), the one nearest the
  centre; a pair with a missing face scores -inf (a miss, never dropped);
* oracle rows: the same model on the cache's oracle-aligned crops, same pairs, for comparison.

``--model`` takes any 112-crop ONNX embedder, e.g. dlib's network with no training (export a checkpoint of
``create_student(pretrained=True)``) to compare the off-the-shelf recogniser in the same pipeline.

    python benchmarks/end_to_end.py --lfw ../shared/data/lfw --masks ../shared/data/masks --folds 9-10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from detection import _centre_dist  # benchmarks/detection.py: the same "face nearest the centre" rule

from maskfr.detector import box_iou
from maskfr.recognizer import DEFAULT_MODEL, FaceRecognizer
from maskfr.training import cache as fc
from maskfr.training.data import LFW
from maskfr.training.embedders import l2n, onnx_embedder
from maskfr.training.evaluate import TABLE_HEADER, evaluate, lfw_pairs, markdown_rows
from maskfr.training.masks import MaskSynth


def runtime_embeddings(rec: FaceRecognizer, paths: list[str], index: np.ndarray, synth: MaskSynth) -> dict:
    """Per image and condition: embedding of the detected face matching dlib's box (zeros + found=False if none)."""
    from tqdm import tqdm
    dim = rec.new_gallery().dim
    out = {m: (np.zeros((len(paths), dim), np.float32), np.zeros(len(paths), bool)) for m in (False, True)}
    for i, (p, idx) in enumerate(tqdm(list(zip(paths, index)), desc="runtime", unit="img")):
        f = fc.masked_frame(p, int(idx), synth)
        if not f["found"]:  # no dlib reference box: counted as missed
            continue
        for masked, rgb in ((False, f["img"]), (True, f["masked"])):
            faces = rec.analyze([np.ascontiguousarray(rgb[..., ::-1])])[0]
            if not faces:
                continue
            near = min(faces, key=lambda x: _centre_dist(x.box, rgb.shape))
            if box_iou(f["box"], near.box[None])[0] >= 0.5:
                out[masked][0][i], out[masked][1][i] = near.embedding, True
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--masks", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--folds", default="9-10")
    ap.add_argument("--out", type=Path, default=fc.CACHE_ROOT / "eval" / "end_to_end")
    a = ap.parse_args()
    lo, _, hi = a.folds.partition("-")
    pairs = lfw_pairs(a.lfw, list(range(int(lo), int(hi or lo) + 1)))
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    with np.load(fc.CACHE_ROOT / "lfw.npz") as z:
        # a cache built on every LFW image in path order (as `maskfr train` builds it): its row is the mask seed
        n_lfw = len(LFW(a.lfw).samples())
        if len(z["path"]) != n_lfw:
            raise SystemExit(f"the LFW cache holds {len(z['path'])} faces, not all {n_lfw}: its rows are not the "
                             "mask seeds; build it with `maskfr train` (all of LFW) first")
        rows = np.flatnonzero(np.isin(z["path"], need))
        sub = {k: z[k][rows] for k in ("path", "img112", "img112_masked", "found", "found_masked", "box", "box_masked")}
    rec = FaceRecognizer(a.model, backend="cpu")
    emb = runtime_embeddings(rec, sub["path"].tolist(), rows, MaskSynth(a.masks))
    lines = list(TABLE_HEADER)
    oracle = onnx_embedder(a.model)(sub)
    name = a.model.stem
    lines += markdown_rows(evaluate(oracle, sub, pairs, a.out, f"{name}, oracle alignment (dlib, unmasked image)"))
    # detection as found by the runtime replaces dlib's in the end-to-end column
    run = dict(sub, found=emb[False][1], found_masked=emb[True][1], box_masked=sub["box"])
    rep = evaluate(lambda m: l2n(emb[m][0]), run, pairs, a.out, f"{name}, FaceRecognizer (MTCNN)")
    lines += markdown_rows(rep)
    d = rep["detection"]
    print(f"runtime detection (MTCNN): unmasked {d['found_unmasked']}/{d['images']}, "
          f"masked {d['found_masked']}/{d['found_unmasked']} ({100 * d['rate_masked']:.1f} %)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
