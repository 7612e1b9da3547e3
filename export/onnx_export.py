"""Export the G2D student to ONNX with its preprocessing contract in ``metadata_props``.

Graph contract: input ``input`` (N,3,112,112) float32, the canonical ArcFace crop
(:mod:`maskfr.align`), RGB, ``(x - 127.5) / 127.5``; output ``embedding`` (N,128)
float32, L2-normalised; the batch axis is dynamic. The metadata carries everything a
runtime needs to feed the model without reading this code (size, colour order,
mean/std, alignment template, embedding size, thresholds, version, training data),
so a model file is self-describing after it leaves the repository.

Structure follows polygraphy: a *loader* (:func:`load_student`), the exporter, and
*runners* (:func:`ort_session`, :func:`ort_embed`) plus a comparator
(:func:`compare`) used for parity. torch is imported only where a torch model is
touched, so the runners work in the torch-free runtime.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from maskfr.align import ARCFACE_112, MEAN, STD, to_input
from maskfr.backends import META_PREFIX
from maskfr.fileio import written_then_renamed

if TYPE_CHECKING:
    import onnxruntime
    from torch import nn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 112
EMBED_DIM = 128
#: Per-embedding cosine an FP32 export must reach against torch (and ONNX against ONNX after slimming).
MIN_COSINE = 0.9999


# ---------------------------------------------------------------- loaders


def load_student(model_or_ckpt: "nn.Module | str | os.PathLike") -> tuple["nn.Module", dict[str, Any]]:
    """The student in eval mode plus what is known about it (config, git_rev, stage).

    Accepts a module, a training checkpoint (``torch.save({"model": state_dict, "config": dict,
    "git_rev": str, "stage": str})``) or an exported ``.onnx`` file, whose metadata then carries over.
    """
    from torch import nn

    if isinstance(model_or_ckpt, nn.Module):
        return model_or_ckpt.eval(), {}
    from maskfr.training import load_checkpoint
    from maskfr.training.models import create_student

    path = Path(model_or_ckpt)
    if path.suffix == ".onnx":
        return _student_from_onnx(path), {"checkpoint": path.name, "metadata": read_metadata(path)}
    ckpt = load_checkpoint(path, {"model"}, "maskfr train", "give the final.pt of a maskfr train run")
    if not isinstance(ckpt["model"], dict):
        raise ValueError(f"checkpoint {path} is not one maskfr train wrote (its 'model' is not a state_dict)")
    model = create_student(pretrained=False)
    state = {k: v for k, v in ckpt["model"].items() if not k.startswith(("decoder.", "head."))}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys or shapes: another architecture
        raise ValueError(f"checkpoint {path} is not a maskfr student's ({' '.join(str(e).split())[:300]})") from e
    info = {"checkpoint": path.name, "config": ckpt.get("config", {}), "git_rev": ckpt.get("git_rev", ""),
            "stage": ckpt.get("stage", "")}
    return model.eval(), info


def _module_path(node_name: str) -> str:
    """TorchScript node scope -> module path: ``/encoder/level/level.0/aff1/Mul`` -> ``encoder.level.0.aff1``."""
    parts = node_name.strip("/").split("/")[:-1]
    return ".".join(p for p, nxt in zip(parts, parts[1:] + [""]) if not nxt.startswith(p + "."))


def _student_from_onnx(path: Path) -> "nn.Module":
    """The student's weights read back from an exported ONNX file (say, to re-export a released model with
    a newer exporter when its checkpoint is gone). Named initializers map directly; the Affine scales and
    biases and the final linear layer, which the exporter stores unnamed, map through their node's scope.
    A first conv that :func:`fold_input_affine` folded is unfolded again (the input normalisation is fixed),
    so the weights come back in the parametrisation training uses."""
    import torch
    from onnx import numpy_helper

    from maskfr.training.models import create_student

    proto = load_onnx(path, load_external_data=True)
    arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    state = {k: v for k, v in arrays.items() if not k.startswith("onnx::")}
    for node in proto.graph.node:
        const = node.input[1] if len(node.input) > 1 and node.input[1] in arrays else None
        if const is None or not const.startswith("onnx::"):
            continue
        module, value = _module_path(node.name), arrays[const]
        if node.op_type == "Mul":
            state[module + ".weight"] = value.reshape(-1)
        elif node.op_type == "Add":
            state[module + ".bias"] = value.reshape(-1)
        elif node.op_type == "MatMul":
            state[module + ".weight"] = value.T
    model = create_student(pretrained=False)
    enc = model.encoder
    if "encoder.in_scale" not in state and "encoder.conv.bias" in state:  # folded: unfold (the scale is fixed)
        w = state["encoder.conv.weight"].astype(np.float64) / float(enc.in_scale)
        shift = enc.in_shift.double().numpy().reshape(-1)
        state["encoder.conv.bias"] = (state["encoder.conv.bias"] - np.einsum("ochw,c->o", w, shift)).astype(np.float32)
        state["encoder.conv.weight"] = w.astype(np.float32)
        state["encoder.in_scale"], state["encoder.in_shift"] = enc.in_scale.numpy(), enc.in_shift.numpy()
    missing, extra = sorted(set(model.state_dict()) - set(state)), sorted(set(state) - set(model.state_dict()))
    if missing or extra:
        raise ValueError(f"{path}: not a maskfr student ONNX file (weights missing: {missing[:3]}, "
                         f"unknown: {extra[:3]})")
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    except RuntimeError as e:  # a shape mismatch: another architecture
        raise ValueError(f"{path}: not a maskfr student ONNX file ({' '.join(str(e).split())[:300]})") from e
    return model.eval()


def default_metadata(info: dict[str, Any] | None = None) -> dict[str, str]:
    """The preprocessing contract plus provenance; every value is a string (ONNX metadata_props)."""
    info = info or {}
    cfg = info.get("config") or {}
    version = "-".join(x for x in (info.get("stage"), (info.get("git_rev") or "")[:12]) if x) or "untrained"
    return {
        "input_size": json.dumps([INPUT_SIZE, INPUT_SIZE]),
        "input_layout": "NCHW float32",
        "colour_order": "RGB",
        "mean": str(MEAN),
        "std": str(STD),
        "normalisation": "(x - mean) / std on uint8 pixels",
        "alignment_template": json.dumps(np.round(ARCFACE_112.astype(np.float64), 4).tolist()),
        "alignment": "maskfr.align: 5-point similarity (Umeyama) to alignment_template, cv2 INTER_LINEAR, border 0",
        "embedding_size": str(EMBED_DIM),
        "embedding": "L2-normalised; compare with the dot product (cosine)",
        "recommended_thresholds": json.dumps(cfg.get("thresholds", {})),
        "model_version": version,
        "training_data": str(cfg.get("training_data", cfg.get("data", "unknown"))),
        "git_rev": str(info.get("git_rev", "")),
    }


def load_onnx(path: str | os.PathLike, load_external_data: bool = False) -> Any:
    """``onnx.load`` with a clear ``ValueError`` for a file that is not ONNX or is truncated (protobuf's
    DecodeError otherwise reaches the user as a traceback)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(os.fspath(path), load_external_data=load_external_data)
    except DecodeError as e:
        raise ValueError(f"{path}: not an ONNX model, or truncated ({e})") from None


