"""FP32 vs FP16 vs INT8 (TensorRT QDQ and CPU U8S8) under ONNX Runtime on this CPU, in one run.

Per variant: ms/face at batch 32 (ORT CPU EP, ``--threads``; the variants are timed interleaved,
median of ``--reps`` rounds, so background load hits all alike), embedding agreement with FP32
(cosine, on held-out masked and unmasked faces) and, with ``--eval-folds``, LFW verification
accuracy (:func:`maskfr.training.evaluate.evaluate`). Calibration uses the people of LFW folds
1-5 only; agreement and accuracy use folds 6-10 people.

    nice -n 10 python benchmarks/quantization.py --lfw ../shared/data/lfw --eval-folds 10
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from maskfr.export.onnx_export import compare, export_onnx, ort_embed, ort_session
from maskfr.export.quantize import calibration_faces, lfw_people, qdq_summary, to_fp16, to_int8
from maskfr.training.cache import CACHE_ROOT, lfw_cache_path


def newest_checkpoint() -> str | None:
    runs = sorted(glob.glob(str(CACHE_ROOT / "runs" / "*" / "final.pt")), key=os.path.getmtime)
    return runs[-1] if runs else None


def speed(paths: dict[str, Path], faces: np.ndarray, threads: int, reps: int) -> dict[str, float]:
    """Median ms/face at batch ``len(faces)``, variants interleaved round by round (no thread spinning,
    which would let the idle sessions' threads slow the one being timed)."""
    sessions = {k: ort_session(p, threads=threads, spin=False) for k, p in paths.items()}
    for s in sessions.values():
        ort_embed(s, faces, batch=len(faces))  # warm-up
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(reps):
        for k, s in sessions.items():
            t = time.perf_counter()
            ort_embed(s, faces, batch=len(faces))
            times[k].append((time.perf_counter() - t) * 1000 / len(faces))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", help="student checkpoint (default: newest runs/*/final.pt, else dlib-initialised)")
    ap.add_argument("--onnx", help="start from this exported FP32 model instead (e.g. sdk/models/g2d_student.onnx)")
    ap.add_argument("--cache", default=str(lfw_cache_path()))
    ap.add_argument("--lfw", required=True, help="LFW root (pairs.txt) for the fold split")
    ap.add_argument("--out", default="benchmarks/out/quantization")
    ap.add_argument("--calib-n", type=int, default=256)
    ap.add_argument("--method", default="percentile")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--agree-n", type=int, default=256)
    ap.add_argument("--eval-folds", default="", help="LFW folds for accuracy, e.g. 6-10 (slow) or 10; empty: skip")
    a = ap.parse_args()

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with np.load(a.cache, allow_pickle=False) as z:
        cache = {k: z[k] for k in ("path", "img112", "img112_masked", "found", "found_masked", "box", "box_masked")}
    calib_people, held_people = lfw_people(a.lfw, range(1, 6)), lfw_people(a.lfw, range(6, 11))
    calib = calibration_faces(cache, calib_people, n=a.calib_n)
    held = calibration_faces(cache, held_people, n=a.agree_n, seed=1)

    t = time.perf_counter()
    if a.onnx:
        source, paths, parity = a.onnx, {"fp32": Path(a.onnx)}, None  # exported earlier: no torch to compare
    else:
        ckpt = a.ckpt or newest_checkpoint()
        if ckpt:
            model, source = ckpt, ckpt
        else:
            from maskfr.training.models import create_student
            model, source = create_student(pretrained=True), "dlib-initialised student (no trained checkpoint yet)"
        parity = export_onnx(model, out / "model.onnx", faces=held[:32], verbose=False)["parity"]["min_cosine"]
        paths = {"fp32": out / "model.onnx"}
    export_s = time.perf_counter() - t
    paths["fp16"] = to_fp16(paths["fp32"], out / "model.fp16.onnx")
    t = time.perf_counter()
    paths["int8 (TensorRT, S8S8)"] = to_int8(paths["fp32"], out / "model.int8.onnx", calib, method=a.method)
    paths["int8 (CPU, U8S8)"] = to_int8(paths["fp32"], out / "model.int8-cpu.onnx", calib, target="cpu",
                                        method=a.method)
    quant_s = (time.perf_counter() - t) / 2

    ref = ort_embed(paths["fp32"], held)
    result = {"model": source, "export_parity_min_cosine": parity,
              "export_seconds": round(export_s, 1), "int8_quantize_seconds": round(quant_s, 1),
              "calibration_faces": int(len(calib)), "agreement_faces": int(len(held)),
              "cpu": f"{os.cpu_count()} cores, ORT threads {a.threads}, batch {a.batch}",
              "int8_qdq": qdq_summary(paths["int8 (TensorRT, S8S8)"]), "variants": {}}
    ms = speed(paths, held[:a.batch], a.threads, a.reps)
    for k, p in paths.items():
        c = compare(ref, ort_embed(p, held), verbose=False)
        result["variants"][k] = {"file": p.name, "mb": round(p.stat().st_size / 2**20, 1),
                                 "ms_per_face": round(ms[k], 2), "speedup_vs_fp32": round(ms["fp32"] / ms[k], 2),
                                 "min_cosine_vs_fp32": round(c["min_cosine"], 5),
                                 "mean_cosine_vs_fp32": round(c["mean_cosine"], 5)}
        print(k, json.dumps(result["variants"][k]), flush=True)

    if a.eval_folds:
        from maskfr.training.embedders import onnx_embedder
        from maskfr.training.evaluate import evaluate, lfw_pairs
        lo, _, hi = a.eval_folds.partition("-")
        pairs = lfw_pairs(a.lfw, list(range(int(lo), int(hi or lo) + 1)))
        need = sorted({p.a for p in pairs} | {p.b for p in pairs})
        rows = np.flatnonzero(np.isin(cache["path"], need))
        sub = {k: v[rows] for k, v in cache.items()}
        for k, p in paths.items():
            r = evaluate(onnx_embedder(p)(sub), sub, pairs, None, k)
            result["variants"][k]["lfw_accuracy"] = {
                s: round(100 * v["accuracy"], 2) for s, v in r["settings"].items()}
            print(k, "accuracy", result["variants"][k]["lfw_accuracy"], flush=True)
        result["eval_folds"] = a.eval_folds
    (out / "quantization.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
