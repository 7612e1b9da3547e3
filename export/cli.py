"""``maskfr`` export sub-commands: export, quantize, build-engine, export-triton.

Registered by :func:`add_export_commands` from ``maskfr.cli.build_parser`` (lazily, so the
runtime works without this package's heavy dependencies); every command imports torch, onnx
or TensorRT only when it runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _print(report: dict, as_json: bool, text: str) -> None:
    print(json.dumps(report, default=str) if as_json else text)


def _at_least_one(text: str) -> int:
    """``-n``: a negative count sliced faces off the end of the calibration set, and 0 failed later with a
    message about the crops' shape."""
    try:
        n = int(text)
    except ValueError:
        n = 0  # not a number: refused below, with the same message
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _source(model: str | None) -> tuple[Path, Path]:
    """The ONNX to read and the path its outputs are named after: the packaged model when none is given, with
    outputs in the current folder (next to it, they would go into the installed package)."""
    if model is not None:
        return Path(model), Path(model)
    from maskfr.recognizer import DEFAULT_MODEL
    return DEFAULT_MODEL, Path(DEFAULT_MODEL.name)


def _faces(cache: str | None, lfw: str | None, folds: str, n: int):
    """Calibration/parity faces from the aligned-face cache, restricted to the people of ``folds``."""
    from maskfr.export.quantize import calibration_faces, lfw_people
    from maskfr.training.cache import lfw_cache_path

    path = Path(cache) if cache else lfw_cache_path()
    if not path.exists():
        raise FileNotFoundError(f"no aligned-face cache at {path}: build it with 'maskfr eval' first or pass --calib")
    lo, _, hi = folds.partition("-")
    people = lfw_people(lfw, range(int(lo), int(hi or lo) + 1)) if lfw else None
    return calibration_faces(path, people, n=n)


def cmd_export(a: argparse.Namespace) -> int:
    from maskfr.export.onnx_export import export_onnx

    bad = [kv for kv in a.meta if "=" not in kv]
    if bad:  # dict()'s own message would not name the option or the entry
        raise ValueError(f"--meta takes KEY=VALUE entries, got {bad[0]!r}")
    meta = dict(kv.split("=", 1) for kv in a.meta)
    if a.thresholds:
        text = Path(a.thresholds).read_text() if Path(a.thresholds).exists() else a.thresholds
        try:
            thresholds = json.loads(text)
        except ValueError as e:
            raise ValueError(f"--thresholds {a.thresholds!r}: neither a JSON file nor JSON text ({e})") from None
        # the runtime reads a {"far=1e-3": 0.57, ...} object (as 'maskfr thresholds' writes); anything else
        # would make a model whose default threshold cannot be read
        if not isinstance(thresholds, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in thresholds.values()):
            raise ValueError(f"--thresholds: expected a JSON object of numbers such as {{\"far=1e-3\": 0.57}}, "
                             f"got {text.strip()[:100]!r}")
        meta["recommended_thresholds"] = json.dumps(thresholds)  # validated, one line
    golden = None
    if a.golden:
        from maskfr.export.golden import public_faces
        golden = public_faces(a.golden)
    rep = export_onnx(a.ckpt, a.output, opset=a.opset, metadata=meta, simplify=not a.no_slim, verbose=not a.json,
                      golden=golden)
    _print(rep, a.json, f"wrote {a.output} (sha256 {rep['sha256'][:12]}, min cosine vs torch "
                        f"{rep['parity']['min_cosine']:.7f})")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    import numpy as np

    from maskfr.export.onnx_export import check_student_io
    from maskfr.export.quantize import check_fp32, folder_faces, qdq_summary, to_fp16, to_int8

    if not (a.fp16 or a.int8):
        raise ValueError("nothing to do: pass --fp16 and/or --int8")
    src, named = _source(a.model)
    check_student_io(src)  # a clear error for a non-ONNX file or another model, not ORT's traceback
    check_fp32(src)  # before the calibration faces are gathered, which can take minutes
    if a.calib and not Path(a.calib).exists():  # else reported as a missing default cache
        raise FileNotFoundError(f"--calib {a.calib}: no such folder or file")
    out = {}
    if a.fp16:
        out["fp16"] = str(to_fp16(src, named.with_suffix(".fp16.onnx")))
    if a.int8:
        if a.calib and Path(a.calib).is_dir():
            faces, out["calibration_skipped"] = folder_faces(a.calib, a.n, drawn_masks=a.drawn_masks)
        elif a.calib and a.calib.endswith(".npy"):
            try:  # numpy's own errors name no file, and call text "pickled data"
                faces = np.load(a.calib)[:a.n]  # -n applies to every source
            except (ValueError, EOFError):
                raise ValueError(f"--calib {a.calib}: not an .npy array of aligned crops, or truncated") from None
        else:
            faces = _faces(a.calib, a.lfw, a.folds, a.n)
        if faces.ndim != 4 or faces.shape[1:] != (112, 112, 3) or faces.dtype != np.uint8 or not len(faces):
            # else ONNX Runtime's shape error (a traceback) or "No data is collected."
            raise ValueError(f"--calib {a.calib}: expected aligned RGB uint8 crops (N, 112, 112, 3), N >= 1, "
                             f"got {faces.dtype} {faces.shape}")
        dst = named.with_suffix(".int8.onnx" if a.target == "tensorrt" else ".int8-cpu.onnx")
        out["int8"] = str(to_int8(src, dst, faces, target=a.target, method=a.method))
        out["int8_qdq"] = qdq_summary(dst)
        out["calibration_faces"] = int(len(faces))
    text = [f"wrote {v}" for k, v in out.items() if k in ("fp16", "int8")]
    if "calibration_skipped" in out:
        skipped = out["calibration_skipped"]
        text.append(f"calibrated on {out['calibration_faces']} faces (skipped {skipped['unreadable']} unreadable "
                    f"images and {skipped['no_face']} without a face)")
    _print(out, a.json, "\n".join(text))
    return 0


