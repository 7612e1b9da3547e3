"""G2D student: generative encoder -> discriminative reformer (-> feature classifier while training).

The student reads the canonical 112x112 ArcFace crop, RGB, ``(x - 127.5) / 127.5``.
Its layers start from dlib's face-recognition ResNet (our only pretrained
recogniser, read from dlib's file by :mod:`maskfr.training.teacher`), so a fixed
resampler first maps the crop into the frame of dlib's 150x150 chip (measured on
LFW: chip pixel ``(x, y)`` sits at crop point ``0.6663 * (x, y) + (6.78, 22.22)``).

* generative encoder: dlib's stem and 32-filter level plus dilated residual blocks;
  trained first as the encoder of an inpainting network (with :class:`Decoder`);
* discriminative reformer: dlib's 64/128/256 levels, pooling and a 128-d linear
  layer, trained by relation distillation from the teacher; output L2-normalised;
* feature classifier: :class:`CosFaceHead` over training identities, fine-tuned last.

Everything exports to ONNX with ops TensorRT has (Conv, Relu, MaxPool, AveragePool,
Resize, Pad, Slice, ReduceMean, Gemm, normalisation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskfr.training.teacher import Affine, Block, DlibResNet

EMBED_DIM = 128
DLIB_MEAN = (122.782, 117.001, 104.298)


class ChipResample(nn.Module):
    """112 ArcFace crop -> 150 dlib-chip frame: 1.5x bilinear upscale, then a fixed crop/pad."""

    def __init__(self, size_in: int = 112, scale: float = 1.5, offset: tuple[int, int] = (10, 33), size: int = 150):
        super().__init__()
        self.up = round(size_in * scale)
        self.ox, self.oy, self.size = offset[0], offset[1], size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.up, self.up), mode="bilinear", align_corners=False)
        # crop, then zero-pad what lies past the upscaled image: padding the smaller tensor costs less
        x = x[:, :, self.oy:self.oy + self.size, self.ox:self.ox + self.size]
        return F.pad(x, (0, max(0, self.ox + self.size - self.up), 0, max(0, self.oy + self.size - self.up)))


class DilatedBlock(nn.Module):
    """Residual block with dilated 3x3 convs (ICT-style); starts as the identity (zero last scale)."""

    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.aff1 = Affine(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.aff2 = Affine(ch)
        nn.init.zeros_(self.aff2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x))))))


class GenerativeEncoder(nn.Module):
    """Normalised crop -> 32x35x35 occlusion-aware descriptors."""

    def __init__(self, dilations: tuple[int, ...] = (2, 4)):
        super().__init__()
        self.resample = ChipResample()
        self.conv = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.aff = Affine(32)
        self.level = nn.Sequential(*[Block(32, 32, False) for _ in range(3)])
        self.dilated = nn.Sequential(*[DilatedBlock(32, d) for d in dilations])
        # ArcFace input (x - 127.5) / 127.5 -> dlib's (rgb - mean) / 256, folded into one affine
        self.register_buffer("in_scale", torch.tensor(127.5 / 256.0))
        self.register_buffer("in_shift", torch.tensor([(127.5 - m) / 256.0 for m in DLIB_MEAN]).view(1, 3, 1, 1))

    def dlib_and_new_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(dlib-initialised layers, the new dilated blocks): trainers give the first a much smaller rate."""
        new = list(self.dilated.parameters())
        return [p for n, p in self.named_parameters() if not n.startswith("dilated.")], new

    def chip(self, x: torch.Tensor) -> torch.Tensor:
        """The crop in dlib's chip frame, still in [-1, 1] (inpainting targets use this)."""
        return self.resample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.chip(x) * self.in_scale + self.in_shift
        x = F.max_pool2d(F.relu(self.aff(self.conv(x))), 3, 2)
        return self.dilated(self.level(x))


