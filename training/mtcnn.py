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

import argparse
import io
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from maskfr.training import load_checkpoint, run_cli
from maskfr.training.cache import CACHE_ROOT

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


# -- fine-tuning on synthetic masks -----------------------------------------------------------
# Training faces are free: dlib finds the face and its 68 landmarks on the unmasked original,
# MaskSynth masks it, and the as-shipped MTCNN's box on the unmasked image is the box target
# (so the fine-tuned nets keep MTCNN's box convention). Crops come from P-Net's own proposals
# (realistic, hard negatives included) plus jittered boxes around each face, on the masked and
# the unmasked image alike, so unmasked faces don't get worse.

CACHE = CACHE_ROOT / "mtcnn"
SIZES = {"pnet": 12, "rnet": 24, "onet": 48}
POS, PART, NEG = 1, -1, 0
CHUNK = 100
# Camera degradations drawn on a share of the prepared copies (``prepare(degrade=)``), in LFW-frame pixels where
# the eyes are ~40 apart: shrunk to as little as a quarter, moving up to 12 pixels during the exposure, JPEG.
# The detector then sees blurred, blocky faces as faces (benchmarks/RESULTS.md, "Small, blurred and compressed").
CAMERA = dict(min_scale=0.25, p_blur=0.5, max_blur_px=12.0, p_jpeg=0.5, jpeg_quality=(25, 90))
# Landmark-stage faces: a square around the box target, FACE_PAD times its side, stored at FACE_SIDE
# pixels so training can cut jittered, rotated boxes out of it at LNet's input size.
FACE_SIDE, FACE_PAD = 96, 1.5


def _faces(rgb, teacher) -> tuple[list[tuple], "np.ndarray"]:
    """dlib faces as (teacher box or None, five points, lm68) and every box a face may occupy."""
    import numpy as np
    from maskfr.detector import box_iou
    from maskfr.training.dlib_models import five_from_68, hog_detector, shape_predictor
    dets, _, _ = hog_detector().run(rgb, 1, 0.0)
    mt = teacher.detect(rgb[..., ::-1].copy())
    mt_boxes = np.array([d.box for d in mt], np.float64).reshape(-1, 4)
    faces, occupied = [], [mt_boxes]
    for d in dets:
        lm = np.array([[p.x, p.y] for p in shape_predictor(68)(rgb, d).parts()], np.float32)
        db = np.array([d.left(), d.top(), d.right(), d.bottom()], np.float64)
        occupied.append(db[None])
        ious = box_iou(db, mt_boxes) if len(mt_boxes) else np.zeros(0)
        gt = mt_boxes[int(np.argmax(ious))] if len(ious) and ious.max() >= 0.4 else None
        faces.append((gt, five_from_68(lm), lm))
    return faces, np.vstack(occupied)


