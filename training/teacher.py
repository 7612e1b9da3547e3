"""dlib's face recognition ResNet (the teacher) rebuilt in PyTorch.

The network is the one of dlib's ``dnn_face_recognition_ex.cpp`` (dlib lists layers
from output to input; here they read input to output):

* input ``input_rgb_image_sized<150>``: ``(rgb - (122.782, 117.001, 104.298)) / 256``
  (the means are read from the model file);
* stem: ``con<32,7,7,2,2>`` (padding 0: dlib pads only stride-1 convs, by ``k/2``),
  ``affine``, ``relu``, ``max_pool<3,3,2,2>`` (padding 0);
* residual levels 32 x3, 64 (down + 3), 128 (down + 2), 256 (down + 2), 256 (down);
  a block is ``affine(con3x3(relu(affine(con3x3/stride(x)))))``; ``ares`` adds ``x``,
  ``ares_down`` adds ``avg_pool<2,2,2,2>(x)``, then ``relu``;
* ``avg_pool_everything``, ``fc_no_bias<128>``.

Two dlib conventions matter for exactness: ``affine`` is a per-channel scale and
shift (frozen batch norm), and ``add_prev`` of tensors of different shapes
zero-pads both to the larger one, top-left aligned (the stride-2 path can be
smaller than the pooled shortcut: 3x3 vs 4x4, then 1x1 vs 2x2).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskfr.align import similarity_transform
from maskfr.training.dlib_format import Layer, read_network

CHIP_SIZE = 150
CHIP_PADDING = 0.25
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: (level width, has a down-sampling block, plain residual blocks after it)
LEVELS = ((32, False, 3), (64, True, 3), (128, True, 2), (256, True, 2), (256, True, 0))


class Affine(nn.Module):
    """dlib's ``affine_`` in CONV_MODE: ``x * gamma[c] + beta[c]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: sum after zero-padding both to the larger C/H/W (top-left aligned).

    Channels are padded by a 1x1 convolution with an identity-embedding kernel, not a Pad: the same numbers
    (exact in float), but an op ONNX Runtime runs in INT8 and in its NHWC layout, where a channel Pad costs
    layout transposes and a dequantize/quantize pair (benchmarks/RESULTS.md). Sizes are Python ints so the
    exported graph holds constants, not shape arithmetic.
    """
    if a.shape[1:] == b.shape[1:]:
        return a + b
    c, h, w = (int(max(a.shape[i], b.shape[i])) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        tc, th, tw = (int(n) for n in t.shape[1:])
        if tc < c:
            t = F.conv2d(t, torch.eye(c, tc, dtype=t.dtype, device=t.device)[:, :, None, None])
        return F.pad(t, (0, w - tw, 0, h - th)) if (th, tw) != (h, w) else t
    return pad(a) + pad(b)


class Block(nn.Module):
    """``ares`` (stride 1, identity shortcut) or ``ares_down`` (stride 2, 2x2/2 avg-pooled shortcut)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """The dlib face-recognition ResNet-29; input normalised NCHW float32, output (N,128)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.aff = Affine(32)
        blocks, cin = [], 32
        for width, down, n in LEVELS:
            if down:
                blocks.append(Block(cin, width, True))
            blocks += [Block(width, width, False) for _ in range(n)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1))

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """Raw RGB 0..255 NCHW float -> the network input dlib's input layer builds."""
        return (rgb - self.mean) / 256.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.aff(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def _expected_sequence(net: DlibResNet) -> Iterator[tuple[str, nn.Module | None]]:
    """The reader's layer kinds, input to output, paired with the module taking their params."""
    yield from (("con", net.conv), ("affine", net.aff), ("relu", None), ("max_pool", None))
    for b in net.blocks:
        yield from (("tag_or_skip", None), ("con", b.conv1), ("affine", b.aff1), ("relu", None),
                    ("con", b.conv2), ("affine", b.aff2))
        if b.down:
            yield from (("tag_or_skip", None), ("tag_or_skip", None), ("avg_pool", None))
        yield from (("add_prev", None), ("relu", None))
    yield from (("avg_pool", None), ("fc_no_bias", net.fc))


def _check_geometry(layer: Layer, module: nn.Module | None) -> None:
    a = layer.attrs
    if layer.kind == "con":
        if (module.stride[0], module.padding[0]) != (a["stride_y"], a["padding_y"]) or \
                (a["stride_x"], a["padding_x"]) != (a["stride_y"], a["padding_y"]) or a["use_relu"]:
            raise ValueError(f"unexpected convolution geometry {a}")
    elif layer.kind == "affine" and a["mode"] != 0:
        raise ValueError("expected a per-channel (CONV_MODE) affine layer")


def load_dlib_resnet(path: str | os.PathLike | None = None) -> DlibResNet:
    """Build :class:`DlibResNet` with the weights of dlib's model file (default: the face-recognition-models one)."""
    if path is None:
        from maskfr.training.dlib_models import model_path
        path = model_path(MODEL_FILE)
    layers = read_network(path)
    if layers[0].kind != "input_rgb_image_sized" or (layers[0].attrs["nr"], layers[0].attrs["nc"]) != (150, 150):
        raise ValueError(f"expected a 150x150 RGB input layer, got {layers[0]}")
    body = [l for l in layers[1:] if l.kind != "loss_metric"]
    net = DlibResNet()
    expected = list(_expected_sequence(net))
    if [l.kind for l in body] != [k for k, _ in expected]:
        raise ValueError("the model file does not hold dlib's face recognition ResNet architecture")
    pools = [l for l in body if l.kind in ("max_pool", "avg_pool")]
    if pools[-1].attrs["nr"] != 0 or any(p.attrs["padding_y"] or p.attrs["padding_x"] for p in pools):
        raise ValueError("unexpected pooling geometry")
    with torch.no_grad():
        for layer, (_, module) in zip(body, expected):
            _check_geometry(layer, module)
            p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in layer.params.items()}
            if layer.kind == "con":
                module.weight.copy_(p["weight"])
                module.bias.copy_(p["bias"])
            elif layer.kind == "affine":
                module.weight.copy_(p["gamma"])
                module.bias.copy_(p["beta"])
            elif layer.kind == "fc_no_bias":
                module.weight.copy_(p["weight"].T)  # dlib: out = in @ W, W (in, out)
        a = layers[0].attrs
        net.mean.copy_(torch.tensor([a["avg_red"], a["avg_green"], a["avg_blue"]]).view(1, 3, 1, 1))
    return net.eval()


