"""The product pipeline on masked LFW: FaceRecognizer (MTCNN detection + its 5 landmarks + G2D) on full images.

The evaluation tables align every face with dlib's landmarks of the *unmasked* image (an oracle, so that
recognition is measured on its own). A deployment has no such oracle: it must find the masked face and
place its landmarks itself. This script runs exactly what a user runs, ``FaceRecognizer.analyze`` on the
full 250x250 LFW image, unmasked and with the same synthetic mask as the aligned-face cache (same
landmarks, same seed), and scores the pairs of the chosen folds:

* found: the pipeline returned a face whose box overlaps dlib's unmasked box (IoU >= 0.5), the one nearest
  the centre; a pair with a missing face scores -inf (a miss, never dropped);
* oracle rows: the same model on the cache's oracle-aligned crops, same pairs, for comparison;
* ``--baseline face_recognition``: the `face_recognition` library as its README uses it (HOG detector,
  5-point landmarks, dlib's ResNet, one jitter; ``pip install --no-deps face_recognition==1.3.0``) on the same
  frames, timed image by image alongside ours, and both scored at their out-of-the-box thresholds too
  (face_recognition: distance <= 0.6; maskfr: the model's recommended similarities, FAR 1e-3 the default).

``--eye-px N [--blur-px L] [--jpeg Q] [--grey]`` give every frame, masked or not, as a camera further away would
(the face shrunk to an N-pixel eye distance in a 640x480 frame, smeared, compressed, luma only as a night camera
gives: ``detection.camera_frame``);
the oracle rows, which need dlib's sharp crops, are then left out. ``--min-face`` sets our detector's smallest
face.

``--model`` takes any 112-crop ONNX embedder, e.g. dlib's network with no training (export a checkpoint of
``create_student(pretrained=True)``) to compare the off-the-shelf recogniser in the same pipeline.
``--also-model`` (repeatable) scores more models on the very faces, landmarks and crops that ``--model``'s
pipeline found in each frame: detection runs once, and the models' accuracies compare pair by pair.

    python benchmarks/end_to_end.py --lfw ../shared/data/lfw --masks ../shared/data/masks --folds 9-10
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
from detection import _centre_dist, add_camera_args, camera_frame  # benchmarks/detection.py: same rules, frames

from maskfr.align import align_face
from maskfr.cli import MASK_STYLES
from maskfr.detector import FaceDetector, box_iou
from maskfr.recognizer import DEFAULT_MODEL, FaceRecognizer
from maskfr.training import cache as fc
from maskfr.training.dlib_models import five_from_68
from maskfr.training.embedders import l2n, onnx_embedder
from maskfr.training.evaluate import SETTINGS, TABLE_HEADER, evaluate, lfw_pairs, markdown_rows, pair_index
from maskfr.training.masks import MaskSynth

#: frame (RGB) -> every face found, as (box l, t, r, b; embedding; mask flag, None where not known)
Pipeline = Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray, bool | None]]]


def maskfr_pipeline(rec: FaceRecognizer, seen: dict | None = None) -> Pipeline:
    """What a user runs; ``seen`` keeps the last frame and its faces for :func:`same_faces_pipeline`."""
    def run(rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, bool | None]]:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        faces = rec.analyze([bgr])[0]
        if seen is not None:
            seen.update(rgb=rgb, bgr=bgr, faces=faces)
        return [(f.box, f.embedding, f.masked) for f in faces]
    return run


def same_faces_pipeline(rec: FaceRecognizer, seen: dict) -> Pipeline:
    """Another model on the faces the leading :func:`maskfr_pipeline` found in this same frame (it runs first)."""
    def run(rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, bool | None]]:
        if seen.get("rgb") is not rgb:
            raise RuntimeError("the leading pipeline must run first on each frame")
        if not seen["faces"]:
            return []
        crops = np.stack([align_face(seen["bgr"], f.landmarks) for f in seen["faces"]])
        return [(f.box, e, f.masked) for f, e in zip(seen["faces"], rec.embed(crops, aligned=True))]
    return run


def face_recognition_pipeline() -> Pipeline:
    """What `face_recognition.face_encodings(image)` does, with the boxes kept to match faces."""
    import face_recognition as fr

    def run(rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, bool | None]]:
        locs = fr.face_locations(rgb)  # (top, right, bottom, left), HOG, upsampled once
        encs = fr.face_encodings(rgb, known_face_locations=locs)
        return [(np.array([l, t, r, b], np.float32), e, None) for (t, r, b, l), e in zip(locs, encs)]
    return run


def run_pipelines(pipelines: dict[str, Pipeline], paths: list[str], index: np.ndarray, synth: MaskSynth,
                  dim: dict[str, int], camera: dict | None = None, followers: tuple[str, ...] = ()) -> dict[str, dict]:
    """Per pipeline, image and condition: the embedding of the face matching dlib's box (zeros + found=False if
    none), and seconds per call. Pipelines take turns on each frame, the order alternating, so their timings
    share the machine's state; ``followers`` (:func:`same_faces_pipeline`) run after them.
    ``camera``: ``camera_frame``'s ``eye_px``, ``blur_px``, ``jpeg``, ``grey``, ``seed``."""
    from tqdm import tqdm
    leaders = [k for k in pipelines if k not in followers]
    out = {k: {"emb": {m: np.zeros((len(paths), dim[k]), np.float32) for m in (False, True)},
               "found": {m: np.zeros(len(paths), bool) for m in (False, True)},
               "flag": {m: np.full(len(paths), -1, np.int8) for m in (False, True)},  # mask flag, -1 not known
               "seconds": {False: [], True: []}} for k in pipelines}
    for i, (p, idx) in enumerate(tqdm(list(zip(paths, index)), desc="pipelines", unit="img")):
        f = fc.masked_frame(p, int(idx), synth)
        if not f["found"]:  # no dlib reference box: counted as missed
            continue
        order = (leaders if i % 2 == 0 else leaders[::-1]) + list(followers)
        frames, ref_box = {False: f["img"], True: f["masked"]}, f["box"]
        if camera:
            ref = {"box": f["box"], "five": five_from_68(f["lm68"]), "lm68": f["lm68"]}
            for m, rgb in frames.items():  # the same blur direction for both copies of a face
                frames[m], moved = camera_frame(rgb, ref, np.random.default_rng([camera["seed"], i]),
                                                camera["eye_px"], camera["blur_px"], camera["jpeg"], camera["grey"])
                ref_box = moved["box"]
        for masked, rgb in frames.items():
            for k in order:
                t = time.perf_counter()
                faces = pipelines[k](rgb)
                out[k]["seconds"][masked].append(time.perf_counter() - t)
                if not faces:
                    continue
                box, emb, flag = min(faces, key=lambda x: _centre_dist(x[0], rgb.shape))
                if box_iou(ref_box, box[None])[0] >= 0.5:
                    out[k]["emb"][masked][i], out[k]["found"][masked][i] = emb, True
                    out[k]["flag"][masked][i] = -1 if flag is None else int(flag)
    return out