def _samples(rgb, faces, occupied, teacher, rng) -> dict:
    """Labelled crops of one image: P-Net proposals and jittered face boxes, with targets."""
    import numpy as np
    from maskfr.detector import box_iou, crop_resize
    h, w = rgb.shape[:2]
    gts = [(g, five) for g, five, _ in faces if g is not None]
    boxes = [teacher._propose([rgb])[0][:, :4]]
    for g, _ in gts:
        size = max(g[2] - g[0], g[3] - g[1])
        c = (g[:2] + g[2:]) / 2
        for _ in range(4):
            s = size * rng.uniform(0.8, 1.25)
            cc = c + rng.uniform(-0.2, 0.2, 2) * size
            boxes.append(np.r_[cc - s / 2, cc + s / 2][None])
    for _ in range(3):  # random squares anywhere, mostly background
        s = rng.uniform(12, min(h, w))
        x, y = rng.uniform(0, w - s), rng.uniform(0, h - s)
        boxes.append(np.array([[x, y, x + s, y + s]]))
    boxes = np.round(np.vstack(boxes))  # whole pixels, as crop_resize cuts them and the detector feeds them
    boxes = boxes[(boxes[:, 2] - boxes[:, 0]) >= 12]
    label = np.full(len(boxes), 2)  # 2 = ignore
    best = np.full(len(boxes), -1)
    if gts:
        iou = np.stack([box_iou(g, boxes) for g, _ in gts], 1)
        best, top = iou.argmax(1), iou.max(1)
        label[top >= 0.65] = POS
        label[(top >= 0.4) & (top < 0.65)] = PART
    near = np.stack([box_iou(o, boxes) for o in occupied], 1).max(1) if len(occupied) else np.zeros(len(boxes))
    label[(label == 2) & (near < 0.3)] = NEG
    keep = []
    for lab, k in ((POS, 4), (PART, 3), (NEG, 5)):
        idx = np.flatnonzero(label == lab)
        keep += list(rng.permutation(idx)[:k])
    keep = np.array(keep, np.int64)
    boxes, label, best = boxes[keep], label[keep], best[keep]
    size = (boxes[:, 2] - boxes[:, 0])[:, None]
    reg = np.zeros((len(boxes), 4), np.float32)
    lm = np.zeros((len(boxes), 10), np.float32)
    for i in np.flatnonzero(label != NEG):
        g, five = gts[best[i]]
        reg[i] = (g - boxes[i]) / size[i]
        lm[i] = np.r_[(five[:, 0] - boxes[i, 0]), (five[:, 1] - boxes[i, 1])] / size[i]
    out = {f"crop{s}": crop_resize(rgb, boxes, s) for s in SIZES.values()}
    return {**out, "label": label.astype(np.int8), "reg": reg, "lm": lm, "side": size[:, 0].astype(np.float32),
            **_landmark_faces(rgb, faces)}


def _landmark_faces(rgb, faces: list[tuple], side: int = FACE_SIDE) -> dict:
    """Each face's padded square crop (``face``), its 5 points (``face_lm``) and its 68 (``face_lm68``) as
    fractions of the crop in edge coordinates (pixel i spans [i, i+1)), the convention
    :mod:`maskfr.training.lnet` uses. Faces without a teacher box are left out."""
    import numpy as np
    from maskfr.detector import crop_resize
    kept = [(g, five, lm68) for g, five, lm68 in faces if g is not None]
    boxes = np.zeros((len(kept), 4))
    for k, (g, _, _) in enumerate(kept):
        c, half = (g[:2] + g[2:]) / 2, max(g[2] - g[0], g[3] - g[1]) * FACE_PAD / 2
        boxes[k] = np.round(np.r_[c - half, c + half])

    def rel(pts: list, n: int) -> np.ndarray:
        pts = np.array(pts, np.float32).reshape(len(kept), n, 2)
        return ((pts + 0.5 - boxes[:, None, :2]) / (boxes[:, None, 2:] - boxes[:, None, :2])).astype(np.float32)

    return {"face": crop_resize(rgb, boxes, side), "face_lm": rel([f for _, f, _ in kept], 5),
            "face_lm68": rel([lm for _, _, lm in kept], 68)}