def check_student_io(path: str | os.PathLike) -> Any:
    """The ONNX model at ``path`` if it has the student's IO (``input`` (N,3,112,112) -> ``embedding`` (N,D)),
    else a ``ValueError`` naming what it has: quantization, engines and Triton configs assume that IO, and
    another model otherwise fails deep inside ONNX Runtime or TensorRT."""
    proto = load_onnx(path)
    inits = {i.name for i in proto.graph.initializer}

    def io(values: Any) -> list[tuple[str, list]]:
        return [(v.name, [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values if v.name not in inits]

    ins, outs = io(proto.graph.input), io(proto.graph.output)
    if [n for n, _ in ins] != [INPUT_NAME] or [n for n, _ in outs] != [OUTPUT_NAME] \
            or ins[0][1][1:] != [3, INPUT_SIZE, INPUT_SIZE] or len(outs[0][1]) != 2:
        raise ValueError(f"{path}: not a maskfr face embedder: expected {INPUT_NAME!r} (N, 3, {INPUT_SIZE}, "
                         f"{INPUT_SIZE}) -> {OUTPUT_NAME!r} (N, D), got {ins} -> {outs}")
    return proto


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``maskfr.*`` metadata of an ONNX file, prefix stripped."""
    proto = load_onnx(path)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    """Replace the ``maskfr.*`` metadata of an in-memory ModelProto."""
    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(META_PREFIX)]
    del proto.metadata_props[:]
    for k, v in keep + [(META_PREFIX + k, str(v)) for k, v in metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- runners and comparator


def ort_session(path: str | os.PathLike, threads: int | None = None,
                providers: Sequence[str] = ("CPUExecutionProvider",), spin: bool = True) -> "onnxruntime.InferenceSession":
    """A CPU session on :func:`maskfr.backends.session_options` (``threads``, ``spin``)."""
    import onnxruntime as ort

    from maskfr.backends import session_options
    opts = session_options(threads, spin)
    opts.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), opts, providers=list(providers))


def ort_embed(model: "str | os.PathLike | onnxruntime.InferenceSession", faces: np.ndarray,
              batch: int = 32) -> np.ndarray:
    """Embeddings of aligned RGB uint8 crops (N,112,112,3) under ONNX Runtime."""
    sess = model if hasattr(model, "run") else ort_session(model)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: to_input(faces[i:i + batch])})[0]
                           for i in range(0, len(faces), batch)]).astype(np.float32)


def torch_embed(model: "nn.Module", faces: np.ndarray, batch: int = 32) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(to_input(faces[i:i + batch]))).numpy()
                               for i in range(0, len(faces), batch)]).astype(np.float32)


def compare(ref: np.ndarray, out: np.ndarray, min_cosine: float = MIN_COSINE, name: str = OUTPUT_NAME,
            ref_name: str = "reference", out_name: str = "candidate", verbose: bool = True) -> dict[str, float]:
    """Per-row cosine plus polygraphy-style error metrics; ``passed`` when every row reaches ``min_cosine``.

    atol/rtol are reported as the tolerances that *would* pass (max abs and max relative
    difference), as ``polygraphy run --check-error-stat max`` prints them.
    """
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: {ref_name} {ref.shape} vs {out_name} {out.shape}")
    cos = np.sum(ref * out, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30)
    absdiff = np.abs(ref - out)
    reldiff = absdiff / np.maximum(np.abs(ref), 1e-12)
    rep = {"rows": int(len(ref)), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
           "max_abs": float(absdiff.max()), "mean_abs": float(absdiff.mean()),
           "median_rel": float(np.median(reldiff)), "max_rel": float(reldiff.max()),
           "threshold": min_cosine, "passed": bool(cos.min() >= min_cosine)}
    if verbose:
        print(f"[I] Comparing output '{name}': {out_name} vs {ref_name}, {len(ref)} rows\n"
              f"[I]     Error Metrics: {name}\n"
              f"[I]         Minimum Required Tolerance: elemwise error | [abs={rep['max_abs']:.5g}] OR "
              f"[rel={rep['max_rel']:.5g}] (requirements may be lower if both abs/rel tolerances are set)\n"
              f"[I]         Absolute Difference | max={rep['max_abs']:.5g}, mean={rep['mean_abs']:.5g}\n"
              f"[I]         Relative Difference | max={rep['max_rel']:.5g}, median={rep['median_rel']:.5g}\n"
              f"[I]         Cosine per row | min={rep['min_cosine']:.7f}, mean={rep['mean_cosine']:.7f} "
              f"(required >= {min_cosine})\n"
              f"[{'I' if rep['passed'] else 'E'}]         {'PASSED' if rep['passed'] else 'FAILED'}")
    return rep


def parity_faces(n: int = 32, cache: str | os.PathLike | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """Aligned faces for parity checks: half unmasked, half masked from the LFW cache when it exists,
    else smooth random images (say so in reports: they exercise the graph, not face statistics)."""
    from maskfr.training.cache import lfw_cache_path

    path = Path(cache) if cache else lfw_cache_path()
    rng = np.random.default_rng(seed)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            idx = np.sort(rng.choice(len(z["path"]), size=min(n, len(z["path"])), replace=False))
            half = len(idx) // 2
            return np.concatenate([z["img112"][idx[:half]], z["img112_masked"][idx[half:]]]), f"LFW cache {path}"
    low = rng.uniform(0, 255, (n, 14, 14, 3)).astype(np.float32)
    import cv2
    faces = np.stack([cv2.resize(x, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_CUBIC) for x in low])
    return np.clip(faces + rng.normal(0, 8, faces.shape), 0, 255).astype(np.uint8), "synthetic (no LFW cache)"


# ---------------------------------------------------------------- export


def _torch_export(model: "nn.Module", path: str, opset: int) -> None:
    import torch

    dummy = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    # The TorchScript exporter on purpose (as for the teacher): the dynamo one emits opset >= 18.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          dynamo=False)


def _slim(path: str, faces: np.ndarray, min_cosine: float, verbose: bool) -> dict[str, Any]:
    """onnxslim in place, kept only when the slimmed graph matches the original under ORT."""
    import onnx
    try:
        import onnxslim
    except ImportError:
        return {"kept": False, "reason": "onnxslim not installed"}

    before = ort_embed(path, faces)
    slim = onnxslim.slim(onnx.load(path))
    # next to ``path``, not in /tmp: os.replace cannot cross filesystems (a tmpfs /tmp)
    cand = f"{path}.slim"
    try:
        onnx.save(slim, cand)
        onnx.checker.check_model(cand)
        rep = compare(before, ort_embed(cand, faces), min_cosine, ref_name="onnx", out_name="onnxslim",
                      verbose=verbose)
        if rep["passed"]:
            os.replace(cand, path)
    finally:
        if os.path.exists(cand):
            os.unlink(cand)
    return {"kept": rep["passed"], "min_cosine": rep["min_cosine"]}


def fold_input_affine(proto: Any) -> int:
    """Fold ``Conv(x * a + b)`` into the conv's weights and bias, in place; returns how many were folded.

    The student's input normalisation (``in_scale``, ``in_shift``) runs as a Mul and an Add on the whole
    150x150 chip right before the first conv; ONNX Runtime fuses affines *after* a conv, not before, and in
    the INT8 graph the pair costs a DequantizeLinear and a QuantizeLinear too (benchmarks/RESULTS.md). Only
    convs without padding qualify (with padding, the border windows would see ``b`` where the original
    sees zeros) and only when ``a``, ``b`` are constants broadcast per input channel.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    uses = Counter(i for n in graph.node for i in n.input)

    def per_channel(name: str, channels: int) -> np.ndarray | None:
        if name not in inits:
            return None
        v = numpy_helper.to_array(inits[name]).astype(np.float64)
        if v.size == 1 or (v.ndim == 4 and v.shape == (1, channels, 1, 1)) or v.shape == (channels,):
            return np.broadcast_to(v.reshape(-1), (channels,))
        return None

    folded = 0
    for conv in [n for n in graph.node if n.op_type == "Conv" and len(n.input) == 3]:
        add = producer.get(conv.input[0])
        mul = producer.get(add.input[0]) if add is not None and add.op_type == "Add" else None
        pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0])
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if mul is None or mul.op_type != "Mul" or any(pads) or group != 1 or conv.input[1] not in inits \
                or conv.input[2] not in inits or uses[add.output[0]] != 1 or uses[mul.output[0]] != 1:
            continue
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        scale, shift = per_channel(mul.input[1], w.shape[1]), per_channel(add.input[1], w.shape[1])
        if scale is None or shift is None:
            continue
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) + np.einsum("ochw,c->o", w, shift)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None, None]).astype(np.float32),
                                                              conv.input[1]))
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), conv.input[2]))
        conv.input[0] = mul.input[0]
        graph.node.remove(add)
        graph.node.remove(mul)
        folded += 1
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return folded