# --------------------------------------------------------------------------- chips

#: dlib's mean face (points 17..67 of the 68-point layout, unit square), from get_face_chip_details.
_MEAN_FACE_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689])
_MEAN_FACE_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182])
#: Points used for 68 landmarks: 27..54 and 60..64 (dlib skips eyebrows and lower lip).
_IDX68 = np.array([i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])
#: dlib's template for its 5-point predictor (right eye outer/inner, left eye outer/inner, nose).
_TEMPLATE5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                       [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                       [0.4901123135679, 0.6277975316475]])


def chip_transform(points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """2x3 affine taking chip pixel (x, y) to the image point dlib samples for it.

    ``get_face_chip_details`` fits a similarity chip -> image on the template, keeps
    its angle and scale as a rectangle ``centered_drect(T(size/2), size*s, size*s)``
    whose corner-to-corner span is ``size*s - 1``; ``extract_image_chip`` then maps
    chip corners 0..size-1 onto those rectangle corners, so the effective scale is
    ``(size*s - 1)/(size - 1)``, not ``s``.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 68:
        tmpl, img = np.stack([_MEAN_FACE_X, _MEAN_FACE_Y], 1)[_IDX68 - 17], pts[_IDX68]
    elif len(pts) == 5:
        tmpl, img = _TEMPLATE5, pts
    else:
        raise ValueError(f"need 68 or 5 landmarks, got {len(pts)}")
    chip_pts = (padding + tmpl) / (2 * padding + 1) * size
    m = similarity_transform(chip_pts, img)
    scale, angle = np.hypot(m[0, 0], m[1, 0]), np.arctan2(m[1, 0], m[0, 0])
    centre = m[:, :2] @ np.array([size / 2.0, size / 2.0]) + m[:, 2]
    k = (size * scale - 1.0) / (size - 1.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lin = rot * k
    offset = centre - rot @ np.array([(size * scale - 1.0) / 2.0] * 2)
    return np.hstack([lin, offset[:, None]])


def dlib_chip(image_rgb: np.ndarray, shape_points: np.ndarray, size: int = CHIP_SIZE,
              padding: float = CHIP_PADDING) -> np.ndarray:
    """``dlib.get_face_chip(img, shape, size, padding)`` in numpy: (size, size, 3) uint8.

    Bilinear in double precision with integer pixel centres, values truncated to
    uint8 (dlib's ``assign_pixel``), black where any of the 4 taps leaves the image.
    dlib first builds an image pyramid when the face is over ~2x the chip size; here
    that case is approximated with ``cv2.pyrDown`` (it does not occur on LFW).
    """
    img = np.asarray(image_rgb)
    m = chip_transform(shape_points, size, padding)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    while scale * (size - 1) / 2 > size:  # approximate dlib's pyramid_down<2> levels
        import cv2
        img = cv2.pyrDown(img)
        m, scale = m / 2.0, scale / 2.0  # pyrDown keeps input pixel 2i at output pixel i
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    py = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    left, top = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    h, w = img.shape[:2]
    ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    l, t = np.where(ok, left, 0), np.where(ok, top, 0)
    fx, fy = (px - left)[..., None], (py - top)[..., None]
    src = img.astype(np.float64)
    tl, tr = src[t, l], src[t, np.minimum(l + 1, w - 1)]
    bl, br = src[np.minimum(t + 1, h - 1), l], src[np.minimum(t + 1, h - 1), np.minimum(l + 1, w - 1)]
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out = np.clip(val, 0, 255).astype(np.uint8)  # truncation, as dlib's assign_pixel
    out[~ok] = 0
    return out


# --------------------------------------------------------------------------- embedding

def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """(N,150,150,3) uint8 RGB -> (N,3,150,150) float32 raw 0..255."""
    x = np.asarray(chips)
    if x.ndim == 3:
        x = x[None]
    if x.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"expected (N,{CHIP_SIZE},{CHIP_SIZE},3) RGB chips, got {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()


class DlibTeacher:
    """Embeds batches of 150x150 RGB uint8 dlib chips into dlib's 128-d descriptors with torch."""

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        self.device = torch.device(device)
        self.net = load_dlib_resnet(path).to(self.device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """(N,150,150,3) uint8 -> (N,128) float32 (unnormalised, as dlib returns them)."""
        x = chips_to_tensor(chips)
        out = [self.net(self.net.normalize(x[i:i + self.batch_size].to(self.device))).float().cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, 128), np.float32)


def dlib_reference_embeddings(chips: Iterable[np.ndarray]) -> np.ndarray:
    """dlib's own ``compute_face_descriptor`` on 150x150 chips (parity checks only)."""
    from maskfr.training.dlib_models import face_recognizer
    rec = face_recognizer()
    chips = [np.ascontiguousarray(c) for c in chips]
    if not chips:
        return np.zeros((0, 128), np.float32)
    return np.array([np.array(d) for d in rec.compute_face_descriptor(chips)], np.float32)


__all__ = ["CHIP_PADDING", "CHIP_SIZE", "DlibResNet", "DlibTeacher", "chip_transform", "chips_to_tensor",
           "OnnxTeacher", "dlib_chip", "dlib_reference_embeddings", "load_dlib_resnet"]


class OnnxTeacher:
    """The same teacher through ONNX Runtime: ~6x faster than torch on a CPU (benchmarks/RESULTS.md).

    The ONNX file is exported once from dlib's model file and cached (``$MASKFR_CACHE``, else ``~/.cache/maskfr``).
    """

    def __init__(self, onnx_path: str | os.PathLike | None = None, batch_size: int = 64, threads: int | None = None):
        import onnxruntime as ort
        from pathlib import Path

        from maskfr.backends import session_options
        from maskfr.export.teacher_onnx import export_teacher
        from maskfr.training.cache import CACHE_ROOT
        path = Path(onnx_path) if onnx_path else CACHE_ROOT / "dlib_teacher.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.onnx")
            export_teacher(tmp)
            tmp.replace(path)
        self.sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """(N,150,150,3) uint8 -> (N,128) float32 (unnormalised, as dlib returns them)."""
        x = np.asarray(chips)
        out = [self.sess.run(None, {"input": chips_to_tensor(x[i:i + self.batch_size]).numpy()})[0]
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)