def prepare(paths: list[str], out_dir: str | Path, masks_root: str | Path, seed: int = 0,
            part: int = 0, parts: int = 1, masked_copies: int = 3, degrade: float = 0.0,
            faces_only: bool = False, face_side: int = FACE_SIDE, **mask_kw: float) -> Path:
    """Labelled crops from these images, unmasked and ``masked_copies`` times freshly masked, in
    resumable chunks under ``out_dir``; process ``part`` of ``parts`` does every ``parts``-th chunk,
    so several can run at once. A ``degrade`` share of the copies pass through :data:`CAMERA`'s
    degradations after masking; boxes and points stay those of the sharp unmasked image.
    ``faces_only``: only the landmark stage's face crops (:func:`_landmark_faces`, ``face_side`` pixels a
    side: ``FACE_PAD`` times the input of the LNet to train), not P/R/O-Net's. ``mask_kw``: :class:`MaskSynth`'s
    shares of mask kinds (``p_below_nose``, ``p_scarf``, ``p_sunglasses``)."""
    import cv2
    import numpy as np
    from tqdm import tqdm

    from maskfr.detector import FaceDetector
    from maskfr.training.masks import MaskSynth
    from maskfr.training.train import random_degrade
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher = FaceDetector(models_dir=CACHE / "orig", backend="cpu", pnet_threshold=0.5, score_threshold=0.7,
                           threads=1)
    synth = MaskSynth(masks_root, **mask_kw)
    for start in tqdm(range(part * CHUNK, len(paths), parts * CHUNK), desc="mtcnn data", unit="chunk"):
        dst = out_dir / f"{start:07d}.npz"
        if dst.exists():
            continue
        crops = []
        for i in range(start, min(start + CHUNK, len(paths))):
            rgb = cv2.cvtColor(cv2.imread(paths[i]), cv2.COLOR_BGR2RGB)
            rng = np.random.default_rng(seed * 1_000_003 + i)
            faces, occupied = _faces(rgb, teacher)
            if not faces:
                continue
            for copy in range(1 + masked_copies):  # copy 0 unmasked, the others freshly masked
                img = rgb
                for _, _, lm68 in (faces if copy else []):
                    img = synth(img, lm68, rng)[0]
                if degrade and rng.random() < degrade:  # no draw at 0: older data stays reproducible
                    img = random_degrade(img, rng, **CAMERA)
                crops.append(_landmark_faces(img, faces, face_side) if faces_only
                             else _samples(img, faces, occupied, teacher, rng))
        if not crops:
            continue
        tmp = dst.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.concatenate([c[k] for c in crops]) for k in crops[0]})
        tmp.rename(dst)
    return out_dir


# Box and landmark targets are fractions of the crop side (errors of a few hundredths), so their
# squared errors are ~1e-3 against a cross-entropy of ~0.1: weighted up, so the shared layers
# learn them rather than only the face/non-face split.
LOSS_WEIGHTS = {"box": 5.0, "landmarks": 20.0}


def _loss(name: str, out: tuple, label: torch.Tensor, reg: torch.Tensor, lm: torch.Tensor) -> dict:
    """MTCNN's multi-task loss: face/non-face on pos+neg, box on pos+part, landmarks on pos+part."""
    logits, breg = out[0], out[1]
    if name == "pnet":
        logits, breg = logits[:, :, 0, 0], breg[:, :, 0, 0]
    cls = label >= 0
    box = label != NEG
    terms = {"cls": nn.functional.cross_entropy(logits[cls], (label[cls] == POS).long())}
    if box.any():
        terms["box"] = LOSS_WEIGHTS["box"] * nn.functional.mse_loss(breg[box], reg[box])
        if name == "onet":
            terms["landmarks"] = LOSS_WEIGHTS["landmarks"] * nn.functional.mse_loss(out[2][box], lm[box])
    return terms


def _mirror(xb: "np.ndarray", reg: torch.Tensor, lm: torch.Tensor, side: torch.Tensor,
            flip: "np.ndarray") -> tuple:
    """Mirror the flagged crops; box offsets and landmarks follow (left and right points swap).

    Pixel x of a crop of ``side`` frame pixels goes to ``side - 1 - x``, so a point at fraction
    ``f`` of the box lands at ``1 - f - 1/side``, and box edges (at pixel borders) at ``1 - f``.
    """
    import numpy as np
    xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
    reg, lm, f = reg.clone(), lm.clone(), torch.from_numpy(flip)
    reg[f] = torch.stack([-reg[f, 2], reg[f, 1], -reg[f, 0], reg[f, 3]], 1)
    swap = [1, 0, 2, 4, 3]  # left eye <-> right eye, left mouth corner <-> right
    lm[f] = torch.cat([(1 - lm[f, :5] - 1 / side[f, None])[:, swap], lm[f, 5:][:, swap]], 1)
    return xb, reg, lm


def _grey(xb: "np.ndarray", which: "np.ndarray") -> "np.ndarray":
    """The flagged RGB crops made monochrome (``train.to_grey``): night cameras in infrared mode, where the
    nets trained on colour alone missed faces."""
    from maskfr.training.train import to_grey
    out = xb.copy()
    out[which] = to_grey(xb[which])
    return out


