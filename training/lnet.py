"""LNet: a fourth detector stage that places the 5 points on each detected face at 64x64.

O-Net sees 48x48 and shares its capacity with scoring and box regression; on masked faces its
nose and mouth points are off by 9-12 % of the eye distance. LNet is a small conv net trained
only for landmarks, on the same free data as the MTCNN fine-tuning (``mtcnn prepare`` stores
each face's padded crop and dlib's five points of the unmasked original), with fresh geometric
jitter, mirroring and colour changes every epoch.

Input: the detector's final box made square (``maskfr.detector._square``), cut out at 64x64,
MTCNN's ``(x - 127.5) / 128`` NCHW float32. Output ``landmarks`` (N, 10): x1..x5, y1..y5 as
fractions of the box in edge coordinates (pixel i spans [i, i+1)), ArcFace order.

``--points 68`` trains on all 68 of dlib's points instead (jaw, brows, eye contours: the shape a mask
leaves visible, benchmarks/RESULTS.md "How much of the hidden points the rest of the face tells"); the five
are then computed from them as the reference computes them (:func:`five_of`), inside the exported graph, so
the ONNX file has the same input and output either way. It needs the 512-unit hidden layer (with 128 it places
the five worse than a 5-point net), and with it a 5-point net does as well, so the packaged LNet is a 5-point net
with 512 units (RESULTS, same section and "A wider LNet head"). ``--size`` trains another input side on crops
prepared at 1.5x it (``mtcnn prepare --face-side``; the detector reads the side from the file): 96x96 placed the
points no better. ``--heatmap`` swaps the linear head for soft-argmax heatmaps (:class:`SoftArgmax`): better on
what is visible, worse on what a mask hides, so not packaged (RESULTS, "Heatmaps for the landmark stage").
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskfr.detector import LNET_INPUT as INPUT
from maskfr.detector import MIRROR
from maskfr.training import load_checkpoint, run_cli
from maskfr.training.dlib_models import MIRROR68
from maskfr.training.mtcnn import CACHE, FACE_PAD, resume, save_checkpoint


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LNet(nn.Module):
    """Plain conv stack down to 4x4 pixels, then two linear layers (positions need the spatial map,
    so no global pooling). At the packaged 64x64: ~2.7 M parameters, ~36 M multiply-adds per face;
    a larger ``size`` gets extra stride-2 blocks until the map is 4x4 again (same head). ``heatmap``: the conv
    stack stops at 8x8 under a :class:`SoftArgmax` head instead."""

    def __init__(self, width: int = 32, points: int = 5, hidden: int = 512, size: int = INPUT,
                 heatmap: bool = False) -> None:
        super().__init__()
        w = width
        blocks = [_block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1), _block(2 * w, 4 * w, 2),
                  _block(4 * w, 4 * w, 1)]
        self.size, self.points = size, points
        if heatmap:
            self.features = nn.Sequential(*blocks)
            self.head = SoftArgmax(4 * w, points, 2 * w, 2 * math.ceil(size / 8))
            return
        blocks.append(_block(4 * w, 8 * w, 2))
        side = math.ceil(size / 16)
        while side > 4:
            blocks.append(_block(8 * w, 8 * w, 2))
            side = math.ceil(side / 2)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * w * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 2 * points))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out if isinstance(self.head, SoftArgmax) else out + 0.5  # fractions around the box centre


class SoftArgmax(nn.Module):
    """Integral regression (Sun et al., 2018): a heatmap per point at a quarter of the input side, and the
    point is its softmax-weighted mean position (x's then y's as fractions of the crop, like the linear head).
    Convolutions keep where things are, which a flattened linear layer must learn again."""

    def __init__(self, cin: int, points: int, mid: int, grid: int) -> None:
        super().__init__()
        self.maps = nn.Sequential(_block(cin, cin, 1), nn.Upsample(scale_factor=2.0, mode="nearest"),
                                  _block(cin, mid, 1), nn.Conv2d(mid, points, 1))
        self.register_buffer("centres", (torch.arange(grid, dtype=torch.float32) + 0.5) / grid, persistent=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = self.maps(f)
        prob = torch.softmax(h.flatten(2), 2).view(h.shape)
        return torch.cat([(prob.sum(2) * self.centres).sum(2), (prob.sum(3) * self.centres).sum(2)], 1)


def from_onnx(path: str | Path, width: int = 32) -> LNet:
    """A packaged ``mtcnn_lnet.onnx`` back in :class:`LNet`'s layout (its points and hidden width read from
    the weights), to train on from it; :func:`answer` gives what the file answers.

    The exporter folded each BatchNorm into its conv; here each BatchNorm becomes ``x + bias`` (running mean 0,
    variance 1 - eps, scale 1), so its running statistics must stay frozen (:func:`train` keeps them in eval
    mode) while its scale and bias train on.
    """
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(path))
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    convs = [n.input[1:] for n in model.graph.node if n.op_type == "Conv"]
    linears = [n.input[1:] for n in model.graph.node if n.op_type == "Gemm"]
    hidden, outputs = (inits[w].shape[0] for w, _ in linears)  # Gemm weights are (out, in)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    net = LNet(width, outputs // 2, hidden, size)
    for block, (w, b) in zip(net.features, convs, strict=True):
        conv, bn = block[0], block[1]
        conv.weight.data.copy_(inits[w])
        bn.weight.data.fill_(1.0)
        bn.bias.data.copy_(inits[b])
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    for lin, (w, b) in zip((net.head[1], net.head[3]), linears, strict=True):
        lin.weight.data.copy_(inits[w])
        lin.bias.data.copy_(inits[b])
    return net


def answer(net: LNet) -> nn.Module:
    """What the exported file computes: the net itself, or the five points of a 68-point net."""
    return FivePoints(net) if net.points == 68 else net


class FivePoints(nn.Module):
    """A 68-point LNet answering with the five points (N, 10), as the packaged 5-point one does."""

    def __init__(self, net: LNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        five = five_of(self.net(x).view(-1, 2, 68).transpose(1, 2))  # -1: the batch stays dynamic in ONNX
        return torch.cat([five[..., 0], five[..., 1]], 1)


def five_of(p68: torch.Tensor) -> torch.Tensor:
    """(N, 68, 2) -> (N, 5, 2) as ``dlib_models.five_from_68``: eye centres, nose tip, mouth corners."""
    return torch.stack([p68[:, 36:42].mean(1), p68[:, 42:48].mean(1), p68[:, 30], p68[:, 48], p68[:, 54]], 1)


def jitter(faces: torch.Tensor, lm: torch.Tensor, gen: torch.Generator, rotate: float = 15.0,
           scale: float = 0.1, shift: float = 0.08, size: int = INPUT) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``size`` x ``size`` views out of stored padded crops with random rotation, scale, shift and
    mirroring; return them (N, 3, INPUT, INPUT) float in [0, 255] with their (N, P, 2) points.

    ``faces``: (N, 3, S, S) float, the box target padded by ``FACE_PAD``; ``lm``: (N, P, 2) fractions
    of the stored crop, P = 5 (ArcFace order) or 68 (dlib's). Normalised coordinates (align_corners=False)
    map output to input by ``n_in = (s / FACE_PAD) R n_out + t``; the points take the inverse map.
    """
    n = len(faces)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    a = torch.deg2rad(u(-rotate, rotate))
    s = torch.exp(u(-scale, scale)) / FACE_PAD
    # shift is in box sides; the box spans 2 / FACE_PAD normalised units
    t = torch.stack([u(-shift, shift), u(-shift, shift)], 1) * 2 / FACE_PAD
    rot = torch.stack([torch.stack([a.cos(), -a.sin()], 1), torch.stack([a.sin(), a.cos()], 1)], 1)  # (N, 2, 2)
    theta = torch.cat([s[:, None, None] * rot, t[:, :, None]], 2)
    grid = nn.functional.affine_grid(theta, [n, faces.shape[1], size, size], align_corners=False)
    out = nn.functional.grid_sample(faces, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = torch.einsum("nji,nkj->nki", rot, (2 * lm - 1) - t[:, None]) / s[:, None, None]  # R^T (n_in - t) / s
    p = (p + 1) / 2
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    order = MIRROR if lm.shape[1] == 5 else MIRROR68
    mirrored = torch.stack([1 - p[:, order, 0], p[:, order, 1]], 2)
    return out, torch.where(flip[:, None, None], mirrored, p)


def colour(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and sometimes grey (night cameras): (N, 3, H, W) in [0, 255]."""
    n = len(x)
    gain = 1 + 0.25 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    bias = 25 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * gain + mean + bias
    grey = torch.rand(n, generator=gen) < 0.1
    x = torch.where(grey[:, None, None, None], x.mean(1, keepdim=True).expand_as(x), x)
    return x.clamp(0, 255)


def point_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance of the points, in box sides. pred (N, 2P) x's then y's, target (N, P, 2).

    With 68 points, the five computed from them (:func:`five_of`, what the detector answers) count as much
    again as all 68.
    """
    pts = pred.view(len(pred), 2, -1).transpose(1, 2)
    loss = (pts - target).norm(dim=2).mean()
    if target.shape[1] == 68:
        loss = loss + (five_of(pts) - five_of(target)).norm(dim=2).mean()
    return loss


def load(data_dir: str | Path, points: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Every face crop and its 5 or 68 points from the prepared chunks (``mtcnn prepare``)."""
    chunks = sorted(Path(data_dir).glob("[0-9]*.npz"))
    if not chunks:
        raise FileNotFoundError(f"no prepared chunks in {data_dir} (run: python -m maskfr.training.mtcnn prepare)")
    data = [np.load(c) for c in chunks]
    key = {5: "face_lm", 68: "face_lm68"}[points]
    if "face" not in data[0] or key not in data[0]:
        raise KeyError(f"{chunks[0]} has no face crops with {points} points: prepared by an older version, "
                       "run prepare again")
    return np.concatenate([d["face"] for d in data]), np.concatenate([d[key] for d in data])


def train(faces: np.ndarray, lm: np.ndarray, epochs: int = 30, lr: float = 2e-3, batch: int = 128,
          out_dir: str | Path = CACHE / "lnet", seed: int = 0, init: str | Path | None = None,
          width: int = 32, hidden: int = 512, size: int | None = None, heatmap: bool = False) -> LNet:
    """AdamW, learning rate warmed up then cosine-decayed; resumes from the per-epoch checkpoint in ``out_dir``.

    ``lm`` (N, P, 2) holds 5 or 68 points per face, and the net answers as many; its input side ``size``
    is by default the crops' over ``FACE_PAD`` (``mtcnn prepare --face-side``), at most that. ``init``: a finished run's
    ``lnet.pt``, or a packaged ``.onnx`` (:func:`from_onnx`; its BatchNorm statistics stay frozen), to start
    from (a second, usually lower-rate cosine cycle); a 68-point net takes all but the last layer of a
    file with the other number of points, and a net with another ``hidden`` width its conv layers only.
    """
    torch.manual_seed(seed)
    points, size = lm.shape[1], size or round(faces.shape[1] / FACE_PAD)
    net = LNet(width, points, hidden, size, heatmap)
    frozen: list[nn.Module] = []  # BatchNorms folded into a packaged file's convs: their statistics stay fixed
    if init is not None and str(init).endswith(".onnx"):
        start = from_onnx(init, width)
        if start.size != size:
            raise ValueError(f"{init} takes {start.size}x{start.size} crops, these data make {size}x{size} ones")
        if heatmap:
            net.features = start.features[:len(net.features)]  # the file's convs up to the heatmaps' input
        else:
            if start.head[1].out_features != hidden:
                start.head = net.head  # a fresh head for another hidden width
            elif start.head[3].out_features != 2 * points:
                start.head[3] = net.head[3]  # a fresh last layer for the other points
            start.points, net = points, start
        frozen = [m for m in net.features.modules() if isinstance(m, nn.BatchNorm2d)]
    elif init is not None:
        net.load_state_dict(load_checkpoint(init, {"net"})["net"])
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = math.ceil(len(faces) / batch)
    n_steps, warm = epochs * steps, max(1, epochs * steps // 20)  # a short warm-up: the first steps overshoot
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * k / n_steps)))
    ckpt = Path(out_dir) / "lnet.pt"
    lm_t = torch.from_numpy(lm)
    for epoch in range(resume(ckpt, net, opt, sched), epochs):
        net.train()
        for m in frozen:
            m.eval()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        perm = torch.randperm(len(faces), generator=gen).numpy()
        total = 0.0
        for b in range(0, len(perm), batch):
            idx = perm[b:b + batch]
            x = torch.from_numpy(faces[idx]).permute(0, 3, 1, 2).float()
            x, target = jitter(x, lm_t[idx], gen, size=size)
            x = ((colour(x, gen) - 127.5) / 128).contiguous(memory_format=torch.channels_last)
            loss = point_loss(net(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"lnet epoch {epoch + 1}/{epochs}: point error {total / len(perm):.4f} box sides "
              f"({len(perm)} faces)", flush=True)
        save_checkpoint(ckpt, net, opt, sched, epoch + 1)
    return net.eval()


def export_onnx(net: LNet, path: str | Path) -> Path:
    """Opset 17, dynamic batch, ``input`` (N, 3, size, size) -> ``landmarks`` (N, 10) (BatchNorm folded by
    the exporter; a 68-point net exports with :class:`FivePoints` around it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(answer(net).eval(), (torch.zeros(2, 3, net.size, net.size),), str(path), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["landmarks"],
                      dynamic_axes={"input": {0: "batch"}, "landmarks": {0: "batch"}})
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description="Train the landmark stage on prepared MTCNN data, export to ONNX")
    ap.add_argument("--data", default=str(CACHE / "data"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the cosine schedule")
    ap.add_argument("--init", help="start from this lnet.pt (weights only) or packaged mtcnn_lnet.onnx "
                    "instead of random weights")
    ap.add_argument("--width", type=int, default=32, help="channels of the first conv (the packaged net: 32)")
    ap.add_argument("--points", type=int, choices=[5, 68], default=5,
                    help="train on dlib's 5 or 68 points (the ONNX file answers 5 either way)")
    ap.add_argument("--hidden", type=int, default=512, help="units of the hidden linear layer (packaged: 512)")
    ap.add_argument("--heatmap", action="store_true", help="soft-argmax heatmaps instead of the linear head "
                    "(with --init FILE.onnx: the file's convs up to 8x8, a fresh head)")
    ap.add_argument("--size", type=int, help="input side (packaged: 64); default: the prepared crops' / 1.5")
    ap.add_argument("--ckpt-dir", default=str(CACHE / "lnet"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sdk" / "models" / "mtcnn_lnet.onnx"))
    a = ap.parse_args(argv)
    faces, lm = load(a.data, a.points)
    export_onnx(train(faces, lm, epochs=a.epochs, lr=a.lr, out_dir=a.ckpt_dir, init=a.init, width=a.width,
                      hidden=a.hidden, size=a.size, heatmap=a.heatmap), a.out)


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m maskfr.training.lnet"))
