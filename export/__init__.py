"""Export: ONNX, quantization, TensorRT engines, Triton (needs the export extra; engines the trt extra).

Pipeline and the CLI command of each step::

    maskfr export final.pt -o model.onnx            # onnx_export: metadata, parity vs torch, model.golden.npz
    maskfr quantize model.onnx --fp16 --int8 --lfw LFW   # quantize: model.fp16.onnx, model.int8.onnx (QDQ)
    maskfr build-engine model.int8.onnx --precision int8 --batch 1:8:32 --sm 86   # engine + .json sidecar
    maskfr export-triton model.onnx --plan model.int8.engine --repo triton_repo

* ``onnx_export``: the student with its preprocessing contract in ``metadata_props``; ``golden``:
  reference embeddings shipped next to a released model.
* ``quantize``: FP16 (float32 IO) and INT8 explicit QDQ (ONNX Runtime ``quantize_static``;
  ``--target tensorrt`` S8S8 symmetric for TensorRT, ``--target cpu`` U8S8 for AVX2 CPUs).
* ``engine``: one code path for full TensorRT and TensorRT-RTX; TensorRT-RTX builds ahead of time
  on machines without a GPU. Verified here: AOT builds of FP32/FP16/INT8 engines with TensorRT-RTX
  and the sidecar checks. **Unverified** (written from NVIDIA's documentation, no GPU or full
  TensorRT was available): running engines (the runtime's ``maskfr.backends.TensorRTRunner``, ``benchmarks/trt_parity.py``), the
  weakly-typed full-TensorRT precision flags and INT8 entropy calibrator, DLA cores, workspace
  limits and timing caches on Jetson.
* ``triton``: model repository with dynamic batching (Triton serves full-TensorRT plans only).
"""
