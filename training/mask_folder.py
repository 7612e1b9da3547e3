"""``maskfr mask SRC DST``: a masked copy of a face dataset folder."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from maskfr.fileio import write_then_rename
from maskfr.training.data import IMAGE_EXTS


def mask_folder(src: str | Path, dst: str | Path, masks_root: str | Path | None = None,
                seed: int = 0) -> tuple[int, list[str]]:
    """Mask every image under ``src`` into the same relative path under ``dst``.

    Occlusion maps go to ``dst/_occlusion/<same path>.png`` (``a.jpg`` -> ``a.jpg.png``). Images where no face is
    found, or that cannot be decoded, are copied unmasked and returned in the skipped list
    (never silently lost). ``dst`` may not be ``src`` or lie inside it.

    An interrupted run resumes: ``dst/_occlusion/maskfr-mask.json`` records the seed and the masks, and a re-run
    with the same ones keeps every image already masked (each image's mask is seeded by its place in ``src``, so
    the result is the one run straight through); other ones are refused rather than mixed in.
    """
    from tqdm import tqdm

    from maskfr.training.cache import mask_recipe, read_rgb
    from maskfr.training.dlib_models import detect_landmarks
    from maskfr.training.masks import MaskSynth
    src, dst = Path(src), Path(dst)
    if not src.is_dir():  # a file was called missing
        why = "is not a folder" if src.exists() else "does not exist"
        raise (NotADirectoryError if src.exists() else FileNotFoundError)(
            f"source {src} {why}: give a root/<identity>/*.jpg folder")
    # DST = SRC overwrote the originals with masked copies; DST inside SRC masked the masked copies on a re-run
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"destination {dst} is the source folder {src} or inside it: give a folder outside it")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:  # a mistyped folder "masked 0 images" and exited 0
        raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) under {src}")
    synth = MaskSynth(masks_root)
    recipe = json.dumps({"seed": seed, "masks": mask_recipe(synth)}, sort_keys=True)
    record = dst / "_occlusion" / "maskfr-mask.json"
    resume = record.is_file()
    if resume and record.read_text() != recipe:
        raise ValueError(f"{dst} was masked as {record.read_text()}, this run asks {recipe} (another --seed or "
                         "--masks): give an empty destination, or the same options to resume")
    record.parent.mkdir(parents=True, exist_ok=True)
    write_then_rename(record, recipe.encode())
    done, skipped = 0, []
    for i, path in enumerate(tqdm(files, desc="mask", unit="img")):
        rel = path.relative_to(src)
        out = dst / rel
        occ_path = dst / "_occlusion" / rel.parent / (rel.name + ".png")  # a.jpg and a.png keep a map each
        if resume and out.is_file() and occ_path.is_file():  # the map is written last
            done += 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            img = read_rgb(str(path))
        except ValueError:  # one corrupt file ended the whole run; like a faceless image, it is copied and listed
            img = None
        lm, _, found = detect_landmarks(img) if img is not None else (None, None, False)
        if not found:
            write_then_rename(out, path.read_bytes())
            skipped.append(str(rel))
            continue
        masked, occ = synth(img, lm, np.random.default_rng([seed, i]))
        write_then_rename(out, _encode(out, cv2.cvtColor(masked, cv2.COLOR_RGB2BGR)))
        occ_path.parent.mkdir(parents=True, exist_ok=True)
        write_then_rename(occ_path, _encode(occ_path, occ.astype(np.uint8) * 255))
        done += 1
    return done, skipped


def _encode(path: Path, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(path.suffix, img)
    if not ok:  # cv2.imwrite's False was ignored: the image was counted as masked but never written
        raise OSError(f"cannot encode {path} as {path.suffix}")
    return buf.tobytes()