def fixed_threshold_accuracy(r: dict, sub: dict, pairs: list, same_if: Callable[..., np.ndarray]) -> dict[str, float]:
    """Accuracy per setting when the pipeline decides with its own threshold(s) (a missing face: 'different');
    ``same_if(emb_a, emb_b, flag_a, flag_b)``, the flags being each face's mask flag (-1: not known)."""
    ia, ib, same, _ = pair_index(pairs, sub["path"])
    acc = {}
    for setting, (ma, mb) in SETTINGS.items():
        says = same_if(r["emb"][ma][ia], r["emb"][mb][ib], r["flag"][ma][ia], r["flag"][mb][ib]) \
            & r["found"][ma][ia] & r["found"][mb][ib]
        acc[setting] = float(np.mean(says == same))
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--masks", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--also-model", type=Path, action="append", default=[],
                    help="another ONNX model, scored on the faces --model's pipeline found (repeatable)")
    ap.add_argument("--folds", default="9-10")
    ap.add_argument("--mask-style", choices=list(MASK_STYLES), default="mixed",
                    help="mask family (as `maskfr eval --mask-style`; reads that command's cache)")
    ap.add_argument("--baseline", choices=["face_recognition"], help="also run this library on the same frames")
    add_camera_args(ap)
    ap.add_argument("--threads", type=int, help="ONNX Runtime threads for our detector and model (default: all cores)")
    ap.add_argument("--detector", type=Path, help="folder of MTCNN nets to use instead of the packaged ones")
    ap.add_argument("--out", type=Path, default=fc.CACHE_ROOT / "eval" / "end_to_end")
    a = ap.parse_args()
    lo, _, hi = a.folds.partition("-")
    pairs = lfw_pairs(a.lfw, list(range(int(lo), int(hi or lo) + 1)))
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    cache = fc.lfw_cache_path(a.mask_style)
    if not cache.exists():
        raise SystemExit(f"no aligned-face cache {cache}: build it with `maskfr eval --mask-style {a.mask_style} "
                         f"--folds {a.folds} ...` (or `maskfr train`, all of LFW) first")
    with np.load(cache) as z:
        # fc.build seeds each image's mask with its row, so the frames below get the cache's masks
        rows = np.flatnonzero(np.isin(z["path"], need))
        if len(rows) < len(need):
            raise SystemExit(f"{cache} lacks {len(need) - len(rows)} of the pair images of folds {a.folds}")
        sub = {k: z[k][rows] for k in ("path", "identity", "img112", "img112_masked", "found", "found_masked", "box",
                                        "box_masked")}
    detector = (FaceDetector(min_face=a.min_face, backend="cpu", models_dir=a.detector, threads=a.threads)
                if a.detector else None)
    rec = FaceRecognizer(a.model, detector, backend="cpu", threads=a.threads, min_face=None if detector else a.min_face)
    name, seen = a.model.stem, {}
    pipelines, dim = {name: maskfr_pipeline(rec, seen)}, {name: rec.new_gallery().dim}
    recs = {name: rec}
    for m in a.also_model:
        if m.stem in recs:
            raise SystemExit(f"two models named {m.stem}: give them different file names")
        recs[m.stem] = FaceRecognizer(m, backend="cpu", threads=a.threads)
        pipelines[m.stem], dim[m.stem] = same_faces_pipeline(recs[m.stem], seen), recs[m.stem].new_gallery().dim
    if a.baseline:
        pipelines[a.baseline], dim[a.baseline] = face_recognition_pipeline(), 128
    camera = (dict(eye_px=a.eye_px, blur_px=a.blur_px, jpeg=a.jpeg, grey=a.grey, seed=0)
              if a.eye_px or a.blur_px or a.jpeg or a.grey else None)
    runs = run_pipelines(pipelines, sub["path"].tolist(), rows, MaskSynth(a.masks, **MASK_STYLES[a.mask_style]), dim,
                         camera, tuple(recs)[1:])
    lines = list(TABLE_HEADER)
    if camera is None:  # dlib's crops are of the sharp image
        for k, m in zip(recs, [a.model, *a.also_model]):
            lines += markdown_rows(evaluate(onnx_embedder(m)(sub), sub, pairs, a.out,
                                            f"{k}, oracle alignment (dlib, unmasked image)"))
    else:
        print(f"frames as a camera gives them: {camera}")
    summary = ["| pipeline | faces found unmasked / masked | accuracy % at a fixed threshold (u-u / m-u / m-m) "
               "| ms/image unmasked / masked (median) |", "|---|---|---|---|"]
    for k, r in runs.items():
        # the pipeline's own detection replaces dlib's in the end-to-end column
        run = dict(sub, found=r["found"][False], found_masked=r["found"][True], box_masked=sub["box"])
        label = {name: f"{name}, FaceRecognizer (MTCNN)", a.baseline: f"{k} (HOG + dlib ResNet)"}.get(
            k, f"{k}, FaceRecognizer on {name}'s faces (ms: embedding only)")
        rep = evaluate(lambda m, r=r: l2n(r["emb"][m]), run, pairs, a.out, label)
        lines += markdown_rows(rep)
        if k in recs:  # each of the model's pooled thresholds, then what the runtime does: one per mask condition
            rules = {f"{far}: similarity >= {t:.4f}": (lambda x, y, *_, t=t: np.sum(x * y, axis=1) >= t)
                     for far, t in sorted(recs[k].thresholds.items()) if "," not in far}
            if any("," in far for far in recs[k].thresholds):
                rules["far=1e-3 per mask condition, from each face's mask flag: the runtime's default"] = \
                    lambda x, y, fx, fy, rec=recs[k]: np.sum(x * y, axis=1) >= np.array(
                        [rec.threshold_for(*(None if v < 0 else bool(v) for v in f)) for f in zip(fx, fy)])
        else:
            rules = {"distance <= 0.6": lambda x, y, *_: np.linalg.norm(x - y, axis=1) <= 0.6}
        ms = [1e3 * float(np.median(r["seconds"][m])) for m in (False, True)]
        found = f"{r['found'][False].sum()} / {r['found'][True].sum()} of {sub['found'].sum()}"
        for rule, same_if in rules.items():
            acc = fixed_threshold_accuracy(r, sub, pairs, same_if)
            summary.append(f"| {label} | {found} | {' / '.join(f'{100 * acc[s]:.2f}' for s in SETTINGS)} ({rule}) | "
                           f"{ms[0]:.1f} / {ms[1]:.1f} |")
    print("\n".join(lines))
    print("\n".join(summary))


if __name__ == "__main__":
    main()
