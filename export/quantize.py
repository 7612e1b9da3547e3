"""FP16 and INT8 (explicit QDQ) variants of an exported student.

Why ONNX Runtime's ``quantize_static`` and not NVIDIA ModelOpt: the INT8 model must run in
two places, ONNX Runtime on plain CPUs *and* TensorRT on edge GPUs, and be built on a
CPU-only machine. ORT's QDQ output is a plain ONNX graph both consume (explicit
quantization, so TensorRT needs no calibrator and strongly-typed TensorRT-RTX accepts it),
it ships with a dependency we already have, and its calibration runs on the CPU. ModelOpt
(``modelopt.onnx.quantization``) produces the same QDQ format with TensorRT-tuned placement
but pulls in a large CUDA-oriented stack, and its TensorRT-specific placement gives no
benefit on the CPU path; revisit it if TensorRT INT8 accuracy or speed disappoints.

Two INT8 targets, because the two consumers want different things (measured, see
benchmarks/RESULTS.md):

* ``tensorrt`` (default): what TensorRT requires: symmetric int8 activations and weights (zero
  point 0, S8S8), per-channel weights on axis 0, float bias (``QuantizeBias: False``; TensorRT
  rejects a DequantizeLinear of an int32 bias).
* ``cpu``: ONNX Runtime on x86 without VNNI (AVX2 only, like the 2-core dev box): uint8
  asymmetric activations with 7-bit (``reduce_range``) symmetric per-channel weights (U8S8).
  ORT's AVX2 kernels sum pairs of u8*s8 products in int16 (VPMADDUBSW), which saturates with
  full-range weights: S8S8 there is both slower and less accurate. Not for TensorRT.

Both keep the L2-normalisation tail in float and are calibrated on masked and unmasked faces.

FP16: ONNX Runtime's own converter (``onnxruntime.transformers.float16``, the same code as
onnxconverter-common) with **float32 inputs and outputs** (``keep_io_types``), so callers
feed the same array to every variant; Casts at the edges are nearly free on a GPU. The
``ReduceL2`` of the normalisation stays float32 (a sum of 128 squares overflows FP16 easily).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from maskfr.align import to_input
from maskfr.fileio import written_then_renamed

#: Ops quantized in the INT8 model; the normalisation tail (ReduceL2, Clip, Div) stays float.
#: ``Relu`` is listed so that, in the CPU flavour (uint8, whose zero point clips at 0), the quantizer folds
#: each ReLU into its producer's output scale: without it every Conv -> ReLU and Add -> ReLU got two
#: scales, and ONNX Runtime ran 32 extra DequantizeLinear -> QuantizeLinear requantizations (1.33x ->
#: 1.52x over FP32 on the 2-core CPU, benchmarks/RESULTS.md). With symmetric int8 (TensorRT flavour) a
#: ReLU cannot be folded into a scale, so the quantizer keeps it, with Q/DQ on both sides as before.
INT8_OPS = ("Conv", "MatMul", "Gemm", "Add", "Relu", "MaxPool", "AveragePool", "Resize", "Pad")
FP32_IN_FP16 = ("ReduceL2",)


def check_fp32(src: str | os.PathLike) -> None:
    """Refuse an FP16 or INT8 model: quantizing a QDQ model again ran for over ten minutes, and the mixed graphs
    made from variants (``m.fp16.int8.onnx``) were never checked by anyone."""
    from maskfr.export.engine import onnx_precision

    have = onnx_precision(src)
    if have != "fp32":
        raise ValueError(f"{src} is already an {have.upper()} model: make the FP16 and INT8 variants from the FP32 "
                         "export (maskfr export)")


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike, keep_io_types: bool = True) -> Path:
    """Write the FP16 variant of ``src`` (float32 IO unless ``keep_io_types`` is False)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    check_fp32(src)
    proto = convert_float_to_float16(onnx.load(os.fspath(src)), keep_io_types=keep_io_types,
                                     op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_IN_FP16))
    _toposort(proto.graph)  # the converter appends the input Casts at the end of the node list
    onnx.checker.check_model(proto)
    with written_then_renamed(dst) as tmp:
        onnx.save(proto, tmp)
    return Path(dst)


