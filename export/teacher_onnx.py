"""Export the dlib teacher (:mod:`maskfr.training.teacher`) to ONNX.

Graph contract (also written into the model's ``metadata_props``): input ``input``
is NCHW float32 **raw RGB 0..255** of 150x150 dlib face chips (``dlib_chip`` /
``dlib.get_face_chip(img, shape, 150, 0.25)``), dynamic batch; dlib's input
normalisation ``(x - mean) / 256`` is inside the graph, so callers only transpose
and cast. Output ``embedding`` is (N,128) float32, unnormalised, as dlib returns it.
"""
from __future__ import annotations

import json
import os
import warnings

import torch
from torch import nn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


class _RawInput(nn.Module):
    """Wraps the ResNet so the exported graph takes raw 0..255 RGB."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.net.normalize(x))


def export_teacher(path: str | os.PathLike, model_path: str | os.PathLike | None = None) -> str:
    """Write the teacher as an ONNX file (opset 17, dynamic batch) and return its path."""
    import onnx

    from maskfr.training.teacher import CHIP_SIZE, load_dlib_resnet

    net = load_dlib_resnet(model_path)
    model = _RawInput(net).eval()
    dummy = torch.full((2, 3, CHIP_SIZE, CHIP_SIZE), 128.0)
    path = os.fspath(path)
    # The TorchScript exporter on purpose: the dynamo one emits opset >= 18 and cannot
    # down-convert Pad to 17. add_prev's shape tests are constants for 150x150 chips.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, dynamo=False,
        )
    proto = onnx.load(path)
    mean = [round(float(v), 6) for v in net.mean.flatten()]
    meta = {
        "maskfr.model": "dlib_face_recognition_resnet_model_v1",
        "maskfr.input": f"NCHW float32 raw RGB 0..255, {CHIP_SIZE}x{CHIP_SIZE} dlib face chip "
                        "(get_face_chip size 150 padding 0.25); normalisation is in the graph",
        "maskfr.normalisation": json.dumps({"mean_rgb": mean, "divide_by": 256.0}),
        "maskfr.output": "embedding (N,128) float32, unnormalised dlib descriptor",
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_teacher"]
