"""Quantization-aware fine-tuning: float weights that lose less when ONNX Runtime quantizes them to INT8.

Post-training INT8 of the packaged student lost 0.57 masked-unmasked points, and no calibration choice (minmax,
entropy, percentile, more faces, first or last layer in float) recovered them: the error is spread through the
network (benchmarks/RESULTS.md, "The camera-degradation model"). Here every Conv and Linear sees its weights
and its input rounded as :func:`maskfr.export.quantize.to_int8` will round them (per-output-channel symmetric
weights, per-tensor activations; the ``cpu`` or ``tensorrt`` flavour), with straight-through gradients, and
the network learns to give the FP32 model's embeddings anyway (cosine self-distillation on masked and
unmasked training faces, with the config's jitter and camera degradations). The result is a float model:
export it and quantize it as usual (calibration sets the final scales).

    python -m maskfr.training.qat sdk/models/g2d_student.onnx configs/g2d_cpu_camera.py -o qat.onnx \\
        --lfw ../shared/data/lfw --celeba ../shared/data/celeba-subset --masks ../shared/data/masks
"""
from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from maskfr.training import load_checkpoint, run_cli

#: (weight levels each side of 0, activation range): ``cpu`` is U8S8 with 7-bit weights (reduce_range),
#: ``tensorrt`` S8S8, as :func:`maskfr.export.quantize.to_int8` writes them.
FLAVOURS = {"cpu": (64, (0, 255)), "tensorrt": (127, (-127, 127))}


class WeightQuant(nn.Module):
    """Parametrization: the weight rounded per output channel, symmetric, ``levels`` steps each side of 0."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / self.levels
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.levels, self.levels)


class ActQuant(nn.Module):
    """A tensor rounded to 8 bits over a running range (the calibrator's, roughly: an average of batch extremes).

    Asymmetric (``qrange`` (0, 255): uint8 with a zero point) or symmetric ((-127, 127)).
    """

    def __init__(self, qrange: tuple[int, int], momentum: float = 0.05):
        super().__init__()
        self.qmin, self.qmax, self.momentum = qrange[0], qrange[1], momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            lo, hi = x.detach().min().clamp_max(0), x.detach().max().clamp_min(0)
            if self.qmin < 0:  # symmetric
                hi = torch.maximum(-lo, hi)
                lo = -hi
            m = self.momentum if bool(self.seen) else 1.0
            self.lo.lerp_(lo, m)
            self.hi.lerp_(hi, m)
            self.seen.fill_(True)
        scale = ((self.hi - self.lo) / (self.qmax - self.qmin)).clamp_min(1e-8)
        zero = (self.qmin - torch.round(self.lo / scale)).clamp(self.qmin, self.qmax).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, self.qmin, self.qmax)


def attach(model: nn.Module, flavour: str = "cpu") -> list:
    """Fake-quantize the weights and inputs of every Conv2d and Linear of ``model``; returns the hook handles."""
    levels, qrange = FLAVOURS[flavour]
    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", WeightQuant(levels))
            m.act_quant = ActQuant(qrange)
            handles.append(m.register_forward_pre_hook(lambda mod, args: (mod.act_quant(args[0]),)))
    return handles


def detach(model: nn.Module, handles: list) -> nn.Module:
    """Remove what :func:`attach` added, keeping the trained float weights."""
    for h in handles:
        h.remove()
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            del m.act_quant
    return model


def finetune(model: nn.Module, loader, steps: int, lr: float = 1e-5, flavour: str = "cpu",
             ckpt: Path | None = None, log=print) -> nn.Module:
    """Fine-tune ``model`` (a student) under fake quantization to match its own FP32 embeddings.

    ``loader`` yields batches whose first item is the normalised input (N, 3, 112, 112), e.g.
    :class:`maskfr.training.train.MaskedFaces`. Adam, cosine-decayed rate. ``ckpt``: resumed from and written
    every 50 steps (write then rename). Returns the float model with the quantizers removed.
    """
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    handles = attach(model, flavour)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    step = 0
    if ckpt is not None and ckpt.exists():
        st = load_checkpoint(ckpt, {"model", "opt", "sched", "step"})
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step = st["step"]
    model.eval()  # dlib's Affine layers are fixed statistics; only the quantizers' ranges must track
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.train()
    batches = iter(())
    while step < steps:
        try:
            x = next(batches)[0]
        except StopIteration:
            batches = iter(loader)
            x = next(batches)[0]
        with torch.no_grad():
            want = reference(x)
        loss = (1 - F.cosine_similarity(model(x), want)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 10 == 0:
            log(json.dumps({"step": step, "one_minus_cos": round(loss.item(), 6)}))
        if ckpt is not None and (step % 50 == 0 or step == steps):
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step}, tmp)
            tmp.replace(ckpt)
    return detach(model.eval(), handles)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from maskfr.export.onnx_export import export_onnx, load_student
    from maskfr.training import cache as fc
    from maskfr.training.data import LFW, celeba
    from maskfr.training.train import STAGES, MaskedFaces, build_trainset, load_config, mask_synth

    ap = argparse.ArgumentParser(description="Quantization-aware fine-tuning of a trained student (see module doc)")
    ap.add_argument("model", help="the student: exported .onnx (its metadata carries over) or checkpoint")
    ap.add_argument("config", help="the training config: data, masks, jitter and degradations")
    ap.add_argument("-o", "--output", required=True, help="the fine-tuned float model (.onnx)")
    ap.add_argument("--flavour", choices=sorted(FLAVOURS), default="cpu", help="the INT8 flavour to prepare for")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--celeba", default="../shared/data/celeba-subset")
    ap.add_argument("--masks", default="../shared/data/masks")
    ap.add_argument("--ckpt", help="resumable state (default: next to --output, .qat.pt)")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    model, info = load_student(a.model)  # before the face caches, which take minutes to read (or hours to build)
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    lfw_root = Path(a.lfw)
    lfw_cache = fc.load(fc.build(LFW(lfw_root).samples(), fc.lfw_cache_path(), a.masks))
    cel = fc.load(fc.build(celeba(a.celeba), fc.CACHE_ROOT / "celeba.npz", a.masks)) if a.celeba else None
    data = build_trainset(cfg, lfw_cache, cel, lfw_root, fc.CACHE_ROOT)  # never the test folds' people
    ds = MaskedFaces(data, mask_synth(cfg, a.masks), cfg["p_mask"], cfg["seed"],
                     stage=len(STAGES),  # masks of their own, not any training stage's
                     jitter=cfg.get("align_jitter"), degrade=cfg.get("degrade"))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=cfg["workers"], generator=torch.Generator().manual_seed(0))
    out = Path(a.output)
    model = finetune(model, loader, a.steps, a.lr, a.flavour, Path(a.ckpt) if a.ckpt else out.with_suffix(".qat.pt"))
    meta = {**info.get("metadata", {}),  # thresholds, version: the source's (its embeddings are kept)
            "quantization_aware": f"{a.flavour}, {a.steps} steps at lr {a.lr} from {Path(a.model).name}"}
    report = export_onnx(model, out, metadata=meta, verbose=False)
    print(f"wrote {out} (parity vs torch: min cosine {report['parity']['min_cosine']:.6f})")


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m maskfr.training.qat"))