def _toposort(graph) -> None:
    """Reorder ``graph.node`` topologically in place (ONNX requires it; ORT and TensorRT do not check)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if set(n.input) <= ready:
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


class FaceCalibrationReader:
    """ORT ``CalibrationDataReader`` over aligned RGB uint8 crops (N,112,112,3), in batches."""

    def __init__(self, faces: np.ndarray, input_name: str = "input", batch: int = 16):
        # Equal batches (the largest divisor of the face count up to ``batch``): ORT's histogram calibrators
        # (percentile, entropy) stack every batch's activations with np.asarray and fail on a short last one.
        batch = max((b for b in range(1, min(batch, len(faces)) + 1) if len(faces) % b == 0), default=batch)
        self.faces, self.name, self.batch = faces, input_name, batch
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.faces):
            return None
        x = to_input(self.faces[self._pos:self._pos + self.batch])
        self._pos += self.batch
        return {self.name: x}

    def rewind(self) -> None:
        self._pos = 0


def lfw_people(lfw_root: str | os.PathLike, folds: Iterable[int] = range(1, 6)) -> set[str]:
    """People of the given (1-based) ``people.txt`` folds: calibration uses folds 1-5 only, the
    training people, so the people of the test folds 6-10 stay unseen."""
    from maskfr.training.data import LFW

    people = LFW(lfw_root).people_folds()
    return {name for f in folds for name in people[f - 1]}


def calibration_faces(cache: str | os.PathLike | dict, people: set[str] | None = None, n: int = 256,
                      masked_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n`` aligned crops from the aligned-face cache (keys img112, img112_masked, path), restricted to
    ``people`` (folder names), ``masked_fraction`` of them masked so activation ranges cover both."""
    if isinstance(cache, dict):
        z = cache
    else:
        try:  # numpy's own errors name no file, and call text "pickled data"
            f = np.load(cache, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile):
            f = None
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(f"{cache}: not an aligned-face cache (.npz), or truncated"
                             + ("; an array of crops must be named .npy" if isinstance(f, np.ndarray) else ""))
        with f:
            if not {"path", "img112", "img112_masked"} <= set(f.files):  # else a bare KeyError: 'path'
                raise ValueError(f"{cache}: not an aligned-face cache (needs path, img112, img112_masked; "
                                 f"has {sorted(f.files)[:5]})")
            z = {k: f[k] for k in ("path", "img112", "img112_masked")}
    rows = np.arange(len(z["path"]))
    if people is not None:
        rows = rows[np.isin([Path(p).parent.name for p in z["path"]], sorted(people))]
    if len(rows) == 0:
        raise ValueError("no calibration faces: the cache holds none of the requested people")
    rng = np.random.default_rng(seed)
    pick = rng.choice(rows, size=min(n, len(rows)), replace=False)
    n_masked = int(round(len(pick) * masked_fraction))
    return np.concatenate([z["img112_masked"][pick[:n_masked]], z["img112"][pick[n_masked:]]])


def folder_faces(folder: str | os.PathLike, n: int = 256, seed: int = 0,
                 drawn_masks: float = 0.5) -> tuple[np.ndarray, dict[str, int]]:
    """Aligned RGB crops (N, 112, 112, 3) of the largest face in up to ``n`` images under ``folder``, with
    counts of what was skipped: calibrate on your own cameras' faces (masked ones too) rather than LFW.

    Faces are found and aligned exactly as the runtime does it (packaged detector, 5-point similarity);
    unreadable images and images without a face are skipped and counted, none at all is an error.
    ``drawn_masks``: the fraction of faces that get a flat mask of a random colour drawn over the lower
    face first, so the activation ranges cover masked faces even when the folder has none.
    """
    from maskfr.align import align_face
    from maskfr.cli_runtime import IMAGE_SUFFIXES
    from maskfr.demo import draw_mask
    from maskfr.recognizer import FaceRecognizer, ImageError, load_image

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rng = np.random.default_rng(seed)
    rng.shuffle(paths)
    rec, crops, skipped = FaceRecognizer(mask_classifier=None), [], {"unreadable": 0, "no_face": 0}
    for path in paths:
        if len(crops) == n:
            break
        try:
            img = load_image(path)
        except ImageError:
            skipped["unreadable"] += 1
            continue
        faces = rec.detect(img)  # the runtime's detection (frame scaling included), largest face first
        if not faces:
            skipped["no_face"] += 1
            continue
        lm = faces[0].landmarks
        if rng.random() < drawn_masks:
            img = draw_mask(img, lm, tuple(int(c) for c in rng.integers(0, 256, 3)))
        crops.append(align_face(img, lm)[..., ::-1])
    if not crops:
        raise ValueError(f"no face found in the {len(paths)} images under {folder} "
                         f"({skipped['unreadable']} unreadable): nothing to calibrate on")
    return np.ascontiguousarray(np.stack(crops)), skipped


