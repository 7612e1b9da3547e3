"""Aligned-face cache: detect once, store aligned crops for training and evaluation.

For every image we store (all uint8 RGB unless noted):

* ``img112`` / ``img112_masked``: the canonical 112x112 ArcFace crop, unmasked and
  with a synthetic mask drawn on the full image (seeded by the image index, so the
  masked set is the same every run); ``occ112``: the mask's occlusion map.
* ``chip150`` / ``chip150_masked``: dlib's own 150x150 chip (teacher input).
* ``lm68_112``: the 68 landmarks in crop coordinates, so training can draw fresh
  masks on the crops every epoch without detecting again.
* ``found`` / ``found_masked``, ``box`` / ``box_masked``: did dlib's HOG detector
  find the face (nearest the centre), unmasked and masked; ``box_masked`` is all -1
  when nothing was found. Alignment always uses the unmasked landmarks (the
  "oracle" alignment); when HOG misses the unmasked face, landmarks are fitted in
  a fallback centre box and ``found`` is False — counted, never dropped.

Work is done in chunks saved as they finish, so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np

from maskfr.align import similarity_transform, template, warp_face
from maskfr.training.data import Sample

CHUNK = 256
# face caches (LFW ~2.8 GB, the CelebA subset ~1.4 GB), teacher embeddings and runs; $MASKFR_CACHE moves them off
# a small home disk
CACHE_ROOT = Path(os.environ.get("MASKFR_CACHE") or Path.home() / ".cache" / "maskfr")
FIELDS = ("img112", "img112_masked", "occ112", "chip150", "chip150_masked", "lm68_112", "found", "found_masked",
          "box", "box_masked", "score")


def lfw_cache_path(mask_style: str = "mixed") -> Path:
    """Where the CLI and benchmarks keep the LFW cache of a mask style (``maskfr eval --mask-style``)."""
    return CACHE_ROOT / ("lfw.npz" if mask_style == "mixed" else f"lfw-{mask_style}.npz")


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as RGB uint8, with an error that names the file."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path!r} (missing, corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _dlib_chip(img: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    import dlib
    rect = dlib.rectangle(0, 0, img.shape[1], img.shape[0])
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in lm68])
    return np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))


def _detect(img: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    from maskfr.training.dlib_models import hog_detector
    dets, scores, _ = hog_detector().run(img, upsample, 0.0)
    if not dets:
        return np.full(4, -1, np.float32), 0.0
    h, w = img.shape[:2]
    k = int(np.argmin([(d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2 for d in dets]))
    d = dets[k]
    return np.array([d.left(), d.top(), d.right(), d.bottom()], np.float32), float(scores[k])


def masked_frame(path: str, index: int, synth, upsample: int = 1) -> dict:
    """The full image, its masked copy (mask seeded by ``index``), occlusion map, dlib box and 68 landmarks.

    This is the masked image every cache row and evaluation uses; :func:`process_one` crops from it.
    """
    from maskfr.training.dlib_models import shape_predictor
    import dlib
    img = read_rgb(path)
    h, w = img.shape[:2]
    box, score = _detect(img, upsample)
    found = bool(box[0] >= 0)
    rect_box = box if found else np.array([w * 0.27, h * 0.27, w * 0.73, h * 0.73], np.float32)
    shape = shape_predictor(68)(img, dlib.rectangle(*[int(v) for v in rect_box]))
    lm68 = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    masked, occ = synth(img, lm68, np.random.default_rng(index))
    return {"img": img, "masked": masked, "occ": occ, "box": box, "score": score, "found": found, "lm68": lm68}


def process_one(path: str, index: int, synth, upsample: int = 1) -> dict:
    from maskfr.training.dlib_models import five_from_68
    f = masked_frame(path, index, synth, upsample)
    img, masked, occ, box, score, found, lm68 = (f[k] for k in ("img", "masked", "occ", "box", "score", "found", "lm68"))
    box_m, _ = _detect(masked, upsample)
    M = similarity_transform(five_from_68(lm68), template(112))
    lm112 = (lm68 @ M[:, :2].T + M[:, 2]).astype(np.float32)
    return {
        "img112": warp_face(img, M), "img112_masked": warp_face(masked, M),
        "occ112": warp_face(occ.astype(np.uint8), M), "chip150": _dlib_chip(img, lm68),
        "chip150_masked": _dlib_chip(masked, lm68), "lm68_112": lm112, "found": found,
        "found_masked": bool(box_m[0] >= 0), "box": box, "box_masked": box_m, "score": score,
    }


_SYNTH = None


def _init(masks_root, mask_kw):
    global _SYNTH
    from maskfr.training.masks import MaskSynth
    _SYNTH = MaskSynth(masks_root, **mask_kw)


def _work(args):
    path, index = args
    return process_one(path, index, _SYNTH)


def cache_key(samples: list[Sample], masks_root, mask_kw: dict) -> str:
    h = hashlib.sha1(json.dumps([[s.path, s.identity] for s in samples]
                                + [str(masks_root), sorted(mask_kw.items()), 4]).encode())
    return h.hexdigest()[:12]


def build(samples: list[Sample], out: str | Path, masks_root: str | Path | None, workers: int = 2,
          **mask_kw: float) -> Path:
    """Build (or resume) the cache for these samples at ``out`` (.npz); returns its path.

    ``mask_kw``: :class:`MaskSynth`'s shares of mask kinds (``p_template``, ``p_below_nose``, ``p_scarf``).
    """
    from tqdm import tqdm

    from maskfr.training.masks import MaskSynth
    out = Path(out)
    # a bad masks folder raises here, not in each worker's initializer (restarted forever)
    recipe = json.dumps(mask_recipe(MaskSynth(masks_root, **mask_kw)), sort_keys=True)
    if out.exists():
        # a cache built for other images (``maskfr eval`` keeps only its pairs' images, at the default path
        # training uses too) served training without the missing faces, in silence
        lacking = missing(out, samples)
        if lacking:
            raise ValueError(f"the cache {out} holds {len(samples) - len(lacking)} of the {len(samples)} images "
                             "asked for (it was built for others, e.g. by 'maskfr eval', which keeps only its pairs' "
                             f"images; it lacks {lacking[0]}): delete it to have it rebuilt (or give 'maskfr eval' "
                             "another --cache)")
        with np.load(out, allow_pickle=False) as z:
            built = str(z["masks"]) if "masks" in z.files else None  # caches from before the recipe was stored
        if built is not None and built != recipe:
            raise ValueError(f"the cache {out} holds masks drawn as {built}, these are asked as {recipe} (another "
                             "--masks folder or --mask-style): delete it to have it rebuilt, or give another --cache")
        return out
    parts = out.with_suffix(f".parts-{cache_key(samples, masks_root, mask_kw)}")
    parts.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(0, len(samples), CHUNK) if not (parts / f"{i:07d}.npz").exists()]
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=(masks_root, mask_kw)) as pool, \
            tqdm(total=len(samples), initial=len(samples) - sum(min(CHUNK, len(samples) - i) for i in todo),
                 desc=f"cache {out.name}", unit="img") as bar:
        for start in todo:
            idx = range(start, min(start + CHUNK, len(samples)))
            rows = []
            for r in pool.imap(_work, [(samples[i].path, i) for i in idx], chunksize=4):
                rows.append(r)
                bar.update()
            tmp = parts / f"{start:07d}.tmp.npz"
            np.savez(tmp, **{k: np.stack([r[k] for r in rows]) for k in FIELDS})
            tmp.rename(parts / f"{start:07d}.npz")
    chunks = [np.load(parts / f"{i:07d}.npz") for i in range(0, len(samples), CHUNK)]
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in FIELDS}
    merged["path"] = np.array([s.path for s in samples])
    merged["identity"] = np.array([s.identity for s in samples])
    merged["masks"] = np.array(recipe)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **merged)
    tmp.rename(out)
    for p in parts.iterdir():
        p.unlink()
    parts.rmdir()
    return out


def mask_recipe(synth) -> dict:
    """What drew a set of masked faces, so it is never reused for masks drawn otherwise: the template and
    texture counts of the masks folder (0 without one) and the shares of each kind."""
    recipe = {"templates": len(synth.templates), "textures": len(synth.textures), "p_template": synth.p_template,
              "p_below_nose": synth.p_below_nose, "p_scarf": synth.p_scarf}
    if synth.p_sunglasses:  # only then: the caches built before it existed keep their recipe
        recipe["p_sunglasses"] = synth.p_sunglasses
    return recipe


def _refuse(path: str | Path, why: str) -> ValueError:
    return ValueError(f"the cache {path} is {why}, not an aligned-face cache of maskfr: delete it to have it rebuilt, "
                      "or give another --cache")


def _read(path: str | Path, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """``fields`` of a built cache (None: every one but the mask recipe). numpy's errors for a damaged or foreign
    file named no file (a BadZipFile traceback, "path is not a file in the archive") or advised loading it with
    pickle."""
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise _refuse(path, "damaged (truncated?) or another kind of file") from None
    if not hasattr(z, "files"):  # a bare .npy array
        raise _refuse(path, "a single array")
    with z:
        lacking = sorted(set(fields or FIELDS + ("path", "identity")) - set(z.files))
        if lacking:
            raise _refuse(path, f"an archive lacking {', '.join(lacking)}")
        try:
            return {k: z[k] for k in fields or [k for k in z.files if k != "masks"]}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):  # an object array, a member cut short
            raise _refuse(path, "damaged (a part of it cannot be read)") from None


def missing(path: str | Path, samples: list[Sample]) -> list[str]:
    """The paths of ``samples`` that the built cache at ``path`` does not hold."""
    paths = _read(path, ("path",))["path"].tolist()
    have = set(paths)
    lacking = [s.path for s in samples if s.path not in have]
    # the same dataset at another path (moved, mounted elsewhere) was called a cache "built for other images"
    moved = lacking and next((p for p in paths if Path(p).parts[-2:] == Path(lacking[0]).parts[-2:]), None)
    if moved:
        raise ValueError(f"the cache {path} was built from the images at another path ({moved}; asked now: "
                         f"{lacking[0]}): give the folder it was built from, or another --cache")
    return lacking


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Load a cache into memory: one array per field, a row per image (no pickled objects)."""
    return _read(path)