def export_onnx(model_or_ckpt: "nn.Module | str | os.PathLike", path: str | os.PathLike, opset: int = OPSET,
                metadata: dict[str, str] | None = None, simplify: bool = True, faces: np.ndarray | None = None,
                min_cosine: float = MIN_COSINE, verbose: bool = True,
                golden: np.ndarray | None = None) -> dict[str, Any]:
    """Export, check (checker + shape inference), optionally slim, and verify parity against torch.

    ``metadata`` entries override/extend :func:`default_metadata`. ``faces`` are aligned RGB
    uint8 crops for the parity check (default :func:`parity_faces`). ``golden``: crops for the model's
    golden file (:mod:`maskfr.export.golden`), written with the model so that a failure never leaves a new
    model beside an earlier golden file. Raises ``RuntimeError`` when the export disagrees with torch;
    returns a report (path, sha256, parity, slim, golden).
    """
    import onnx

    final = os.fspath(path)
    if os.path.isdir(final):  # else found by the final rename, after the whole export, naming the temporary
        raise ValueError(f"the output path {final} is a folder; give a file name with -o")
    model, info = load_student(model_or_ckpt)
    try:
        Path(final).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # errno's own message ("File exists") names only the folder, not why
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        raise ValueError(f"cannot create the folder of the output path {final}: {why}") from None
    # Written next to the destination and renamed once parity holds: a failed export must not replace (or
    # half-write) a model already there, and the output may be the very file being re-exported.
    with written_then_renamed(final) as path:
        _torch_export(model, path, opset)
        source = "given"
        if faces is None:
            faces, source = parity_faces()
        report: dict[str, Any] = {"path": final, "opset": opset, "faces": source}
        if simplify:
            report["onnxslim"] = _slim(path, faces, min_cosine, verbose)
        proto = onnx.load(path)
        report["folded_input_affines"] = fold_input_affine(proto)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        set_metadata(proto, {**default_metadata(info), **info.get("metadata", {}), **(metadata or {})})
        proto.producer_name = "maskfr"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, path)
        report["parity"] = compare(torch_embed(model, faces), ort_embed(path, faces), min_cosine,
                                   ref_name="torch", out_name="onnxruntime", verbose=verbose)
        if not report["parity"]["passed"]:
            raise RuntimeError(f"{final}: ONNX export disagrees with torch (min cosine "
                               f"{report['parity']['min_cosine']:.6f} < {min_cosine}); nothing written")
        if golden is not None:  # made from the checked temporary and renamed just before it: both or neither
            from maskfr.export.golden import golden_path, write_golden
            report["golden"] = str(write_golden(path, golden, golden_path(final), model_name=Path(final).name))
    report["sha256"] = sha256(final)
    return report


__all__ = ["EMBED_DIM", "INPUT_NAME", "MIN_COSINE", "OPSET", "OUTPUT_NAME", "check_student_io", "compare",
           "default_metadata", "export_onnx", "fold_input_affine", "load_onnx", "load_student", "ort_embed",
           "ort_session", "parity_faces", "read_metadata", "set_metadata", "sha256", "torch_embed"]