def to_int8(src: str | os.PathLike, dst: str | os.PathLike, faces: np.ndarray, target: str = "tensorrt",
            method: str = "percentile", ops: Sequence[str] = INT8_OPS) -> Path:
    """Write the INT8 QDQ variant of ``src`` calibrated on ``faces`` (aligned RGB uint8 crops).

    ``target``: ``tensorrt`` (S8S8 symmetric) or ``cpu`` (U8S8, reduce_range), see the module doc.
    ``method``: ``percentile`` (99.999 %, clips outliers; the default: on the packaged model it keeps
    LFW accuracy within 0.3 points where ``minmax`` loses 0.66 masked-masked, benchmarks/RESULTS.md),
    ``minmax`` or ``entropy``; the histogram methods keep every activation, so use a few hundred faces
    at most.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    if target not in ("tensorrt", "cpu"):
        raise ValueError(f"INT8 target must be 'tensorrt' or 'cpu', got {target!r}")
    check_fp32(src)
    trt = target == "tensorrt"
    extra = {"ActivationSymmetric": trt, "WeightSymmetric": True, "QuantizeBias": False}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with tempfile.TemporaryDirectory() as tmp, written_then_renamed(dst) as out:
        pre = os.path.join(tmp, "pre.onnx")
        # shape inference + ORT's basic fusions (folds any per-channel affine left after a conv into it)
        quant_pre_process(os.fspath(src), pre, skip_symbolic_shape=True)
        with contextlib.redirect_stdout(sys.stderr):  # ORT's calibration progress; stdout is for --json
            quantize_static(pre, out, FaceCalibrationReader(faces), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(ops), per_channel=True, reduce_range=not trt,
                            activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=methods[method], extra_options=extra)
        _copy_metadata(src, out)
    return Path(dst)


def _copy_metadata(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """The quantizer drops metadata_props; the variants must stay self-describing."""
    import onnx

    a, b = onnx.load(os.fspath(src)), onnx.load(os.fspath(dst))
    if not b.metadata_props:
        b.metadata_props.extend(a.metadata_props)
        onnx.save(b, os.fspath(dst))


def qdq_summary(path: str | os.PathLike) -> dict[str, int | bool]:
    """What a TensorRT-bound QDQ model must satisfy: symmetric (zero point 0) int8 everywhere,
    per-channel conv weights, no DequantizeLinear of an int32 (bias) tensor."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(os.fspath(path))
    inits = {i.name: i for i in proto.graph.initializer}
    conv_w = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    out = {"quantize": 0, "dequantize": 0, "int32_dq": 0, "nonzero_zero_point": 0, "uint8": 0,
           "per_channel_conv_weights": 0, "per_tensor_conv_weights": 0}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        out["quantize" if node.op_type == "QuantizeLinear" else "dequantize"] += 1
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None:
            arr = numpy_helper.to_array(zp)
            out["nonzero_zero_point"] += int(np.any(arr != 0))
            out["uint8"] += int(arr.dtype == np.uint8)
        if node.op_type == "DequantizeLinear":
            x = inits.get(node.input[0])
            if x is not None and x.data_type == onnx.TensorProto.INT32:
                out["int32_dq"] += 1
            if node.output[0] in conv_w:
                scale = numpy_helper.to_array(inits[node.input[1]])
                out["per_channel_conv_weights" if scale.size > 1 else "per_tensor_conv_weights"] += 1
    out["tensorrt_ready"] = (out["int32_dq"] == 0 and out["nonzero_zero_point"] == 0 and out["uint8"] == 0
                             and out["per_tensor_conv_weights"] == 0 and out["dequantize"] > 0)
    return out


__all__ = ["FaceCalibrationReader", "INT8_OPS", "calibration_faces", "folder_faces", "lfw_people", "qdq_summary",
           "to_fp16", "to_int8"]