def finetune(data_dir: str | Path, name: str, epochs: int = 3, lr: float = 5e-4, batch: int = 256,
             out_dir: str | Path = CACHE / "finetune", init_dir: str | Path = CACHE / "orig",
             p_grey: float = 0.0) -> nn.Module:
    """Fine-tune one net from the weights in ``init_dir`` (the as-shipped ones by default; Adam,
    cosine-decayed learning rate); resumes from its per-epoch checkpoint in ``out_dir``. A ``p_grey``
    share of each batch's crops is made monochrome (drawn only when above 0, so older runs reproduce)."""
    import math

    import numpy as np
    from maskfr.detector import to_net_input
    chunks = sorted(Path(data_dir).glob("[0-9]*.npz"))
    data = [np.load(c) for c in chunks]
    x = np.concatenate([d[f"crop{SIZES[name]}"] for d in data])
    label = torch.from_numpy(np.concatenate([d["label"] for d in data]).astype(np.int64))
    reg = torch.from_numpy(np.concatenate([d["reg"] for d in data]))
    lm = torch.from_numpy(np.concatenate([d["lm"] for d in data]))
    # mirroring needs each crop's size in frame pixels; data prepared without it is not mirrored
    side = torch.from_numpy(np.concatenate([d["side"] for d in data])) if "side" in data[0] else None
    net = from_onnx(Path(init_dir) / f"mtcnn_{name}.onnx", name).train()
    net = net.to(memory_format=torch.channels_last)  # ~15% faster convolutions on CPU
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / (epochs * steps))))
    ckpt = Path(out_dir) / f"{name}.pt"
    for epoch in range(resume(ckpt, net, opt, sched), epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).numpy()
        totals: dict[str, float] = {}
        for b in range(0, len(perm), batch):
            idx = perm[b:b + batch]
            xb, rb, lb = x[idx], reg[idx], lm[idx]
            if side is not None:
                flip = np.random.default_rng(epoch * 100_000 + b).random(len(idx)) < 0.5
                xb, rb, lb = _mirror(xb, rb, lb, side[idx], flip)
            if p_grey > 0:
                xb = _grey(xb, np.random.default_rng([epoch, b, 1]).random(len(idx)) < p_grey)
            xt = torch.from_numpy(to_net_input(xb)).contiguous(memory_format=torch.channels_last)
            terms = _loss(name, net(xt), label[idx], rb, lb)
            opt.zero_grad()
            sum(terms.values()).backward()
            opt.step()
            sched.step()
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) * len(idx)
        parts = ", ".join(f"{k} {v / len(perm):.4f}" for k, v in totals.items())
        print(f"{name} epoch {epoch + 1}/{epochs}: {parts} ({len(perm)} crops)", flush=True)
        save_checkpoint(ckpt, net, opt, sched, epoch + 1)
    return net.eval()


def resume(ckpt: Path, net: nn.Module, opt: torch.optim.Optimizer, sched) -> int:
    """Load a per-epoch checkpoint written by :func:`save_checkpoint` if there is one; the epoch to start at."""
    if not ckpt.exists():
        return 0
    state = load_checkpoint(ckpt, {"net", "opt", "sched", "epoch"})
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return state["epoch"]


def save_checkpoint(ckpt: Path, net: nn.Module, opt: torch.optim.Optimizer, sched, epoch: int) -> None:
    """Net, optimiser and schedule after ``epoch`` epochs, written then renamed (a crash keeps the last one)."""
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_suffix(".tmp")
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch}, tmp)
    tmp.replace(ckpt)


def training_paths(lfw_root: str, celeba_root: str, n_lfw: int = 3500, n_celeba: int = 3500) -> list[str]:
    """The images ``prepare`` uses: a fixed sample of LFW folds 1-5 people (folds 6-10 stay unseen)
    and of the CelebA subset."""
    import random

    from maskfr.training.data import LFW, celeba
    lfw = LFW(lfw_root)
    people = [p for fold in lfw.people_folds()[:5] for p in fold]
    rnd = random.Random(0)
    paths = [s.path for s in rnd.sample(lfw.samples(people), n_lfw)]
    return paths + [s.path for s in rnd.sample(celeba(celeba_root), n_celeba)]