def cmd_build_engine(a: argparse.Namespace) -> int:
    from maskfr.export.engine import build_engine

    try:  # int()'s own message would not name the option
        batch = [int(b) for b in a.batch.split(":")]
    except ValueError:
        batch = []
    if len(batch) != 3:
        raise ValueError(f"--batch takes MIN:OPT:MAX, got {a.batch!r}")
    src, named = _source(a.model)
    output = a.output or (None if a.model else named.with_suffix(f".{a.precision or 'fp32'}.engine"))
    side = build_engine(src, output, precision=a.precision, batch=batch, workspace_mb=a.workspace,
                        timing_cache=a.timing_cache, dla_core=a.dla_core, sm=a.sm, flavour=a.flavour)
    _print(side, a.json, f"wrote {side['engine']} ({side['flavour']} {side['tensorrt_version']}, "
                         f"{side['precision']}, SM{side['sm']}, {side['gpu']}) and its .json sidecar")
    return 0


def cmd_export_triton(a: argparse.Namespace) -> int:
    from maskfr.export.triton import write_repository

    dirs = write_repository(a.repo, _source(a.model)[0], plan=a.plan, name=a.name, include_onnx=not a.plan_only,
                            max_batch=a.max_batch, instances=a.instances,
                            kind="KIND_CPU" if a.cpu else "KIND_GPU")
    _print({"models": [str(d) for d in dirs]}, a.json, "\n".join(f"wrote {d}/config.pbtxt" for d in dirs))
    return 0


