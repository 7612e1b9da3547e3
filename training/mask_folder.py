"""``maskfr mask SRC DST``: a masked copy of a face dataset folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from maskfr.training.data import IMAGE_EXTS


def mask_folder(src: str | Path, dst: str | Path, masks_root: str | Path | None = None,
                seed: int = 0) -> tuple[int, list[str]]:
    """Mask every image under ``src`` into the same relative path under ``dst``.

    Occlusion maps go to ``dst/_occlusion/<same path>.png``. Images where no face is
    found are copied unmasked and returned in the skipped list (never silently lost).
    """
    from tqdm import tqdm

    from maskfr.training.cache import read_rgb
    from maskfr.training.dlib_models import detect_landmarks
    from maskfr.training.masks import MaskSynth
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    synth = MaskSynth(masks_root)
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    done, skipped = 0, []
    for i, path in enumerate(tqdm(files, desc="mask", unit="img")):
        rel = path.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        img = read_rgb(str(path))
        lm, _, found = detect_landmarks(img)
        if not found:
            shutil.copyfile(path, out)
            skipped.append(str(rel))
            continue
        masked, occ = synth(img, lm, np.random.default_rng([seed, i]))
        cv2.imwrite(str(out), cv2.cvtColor(masked, cv2.COLOR_RGB2BGR))
        occ_path = dst / "_occlusion" / rel.with_suffix(".png")
        occ_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(occ_path), occ.astype(np.uint8) * 255)
        done += 1
    return done, skipped
