"""False faces: detections on pictures that hold no face, for each detector folder, in colour and in grey.

A detector tuned for masked-face recall can start seeing faces in cloth patterns and textures, which is
what a lower score threshold or new training data risks. The pictures: 15 face-free photos and drawings
that ship with scikit-image, and every image under ``--masks``'s ``textures/`` (the fills of the synthetic
masks); each scaled so its longer side is 640 pixels, then run as is and as its luma (a night camera).
Every detection is a false face; the table prints their count and the pictures and scores behind them.

    python benchmarks/false_faces.py --masks ../shared/data/masks --mtcnn "packaged=sdk/models" --mtcnn "other=DIR"
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from maskfr.detector import MODELS_DIR, FaceDetector

SKIMAGE_PICTURES = ("coffee", "coins", "horse", "moon", "page", "text", "rocket", "hubble_deep_field",
                    "immunohistochemistry", "brick", "grass", "gravel", "cell", "clock", "logo")


def _bgr640(img: np.ndarray) -> np.ndarray:
    """Any scikit-image picture (bool, float, grey, RGBA) as a BGR uint8 frame with its longer side 640."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        img = (255 * (img - img.min()) / max(float(np.ptp(img)), 1e-9)).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    s = 640 / max(img.shape[:2])
    return cv2.cvtColor(cv2.resize(img[..., :3], None, fx=s, fy=s, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)


def pictures(masks_root: Path | None) -> list[tuple[str, np.ndarray]]:
    import skimage.data

    from maskfr.training.masks import load_textures
    textures = load_textures(masks_root) if masks_root else []
    return [(name, _bgr640(getattr(skimage.data, name)())) for name in SKIMAGE_PICTURES] + \
        [(f"texture {i}", _bgr640(t)) for i, t in enumerate(textures)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=Path, help="masks folder whose textures/ are added to the pictures")
    ap.add_argument("--mtcnn", action="append", default=[], metavar="LABEL=DIR",
                    help="detector folder to test (repeatable; default: the package's)")
    ap.add_argument("--score-threshold", type=float, help="O-Net threshold (default: the detector's own)")
    args = ap.parse_args()
    dirs = dict(s.split("=", 1) for s in args.mtcnn) or {"packaged": str(MODELS_DIR)}
    frames = pictures(args.masks)
    kw = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    print(f"{len(frames)} face-free pictures, each in colour and in grey; O-Net threshold "
          f"{kw.get('score_threshold', 'default')}\n")
    print("| detector | false faces / frames | where (picture, frame, score) |\n|---|---|---|")
    for label, d in dirs.items():
        det = FaceDetector(models_dir=Path(d), backend="cpu", **kw)
        hits = []
        for name, bgr in frames:
            grey = np.repeat(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None], 3, 2)
            for kind, frame in (("colour", bgr), ("grey", grey)):
                hits += [f"{name} {kind} {f.score:.2f}" for f in det.detect(frame)]
        print(f"| {label} | {len(hits)} of {2 * len(frames)} | {', '.join(hits) or '-'} |")


if __name__ == "__main__":
    main()
