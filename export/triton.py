"""Triton Inference Server model repository for the student (ONNX Runtime and/or TensorRT plan).

Layout (one model per backend, so clients pick by name)::

    REPO/<name>/config.pbtxt, REPO/<name>/1/model.onnx        platform onnxruntime_onnx
    REPO/<name>_trt/config.pbtxt, REPO/<name>_trt/1/model.plan platform tensorrt_plan

Dynamic batching is on (faces from many camera streams arrive one by one); IO names and dims
are read from the ONNX so the config cannot drift from the model. A plan must come from the
*full* TensorRT of the Triton release that serves it (Triton does not load TensorRT-RTX engines),
and its batch profile caps ``max_batch_size``.

:func:`parse_config` reads a config back through a protobuf schema that mirrors the used part
of Triton's ``model_config.proto`` (field names, types and enum values), so typos fail here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

from maskfr.export.onnx_export import check_student_io

_DTYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 3: "TYPE_INT8", 2: "TYPE_UINT8"}


def _io_from_onnx(path: str | os.PathLike) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Triton IO entries (batch axis dropped) and maskfr metadata from an ONNX file."""
    # a clear error for a non-ONNX file or another model's IO (names and dims), not a KeyError or a config
    # Triton refuses at load time
    proto = check_student_io(path)
    inits = {i.name for i in proto.graph.initializer}

    def entries(values: Sequence[Any]) -> list[dict]:
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim][1:]
            out.append({"name": v.name, "data_type": _DTYPES[t.elem_type], "dims": dims})
        return out

    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("maskfr.")}
    return entries(proto.graph.input), entries(proto.graph.output), meta


def _pbtxt(cfg: dict[str, Any]) -> str:
    """Text-format protobuf of the config dict (only the shapes this module writes)."""
    def io(entries: list[dict]) -> str:
        return ",\n".join(f'  {{\n    name: "{e["name"]}"\n    data_type: {e["data_type"]}\n'
                          f'    dims: [ {", ".join(str(d) for d in e["dims"])} ]\n  }}' for e in entries)

    db = cfg["dynamic_batching"]
    lines = [f'name: "{cfg["name"]}"', f'platform: "{cfg["platform"]}"',
             f'default_model_filename: "{cfg["default_model_filename"]}"',
             f'max_batch_size: {cfg["max_batch_size"]}',
             f'input [\n{io(cfg["input"])}\n]', f'output [\n{io(cfg["output"])}\n]',
             "dynamic_batching {\n  preferred_batch_size: [ " + ", ".join(map(str, db["preferred_batch_size"]))
             + f" ]\n  max_queue_delay_microseconds: {db['max_queue_delay_microseconds']}\n}}",
             f'instance_group [\n  {{\n    count: {cfg["instances"]}\n    kind: {cfg["kind"]}\n  }}\n]']
    for k, v in cfg["parameters"].items():
        lines.append(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: {json.dumps(v, ensure_ascii=False)} }}\n}}')
    return "\n".join(lines) + "\n"