def _part(text: str) -> tuple[int, int]:
    """``k/K`` with 0 <= k < K (``--part 1`` was an int() error naming neither the option nor the form)."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected k/K with 0 <= k < K, e.g. 0/2 and 1/2, got {text!r}")
    return int(k), int(n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="MTCNN: export the as-shipped nets, fine-tune on synthetic masks")
    ap.add_argument("--data", default=str(CACHE / "data"), help="prepared crops (written by prepare)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export-orig", help="facenet-pytorch wheel -> ONNX in mtcnn/orig of the cache folder "
                       "($MASKFR_CACHE, else ~/.cache/maskfr)")
    e.add_argument("wheel")
    p = sub.add_parser("prepare", help="labelled crops from LFW folds 1-5 people + CelebA subset")
    p.add_argument("--lfw", default="../shared/data/lfw")
    p.add_argument("--celeba", default="../shared/data/celeba-subset")
    p.add_argument("--masks", default="../shared/data/masks")
    p.add_argument("--n-lfw", type=int, default=3500)
    p.add_argument("--n-celeba", type=int, default=3500)
    p.add_argument("--part", default="0/1", type=_part, help="k/K: this process's share of the chunks")
    p.add_argument("--masked-copies", type=int, default=3)
    p.add_argument("--degrade", type=float, default=0.0, help="share of copies given camera blur, shrink and JPEG")
    p.add_argument("--faces-only", action="store_true", help="only the landmark stage's face crops (lnet)")
    p.add_argument("--face-side", type=int, default=FACE_SIDE, help="their side in pixels (1.5x the LNet input)")
    p.add_argument("--below-nose", type=float, default=0.0, help="share of the masks worn below the nose")
    p.add_argument("--scarf", type=float, default=0.0, help="share of the occluders that are scarves")
    p.add_argument("--sunglasses", type=float, default=0.0, help="share of the masked faces also wearing sunglasses")
    f = sub.add_parser("finetune", help="fine-tune, then export to OUT/mtcnn_*.onnx")
    f.add_argument("--nets", default="pnet,rnet,onet")
    f.add_argument("--epochs", default="3,5,4", help="one count, or one per net in --nets")
    f.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sdk" / "models"))
    f.add_argument("--init", default=str(CACHE / "orig"), help="nets to start from (and to export unchanged "
                   "when not in --nets)")
    f.add_argument("--ckpt-dir", default=str(CACHE / "finetune"), help="per-epoch checkpoints (resumed)")
    f.add_argument("--p-grey", type=float, default=0.0, help="share of crops made monochrome (night cameras)")
    a = ap.parse_args(argv)
    if a.cmd == "export-orig":
        ws = weights_from_wheel(a.wheel)
        export_all({n: build(n, ws[n]) for n in NETS}, CACHE / "orig")
    elif a.cmd == "prepare":
        k, n = a.part
        prepare(training_paths(a.lfw, a.celeba, a.n_lfw, a.n_celeba), a.data, a.masks, part=k, parts=n,
                masked_copies=a.masked_copies, degrade=a.degrade, faces_only=a.faces_only,
                face_side=a.face_side, p_below_nose=a.below_nose, p_scarf=a.scarf,
                p_sunglasses=a.sunglasses)
    else:
        nets = {n: from_onnx(Path(a.init) / f"mtcnn_{n}.onnx", n) for n in NETS}
        names = a.nets.split(",")
        epochs = [int(e) for e in a.epochs.split(",")]
        for n, e in zip(names, epochs * len(names) if len(epochs) == 1 else epochs):
            nets[n] = finetune(a.data, n, epochs=e, out_dir=a.ckpt_dir, init_dir=a.init, p_grey=a.p_grey)
        export_all(nets, a.out)


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m maskfr.training.mtcnn"))
