"""ONNX Runtime vs TensorRT parity for each (ONNX, engine) pair: per-output cosine and max abs error.

Needs a CUDA GPU, TensorRT (or TensorRT-RTX) and cuda-python; exits 0 with a message elsewhere.
Engines are built here for this GPU (or given with ``--engine``); the reference is ORT on the
*same* ONNX (so the TensorRT error is measured alone), plus FP32 ORT for the end-to-end figure.

    python benchmarks/trt_parity.py model.onnx model.fp16.onnx model.int8.onnx --faces 256
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from maskfr.align import to_input
from maskfr.backends import TensorRTRunner, engine_sidecar
from maskfr.export.engine import build_engine, check_sidecar, current_gpu, import_trt, onnx_precision
from maskfr.export.onnx_export import compare, ort_session, parity_faces


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", nargs="+", help="ONNX models; the first is the FP32 reference")
    ap.add_argument("--engine", nargs="*", default=[], help="prebuilt engines, in the same order")
    ap.add_argument("--faces", type=int, default=256)
    ap.add_argument("--batch", default="1:32:64")
    ap.add_argument("--flavour", choices=["tensorrt", "tensorrt_rtx"])
    a = ap.parse_args()
    gpu = current_gpu()
    if gpu is None:
        print("trt_parity: no CUDA GPU here; nothing to compare (engines still build AOT: maskfr build-engine --sm)")
        return 0
    faces, source = parity_faces(a.faces)
    x = to_input(faces)
    fp32 = None
    report = {"gpu": gpu, "faces": source, "models": {}}
    for i, path in enumerate(a.onnx):
        sess = ort_session(path)
        ort = {o.name: sess.run([o.name], {"input": x})[0] for o in sess.get_outputs()}
        fp32 = fp32 if fp32 is not None else ort
        if i < len(a.engine):
            engine = a.engine[i]
        else:
            side = build_engine(path, precision=onnx_precision(path), batch=[int(b) for b in a.batch.split(":")],
                                flavour=a.flavour)
            engine = side["engine"]
        check_sidecar(engine, path, gpu, import_trt(engine_sidecar(engine).get("flavour")))  # built from this ONNX
        runner = TensorRTRunner(engine)  # what the runtime runs
        trt = {name: runner.infer(x) for name in ort}  # one output, "embedding"
        t = time.perf_counter()
        runner.infer(x)
        ms = (time.perf_counter() - t) * 1000 / len(x)
        rows = {}
        for name in ort:
            rows[name] = {"vs_ort_same_onnx": compare(ort[name], trt[name], 0.0, name, "onnxruntime", "tensorrt"),
                          "vs_ort_fp32": compare(fp32[name], trt[name], 0.0, name, "onnxruntime fp32", "tensorrt",
                                                 verbose=False)}
        report["models"][path] = {"engine": engine, "precision": engine_sidecar(engine)["precision"],
                                  "ms_per_face_incl_copies": round(ms, 4), "outputs": rows}
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