class Decoder(nn.Module):
    """Inpainting decoder: descriptors -> 150x150 RGB in [-1, 1] (training only)."""

    def __init__(self, ch: int = 64):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv2d(32, ch, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(DilatedBlock(ch, 2), DilatedBlock(ch, 4), DilatedBlock(ch, 8), DilatedBlock(ch, 1))
        for b in self.mid:  # decoder blocks learn from the start
            nn.init.ones_(b.aff2.weight)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.BatchNorm2d(ch // 2), nn.ReLU(),  # 35 -> 70
            nn.ConvTranspose2d(ch // 2, ch // 4, 4, 2, 1), nn.BatchNorm2d(ch // 4), nn.ReLU(),  # 70 -> 140
        )
        self.out = nn.Conv2d(ch // 4, 3, 3, padding=1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        y = self.up(self.mid(self.inp(f)))
        y = F.interpolate(y, size=(150, 150), mode="bilinear", align_corners=False)
        return torch.tanh(self.out(y))



class PatchCritic(nn.Module):
    """Inpainting critic (training only): 150x150 RGB in [-1, 1] -> a 19x19 map of real/inpainted scores.

    Each score sees a ~30-pixel patch (a PatchGAN, as ICT's and EdgeConnect's inpainters use), so it judges texture
    and local shape, which L1 leaves as a blur; spectral norm keeps a critic trained alongside for few steps stable.
    """

    def __init__(self, ch: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(sn(nn.Conv2d(3, ch, 4, 2, 1)), nn.LeakyReLU(0.2),
                                 sn(nn.Conv2d(ch, 2 * ch, 4, 2, 1)), nn.LeakyReLU(0.2),
                                 sn(nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1)), nn.LeakyReLU(0.2),
                                 sn(nn.Conv2d(4 * ch, 1, 3, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

class Reformer(nn.Module):
    """Descriptors -> L2-normalised identity embedding (dlib's later levels + linear).

    dlib's descriptors fill a narrow cone (two strangers still have cosine ~0.6), which
    leaves a margin classifier and a softmax over similarities little room. ``center``
    (the mean unit teacher embedding of the training faces, set by the trainer) moves the
    cone's axis to the origin: the output is ``normalize(normalize(fc) - center)``, the
    same centring the teacher targets get, so a dlib-initialised student starts equal to
    its centred teacher. With ``center = 0`` it is plain ``normalize(fc)``.
    """

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        blocks = []
        cin = 32
        for width, n in ((64, 3), (128, 2), (256, 2), (256, 0)):
            blocks.append(Block(cin, width, True))
            blocks += [Block(width, width, False) for _ in range(n)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, dim, bias=False)
        self.register_buffer("center", torch.zeros(dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.fc(self.blocks(f).mean(dim=(2, 3))), dim=1)
        return F.normalize(e - self.center, dim=1)


class G2DStudent(nn.Module):
    """The deployed network: encoder + reformer; input (N,3,112,112) normalised RGB, output (N,128) unit vectors."""

    def __init__(self):
        super().__init__()
        self.encoder = GenerativeEncoder()
        self.reformer = Reformer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reformer(self.encoder(x))

    def init_from_dlib(self, net: DlibResNet) -> "G2DStudent":
        """Copy dlib's weights: stem + first level into the encoder, the rest into the reformer."""
        e, r = self.encoder, self.reformer
        e.conv.load_state_dict(net.conv.state_dict())
        e.aff.load_state_dict(net.aff.state_dict())
        for dst, src in zip(list(e.level) + list(r.blocks), net.blocks):
            dst.load_state_dict(src.state_dict())
        r.fc.load_state_dict(net.fc.state_dict())
        return self


class CosFaceHead(nn.Module):
    """Feature classifier: cosine logits with an additive margin (CosFace), scale s."""

    def __init__(self, n_classes: int, dim: int = EMBED_DIM, s: float = 30.0, m: float = 0.2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = emb @ F.normalize(self.weight, dim=1).T
        if labels is not None:
            cos = cos - self.m * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.s * cos


def create_student(pretrained: bool = True) -> G2DStudent:
    """A G2D student, initialised from dlib's ResNet when ``pretrained`` (needs face-recognition-models)."""
    model = G2DStudent()
    if pretrained:
        from maskfr.training.teacher import load_dlib_resnet
        model.init_from_dlib(load_dlib_resnet())
    return model