def add_export_commands(sub: argparse._SubParsersAction) -> None:
    """Add the export sub-commands to ``maskfr``'s sub-parsers."""
    e = sub.add_parser("export", help="export a trained student checkpoint to ONNX (metadata, parity vs torch)")
    e.add_argument("ckpt", help="checkpoint saved by training ({'model': state_dict, 'config', 'git_rev', 'stage'}), "
                   "or an exported .onnx to re-export with this exporter (weights and metadata carry over)")
    e.add_argument("-o", "--output", default="model.onnx", help="ONNX file to write (default model.onnx)")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    e.add_argument("--meta", nargs="*", default=[], metavar="KEY=VALUE", help="extra/overriding metadata")
    e.add_argument("--thresholds", help="recommended thresholds: JSON text or a JSON file")
    e.add_argument("--no-slim", action="store_true", help="skip onnxslim (kept only if parity holds anyway)")
    e.add_argument("--golden", type=int, default=16, help="crops of the public-domain demo photo (needs "
                   "maskfr[demo]) in model.golden.npz next to the model (0: none)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(fn=cmd_export)

    q = sub.add_parser("quantize", help="FP16 and/or INT8 QDQ variants of an exported model")
    q.add_argument("model", nargs="?", help="the FP32 ONNX model from 'maskfr export' (default: the packaged model; "
                   "its variants are then written to the current folder)")
    q.add_argument("--fp16", action="store_true", help="write MODEL.fp16.onnx (float32 IO)")
    q.add_argument("--int8", action="store_true", help="write MODEL.int8.onnx (QDQ, calibrated; "
                   "MODEL.int8-cpu.onnx with --target cpu)")
    q.add_argument("--target", choices=["tensorrt", "cpu"], default="tensorrt",
                   help="INT8 flavour: tensorrt (S8S8 symmetric) or cpu (U8S8, faster on AVX2 CPUs)")
    q.add_argument("--calib", help="a folder of your images (faces found and aligned as the runtime does; "
                   "include masked ones), an aligned-face cache .npz (default lfw.npz in the cache folder: "
                   "$MASKFR_CACHE, else ~/.cache/maskfr) or an .npy of crops")
    q.add_argument("--lfw", help="LFW root: calibrate only on the people of --folds (recommended)")
    q.add_argument("--folds", default="1-5", help="LFW folds whose people calibrate (default 1-5)")
    q.add_argument("-n", type=_at_least_one, default=256, help="calibration faces (from the cache: half masked)")
    q.add_argument("--drawn-masks", type=float, default=0.5, metavar="F",
                   help="with --calib FOLDER: fraction of its faces that get a drawn mask of random colour first "
                        "(default 0.5, so masked faces are covered even if the folder has none)")
    q.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="percentile",
                   help="INT8 activation range calibration (default percentile)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(fn=cmd_quantize)

    b = sub.add_parser("build-engine", help="TensorRT engine (+ .json sidecar); AOT without a GPU via TensorRT-RTX")
    b.add_argument("model", nargs="?", help="ONNX (FP32, FP16 or INT8 QDQ: strongly typed builds take precision "
                   "from it; default: the packaged FP32 model)")
    b.add_argument("-o", "--output", help="engine path (default MODEL.<precision>.engine; for the packaged model, "
                   "in the current folder)")
    b.add_argument("--precision", choices=["fp32", "fp16", "int8", "best"],
                   help="default: the ONNX's own; TensorRT-RTX builds only that one, full TensorRT can also lower "
                   "an FP32 ONNX to fp16/int8/best (unverified)")
    b.add_argument("--batch", default="1:8:32", help="optimisation profile MIN:OPT:MAX")
    b.add_argument("--workspace", type=int, help="workspace limit in MiB (Jetson)")
    b.add_argument("--timing-cache", help="timing cache file, read and updated (full TensorRT)")
    b.add_argument("--dla-core", type=int, help="DLA core (Jetson, full TensorRT; unverified)")
    b.add_argument("--sm", type=int, help="target compute capability, e.g. 86 (TensorRT-RTX AOT; default: this GPU)")
    b.add_argument("--flavour", choices=["tensorrt", "tensorrt_rtx"], help="default: tensorrt if installed")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(fn=cmd_build_engine)

    t = sub.add_parser("export-triton", help="write a Triton model repository (ONNX and/or TensorRT plan)")
    t.add_argument("model", nargs="?", help="the ONNX model (IO names/dims and metadata come from it; default: the "
                   "packaged model)")
    t.add_argument("--repo", default="triton_repo", help="repository folder (default triton_repo)")
    t.add_argument("--plan", help="also add this TensorRT engine as NAME_trt (full TensorRT only)")
    t.add_argument("--plan-only", action="store_true", help="skip the ONNX Runtime model")
    t.add_argument("--name", default="maskfr", help="model name in the repository (default maskfr)")
    t.add_argument("--max-batch", type=int, default=32, help="largest batch Triton forms (default 32)")
    t.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    t.add_argument("--cpu", action="store_true", help="KIND_CPU instances")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(fn=cmd_export_triton)


__all__ = ["add_export_commands"]
