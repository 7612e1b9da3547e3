"""MTCNN (Zhang et al. 2016) P/R/O-Nets in PyTorch: load the pretrained weights, export to ONNX.

The weights are facenet-pytorch's (MIT; converted from the original Caffe models via
davidsandberg/facenet). We read its ``.pt`` state dicts straight out of the wheel
(``pip download --no-deps facenet-pytorch==2.6.0``) because its code needs torchvision.
Layer names match those state dicts, so they load as they are.

Net inputs: RGB, ``(x - 127.5) / 128``, NCHW float32 (P-Net: any H, W >= 12; R-Net 24x24;
O-Net 48x48). Outputs (after ``probs=True``, as exported): face probability, box regression
(fractions of the box size) and, for O-Net, 10 landmark values (x1..x5, y1..y5 as fractions
of the box) in ArcFace order.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import nn

NETS = ("pnet", "rnet", "onet")


class PNet(nn.Module):
    """Fully convolutional proposal net: 12x12 window, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)
        self.probs = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        logits = self.conv4_1(x)
        return (torch.softmax(logits, 1)[:, 1] if self.probs else logits), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        self.probs = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # the converted Caffe weights flatten in (W, H, C) order
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        logits = self.dense5_1(x)
        return (torch.softmax(logits, 1)[:, 1] if self.probs else logits), self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        self.probs = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        logits = self.dense6_1(x)
        return (torch.softmax(logits, 1)[:, 1] if self.probs else logits), self.dense6_2(x), self.dense6_3(x)


CLASSES = {"pnet": PNet, "rnet": RNet, "onet": ONet}
OUTPUTS = {"pnet": ["prob", "reg"], "rnet": ["prob", "reg"], "onet": ["prob", "reg", "landmarks"]}
INPUT_HW = {"pnet": (12, 12), "rnet": (24, 24), "onet": (48, 48)}


def weights_from_wheel(wheel: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The three state dicts inside a facenet-pytorch wheel (``facenet_pytorch/data/*.pt``)."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in NETS:
            raw = z.read(f"facenet_pytorch/data/{name}.pt")
            out[name] = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return out


def build(name: str, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    net = CLASSES[name]()
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


def from_onnx(path: str | Path, name: str) -> nn.Module:
    """A torch net carrying the weights stored in one of our exported ONNX files."""
    import onnx
    from onnx import numpy_helper
    net = build(name)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = {}
    for key, ref in net.state_dict().items():
        if key not in inits:
            raise KeyError(f"{path}: initializer {key} missing (not exported by export_onnx?)")
        state[key] = torch.from_numpy(inits[key].copy()).reshape(ref.shape)
    net.load_state_dict(state)
    return net


def export_onnx(net: nn.Module, name: str, path: str | Path) -> Path:
    """Export with a dynamic batch (and dynamic H/W for P-Net), opset 17, probabilities as output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    net.probs = True
    h, w = INPUT_HW[name]
    dims = {0: "batch"} if name != "pnet" else {0: "batch", 2: "height", 3: "width"}
    out_dims = {o: {0: "batch"} for o in OUTPUTS[name]}
    if name == "pnet":
        out_dims = {"prob": {0: "batch", 1: "oh", 2: "ow"}, "reg": {0: "batch", 2: "oh", 3: "ow"}}
    try:
        torch.onnx.export(net, (torch.zeros(2, 3, h, w),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=OUTPUTS[name],
                          dynamic_axes={"input": dims, **out_dims})
    finally:
        net.probs = False
    _name_prelu_slopes(path)
    return path


def _name_prelu_slopes(path: Path) -> None:
    """Give PReLU slopes their module names (the exporter calls them ``onnx::PRelu_N``) so
    :func:`from_onnx` can read every weight back by name."""
    import onnx
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "PRelu" and node.input[1] in inits and not node.input[1].endswith(".weight"):
            new = node.name.strip("/").split("/")[0] + ".weight"  # "/prelu1/PRelu" -> "prelu1.weight"
            inits[node.input[1]].name = new
            node.input[1] = new
    onnx.save(model, str(path))


def export_all(nets: dict[str, nn.Module], out_dir: str | Path, suffix: str = "") -> list[Path]:
    return [export_onnx(nets[n], n, Path(out_dir) / f"mtcnn_{n}{suffix}.onnx") for n in NETS]
