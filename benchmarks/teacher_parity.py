"""Parity and speed of the PyTorch / ONNX port of dlib's face recognition ResNet.

On real LFW faces (dlib HOG detection, 68 landmarks, ``dlib.get_face_chip(img,
shape, 150, 0.25)``) compare dlib's ``compute_face_descriptor`` with our torch
model and our ONNX export (onnxruntime, CPU), compare our numpy chip extraction
with dlib's, time dlib vs ONNX Runtime at batch 32 on the same chips in this
process, and optionally score LFW View-1 ``pairsDevTest.txt`` with both
pipelines. Prints a markdown table and appends it to ``benchmarks/RESULTS.md``.

    PYTHONPATH=... python benchmarks/teacher_parity.py --faces 256 --pairs
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from maskfr.export.onnx_export import ort_session
from maskfr.metrics import best_threshold
from maskfr.training.data import LFW, data_root
from maskfr.training.dlib_models import hog_detector, shape_predictor
from maskfr.training.teacher import DlibTeacher, dlib_chip, dlib_reference_embeddings

HEADING = "## Teacher port (dlib ResNet)"
DLIB_THRESHOLD = 0.6  # dlib's documented same-person L2 distance


def face_shape(rgb: np.ndarray, fallback: bool = False):
    """dlib 68-point shape of the HOG face nearest the centre; a central box when none and ``fallback``."""
    import dlib
    dets = hog_detector()(rgb, 1)
    h, w = rgb.shape[:2]
    if dets:
        rect = min(dets, key=lambda d: (d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2)
    elif fallback:
        rect = dlib.rectangle(w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    else:
        return None
    return shape_predictor(68)(rgb, rect)


def load_rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def chips_for(paths: list[str], fallback: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(kept paths, dlib chips, our chips) for the images where a face shape was found."""
    import dlib
    kept, theirs, ours = [], [], []
    for p in paths:
        rgb = load_rgb(p)
        shape = face_shape(rgb, fallback)
        if shape is None:
            continue
        pts = np.array([[q.x, q.y] for q in shape.parts()], np.float64)
        kept.append(p)
        theirs.append(np.asarray(dlib.get_face_chip(rgb, shape, 150, 0.25)))
        ours.append(dlib_chip(rgb, pts))
    return kept, np.stack(theirs), np.stack(ours)


def ort_embed(sess, chips: np.ndarray, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(chips), batch):
        x = np.ascontiguousarray(chips[i:i + batch].transpose(0, 3, 1, 2), dtype=np.float32)
        out.append(sess.run(None, {"input": x})[0])
    return np.concatenate(out)


def timed(fn, *args, repeats: int = 2) -> tuple[np.ndarray, float]:
    """Result and best wall time over ``repeats`` runs (after one warm-up batch inside ``fn``'s first call)."""
    best, res = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        res = fn(*args)
        best = min(best, time.perf_counter() - t)
    return res, best


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
            "l2_max": float(np.linalg.norm(ref - got, axis=1).max())}