def _check_name(name: str) -> None:
    """A model's name is its folder in the repository: anything but one plain folder name writes outside the
    repository (``../x``, an absolute path) or where Triton finds no model (``''``, ``.``, ``a/b``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise ValueError(f"model name {name!r}: give one folder name of letters, digits, '_', '-' and '.' "
                         "(not '.' or '..'); it is the model's folder in the repository")


def _check_plan_batch(plan: str | os.PathLike, max_batch: int) -> None:
    side = Path(os.fspath(plan) + ".json")
    if side.exists():
        try:  # json's or a bare KeyError's message would name neither the file nor the fix
            info = json.loads(side.read_text())
            batch_min, _, batch_max = (int(b) for b in info["profile"]["batch"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{side}: damaged engine sidecar (not JSON with a batch profile); rebuild the engine "
                             "with maskfr build-engine") from None
        if info.get("flavour") == "tensorrt_rtx":  # it would be written, then refused when Triton loads it
            raise ValueError(f"{plan} was built with TensorRT-RTX, which Triton does not load; build the plan with "
                             "the full TensorRT of the Triton release that serves it")
        if max_batch > batch_max:
            raise ValueError(f"max_batch {max_batch} exceeds the engine profile's maximum {batch_max}")
        if batch_min > 1:  # dynamic batching sends any batch from 1 up, which the engine would reject
            raise ValueError(f"the engine profile's minimum batch is {batch_min}; Triton needs 1: rebuild it with "
                             f"maskfr build-engine --batch 1:OPT:{batch_max}")


def write_model(repo: str | os.PathLike, name: str, model: str | os.PathLike, onnx_path: str | os.PathLike,
                max_batch: int = 32, preferred: Sequence[int] = (8, 16, 32), delay_us: int = 2000,
                instances: int = 1, kind: str = "KIND_GPU", plan: bool | None = None) -> Path:
    """One model directory: ``model`` (.onnx, or .plan/.engine) copied to version 1, plus config.pbtxt.

    ``onnx_path`` supplies the IO names/dims and the preprocessing metadata (for a plan: its source ONNX).
    ``plan``: whether ``model`` is a TensorRT plan (default: from its suffix).
    """
    # max_batch_size 0 would tell Triton the dims include the batch axis, which the config drops
    if max_batch < 1 or instances < 1:
        raise ValueError(f"max_batch and instances must be >= 1, got {max_batch} and {instances}")
    _check_name(name)
    inputs, outputs, meta = _io_from_onnx(onnx_path)  # IO names and dims checked there (check_student_io)
    if plan is None:
        plan = Path(model).suffix in (".plan", ".engine")
    if plan:
        _check_plan_batch(model, max_batch)
    fname = "model.plan" if plan else "model.onnx"
    cfg = {"name": name, "platform": "tensorrt_plan" if plan else "onnxruntime_onnx",
           "default_model_filename": fname, "max_batch_size": int(max_batch), "input": inputs, "output": outputs,
           "dynamic_batching": {"preferred_batch_size": sorted({int(p) for p in preferred if p <= max_batch}),
                                "max_queue_delay_microseconds": int(delay_us)},
           "instances": int(instances), "kind": kind, "parameters": meta}
    mdir = Path(repo) / name
    (mdir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, mdir / "1" / fname)
    (mdir / "config.pbtxt").write_text(_pbtxt(cfg))
    return mdir


def write_repository(repo: str | os.PathLike, onnx_path: str | os.PathLike, plan: str | os.PathLike | None = None,
                     name: str = "maskfr", include_onnx: bool = True, **kw: Any) -> list[Path]:
    """The ONNX model (``name``) and/or the TensorRT plan (``name_trt``) in a Triton repository."""
    if not include_onnx and plan is None:
        raise ValueError("nothing to write: without the ONNX model (--plan-only) give the engine with --plan")
    _check_name(name)  # here too: with --plan-only, '' or '..' would pass as '_trt' or '.._trt'
    for f in [onnx_path] + ([plan] if plan is not None else []):  # before writing anything: no half repository
        if not Path(f).is_file():
            raise FileNotFoundError(f"no such file: {f}")
    if plan is not None:
        if not os.path.getsize(plan):  # else written, and refused only when Triton loads the model
            raise ValueError(f"{plan} is empty, not a TensorRT engine: rebuild it with maskfr build-engine")
        _check_plan_batch(plan, kw.get("max_batch", 32))
    out = []
    if include_onnx:
        out.append(write_model(repo, name, onnx_path, onnx_path, **kw))
    if plan is not None:  # a plan whatever its suffix (.trt too): never served as an ONNX model
        # and on GPU instances: Triton's TensorRT backend refuses KIND_CPU (--cpu is for the ONNX model)
        out.append(write_model(repo, f"{name}_trt", plan, onnx_path, plan=True, **{**kw, "kind": "KIND_GPU"}))
    return out


def _schema() -> Any:
    """ModelConfig message class built at run time (no tritonclient dependency)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="maskfr_triton_subset.proto", package="inference", syntax="proto3")
    dt = fdp.enum_type.add(name="DataType")
    for i, n in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                           "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
                           "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):
        dt.value.add(name=n, number=i)

    def msg(name: str, fields: list[tuple], parent: Any = fdp) -> Any:
        m = (parent.message_type if parent is fdp else parent.nested_type).add(name=name)
        for num, (fname, ftype, label, tname) in enumerate(fields, 1):
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    io = [("name", F.TYPE_STRING, opt, None), ("data_type", F.TYPE_ENUM, opt, ".inference.DataType"),
          ("dims", F.TYPE_INT64, rep, None)]
    msg("ModelInput", io)
    msg("ModelOutput", io)
    msg("ModelDynamicBatching", [("preferred_batch_size", F.TYPE_INT32, rep, None),
                                 ("max_queue_delay_microseconds", F.TYPE_UINT64, opt, None)])
    ig = msg("ModelInstanceGroup", [("count", F.TYPE_INT32, opt, None),
                                    ("kind", F.TYPE_ENUM, opt, ".inference.ModelInstanceGroup.Kind"),
                                    ("gpus", F.TYPE_INT32, rep, None)])
    kind = ig.enum_type.add(name="Kind")
    for i, n in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kind.value.add(name=n, number=i)
    msg("ModelParameter", [("string_value", F.TYPE_STRING, opt, None)])
    mc = msg("ModelConfig", [("name", F.TYPE_STRING, opt, None), ("platform", F.TYPE_STRING, opt, None),
                             ("backend", F.TYPE_STRING, opt, None),
                             ("default_model_filename", F.TYPE_STRING, opt, None),
                             ("max_batch_size", F.TYPE_INT32, opt, None),
                             ("input", F.TYPE_MESSAGE, rep, ".inference.ModelInput"),
                             ("output", F.TYPE_MESSAGE, rep, ".inference.ModelOutput"),
                             ("dynamic_batching", F.TYPE_MESSAGE, opt, ".inference.ModelDynamicBatching"),
                             ("instance_group", F.TYPE_MESSAGE, rep, ".inference.ModelInstanceGroup"),
                             ("parameters", F.TYPE_MESSAGE, rep, ".inference.ModelConfig.ParametersEntry")])
    entry = msg("ParametersEntry", [("key", F.TYPE_STRING, opt, None),
                                    ("value", F.TYPE_MESSAGE, opt, ".inference.ModelParameter")], parent=mc)
    entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a config.pbtxt against the ModelConfig subset; returns it as a dict (raises on errors)."""
    from google.protobuf import json_format, text_format

    msg = text_format.Parse(Path(path).read_text(), _schema()())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


__all__ = ["parse_config", "write_model", "write_repository"]