def pair_accuracy(lfw: LFW, embed_dlib, embed_ours) -> dict:
    """View-1 pairsDevTest accuracy of both pipelines (fixed 0.6 and best threshold on -L2)."""
    pairs = lfw.pairs("pairsDevTest.txt")
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    kept, theirs, ours = chips_for(paths, fallback=True)
    idx = {p: i for i, p in enumerate(kept)}
    same = np.array([p.same for p in pairs])
    res = {"pairs": len(pairs), "images": len(paths)}
    for name, emb in (("dlib", embed_dlib(theirs)), ("ours", embed_ours(ours))):
        d = np.array([np.linalg.norm(emb[idx[p.a]] - emb[idx[p.b]]) for p in pairs])
        res[f"{name}_acc_0.6"] = float(((d < DLIB_THRESHOLD) == same).mean())
        res[f"{name}_acc_best"] = best_threshold(-d, same)[1]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=256, help="number of LFW faces (>= 200 for the report)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pairs", action="store_true", help="also score View-1 pairsDevTest.txt both ways")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    root = data_root()
    if root is None:
        raise SystemExit("no LFW data: set MASKFR_DATA or provide ../shared/data")
    lfw = LFW(root / "lfw")
    samples = lfw.samples()
    step = max(1, len(samples) // (args.faces * 2))
    paths = [s.path for s in samples[::step]][: args.faces * 2]
    kept, theirs, ours = chips_for(paths, fallback=False)
    kept, theirs, ours = kept[: args.faces], theirs[: args.faces], ours[: args.faces]
    n = len(kept)
    chip_diff = np.abs(theirs.astype(np.int16) - ours.astype(np.int16))

    from maskfr.export.teacher_onnx import export_teacher
    teacher = DlibTeacher(batch_size=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(export_teacher(os.path.join(tmp, "teacher.onnx")))

        def embed_dlib(chips: np.ndarray) -> np.ndarray:
            return np.concatenate([dlib_reference_embeddings(chips[i:i + args.batch])
                                   for i in range(0, len(chips), args.batch)])

        def embed_ort(chips: np.ndarray) -> np.ndarray:
            return ort_embed(sess, chips, args.batch)

        embed_dlib(theirs[: args.batch]), embed_ort(theirs[: args.batch]), teacher(theirs[: args.batch])  # warm-up
        ref, t_dlib = timed(embed_dlib, theirs)
        onnx_emb, t_ort = timed(embed_ort, theirs)
        torch_emb, t_torch = timed(teacher, theirs)
        own_chip_emb = embed_ort(ours)
        pairs = pair_accuracy(lfw, embed_dlib, embed_ort) if args.pairs else None

    rows = [("PyTorch vs dlib", compare(ref, torch_emb)), ("ONNX Runtime vs dlib", compare(ref, onnx_emb)),
            ("ONNX Runtime on our chips vs dlib on dlib chips", compare(ref, own_chip_emb))]
    lines = [
        HEADING, "",
        f"`python benchmarks/teacher_parity.py --faces {args.faces}{' --pairs' if args.pairs else ''}` — "
        f"{n} LFW deep-funneled faces (HOG + 68 landmarks + `get_face_chip(150, 0.25)`), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, torch {torch.__version__}.",
        "",
        "| comparison | min cosine | mean cosine | max L2 |",
        "|---|---|---|---|",
        *[f"| {name} | {r['cos_min']:.7f} | {r['cos_mean']:.7f} | {r['l2_max']:.2e} |" for name, r in rows],
        "",
        f"Chips: our numpy `dlib_chip` vs `dlib.get_face_chip`: max |diff| {int(chip_diff.max())}, "
        f"{(chip_diff == 0).mean() * 100:.3f}% of values identical.",
        "",
        f"| engine (CPU, batch {args.batch}, same {n} chips, one process) | ms/face |",
        "|---|---|",
        f"| dlib `compute_face_descriptor` | {t_dlib / n * 1e3:.2f} |",
        f"| ours, ONNX Runtime | {t_ort / n * 1e3:.2f} |",
        f"| ours, PyTorch eager | {t_torch / n * 1e3:.2f} |",
    ]
    if pairs:
        lines += [
            "",
            f"LFW View-1 `pairsDevTest.txt` ({pairs['pairs']} pairs, {pairs['images']} images; central box "
            "when HOG finds no face): accuracy by L2 distance.",
            "",
            "| pipeline | acc @ 0.6 | acc @ best threshold |",
            "|---|---|---|",
            f"| dlib (get_face_chip + compute_face_descriptor) | {pairs['dlib_acc_0.6'] * 100:.2f}% | "
            f"{pairs['dlib_acc_best'] * 100:.2f}% |",
            f"| ours (dlib_chip + ONNX Runtime) | {pairs['ours_acc_0.6'] * 100:.2f}% | "
            f"{pairs['ours_acc_best'] * 100:.2f}% |",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        path = Path(args.results)
        prev = path.read_text() if path.exists() else ""
        with open(path, "a") as f:  # append only: other sections belong to others
            f.write(("# Benchmark results\n" if not prev else "") + ("" if prev.endswith("\n\n") else "\n") + text)


if __name__ == "__main__":
    main()
