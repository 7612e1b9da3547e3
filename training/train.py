"""``maskfr train CONFIG``: G2D's three modules, trained greedily, one resumable stage after another.

1. inpaint    generative encoder + decoder: masked crop -> unmasked face (dlib-initialised encoder)
2. reformer   encoder + reformer: relation (and instance) distillation from the teacher; the
              student sees masked faces, the teacher the same faces unmasked
3. classifier CosFace head over training identities, reformer fine-tuned with the KD terms kept

Each stage writes ``<run>/<stage>.pt`` when done and ``<run>/<stage>.partial.pt`` after every
epoch; re-running the same command resumes where it stopped and gives the same weights as an
uninterrupted run (data order and masks are seeded by (seed, stage, epoch, index)).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from maskfr.align import to_input
from maskfr.training import load_checkpoint
from maskfr.training.dlib_models import MIRROR68
from maskfr.training.losses import (hinge_critic_loss, hinge_generator_loss, inpaint_loss, instance_kd,
                                    perceptual_loss, relation_kd)
from maskfr.training.masks import MaskSynth
from maskfr.training.models import CosFaceHead, Decoder, G2DStudent, PatchCritic, create_student
from maskfr.training.teacher import load_dlib_resnet

STAGES = ("inpaint", "reformer", "classifier")


def load_config(path: str | Path) -> dict:
    """A config is a Python file defining ``config = dict(...)``; unknown keys and wrong types are refused."""
    # a file not ending in .py got no loader (AttributeError on None), one without `config` an AttributeError
    spec = importlib.util.spec_from_file_location("maskfr_config", path) if str(path).endswith(".py") else None
    if spec is None:
        raise ValueError(f"config {path}: expected a Python file (.py) defining config = dict(...)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"config {path}: no such file")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except SyntaxError as exc:  # was a traceback
        raise ValueError(f"config {exc.filename or path}, line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # an ImportError in it was blamed on the train extra by the CLI
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__))
                     if Path(f.filename) == Path(path)), "?")
        raise ValueError(f"config {path}, line {line}: {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(mod, "config", None), dict):
        raise ValueError(f"config {path}: defines no config = dict(...)")
    cfg = dict(mod.config)
    check_config(cfg)  # checked again after any --set
    return cfg


# Every key a config may hold, with its type (float takes ints too): train.py reads them with .get() or [], so a
# typo'd key was ignored in silence and a wrong type failed only mid-run. REQUIRED are read by every run; None
# is allowed only where the code reads it as "off" (NULLABLE).
CONFIG_TYPES = {"name": str, "seed": int, "train_lfw_folds": list, "use_celeba": bool, "batch_size": int,
                "p_mask": float, "p_template": float, "p_below_nose": float, "p_scarf": float, "p_sunglasses": float,
                "p_mirror": float,
                "generative_pretraining": bool, "center_teacher": bool, "stages": dict, "threads": int,
                "workers": int, "align_jitter": dict, "degrade": dict, "wise_alpha": float, "device": str,
                "log_every": int}
REQUIRED = ("name", "seed", "train_lfw_folds", "batch_size", "p_mask", "stages", "threads", "workers")
NULLABLE = {"align_jitter", "degrade", "max_steps"}
STAGE_KEYS = {  # (required, optional) keys of each stage; all numbers, the INT_KEYS integers
    "inpaint": ({"epochs", "lr_encoder", "lr_decoder", "hole_weight"},
                {"lr_new", "max_steps", "warmup_steps", "w_perceptual", "w_adversarial", "lr_critic"}),
    "reformer": ({"epochs", "lr_encoder", "lr_reformer", "w_relation", "w_instance"},
                 {"tau", "max_steps", "warmup_steps"}),
    "classifier": ({"epochs", "lr_head", "lr_reformer", "margin", "scale", "w_kd"},
                   {"tau", "max_steps", "warmup_steps"}),
}
INT_KEYS = {"epochs", "max_steps", "warmup_steps"}
SUB_KEYS = {"align_jitter": ({"p", "rot_deg", "scale", "shift_px"}, set()),
            "degrade": ({"p", "min_scale"}, {"p_blur", "max_blur_px", "p_jpeg", "jpeg_quality", "p_grey"})}
_TYPE_NAMES = {float: "a number", int: "an integer", bool: "True or False", str: "a string", list: "a list",
               dict: "a dict"}


def check_config(cfg: dict) -> None:
    """Refuse unknown keys (naming the nearest known one), missing keys and wrong types before any work starts."""
    import difflib

    def known(where: str, keys, allowed) -> None:
        for k in keys:
            if k not in allowed:
                near = difflib.get_close_matches(str(k), sorted(allowed), n=1)
                raise ValueError(f"config: unknown key {where}{k!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                                 + f"; known: {', '.join(sorted(allowed))}")

    def typed(where: str, key: str, v, t) -> None:
        if v is None and key in NULLABLE:
            return
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (number if t is float else number and isinstance(v, int) if t is int else isinstance(v, t)):
            raise ValueError(f"config: {where} must be {_TYPE_NAMES[t]}, got {v!r}")

    known("", cfg, CONFIG_TYPES)
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"config: missing key(s) {', '.join(missing)}")
    for k, v in cfg.items():
        typed(repr(k), k, v, CONFIG_TYPES[k])
        if (k.startswith("p_") or k == "wise_alpha") and not 0.0 <= v <= 1.0:  # wise_alpha: else refused after training
            raise ValueError(f"config: {k!r} must be in [0, 1], got {v!r}")
    folds = cfg["train_lfw_folds"]  # fold 0 read people.txt's last fold (test people) through folds[-1]
    if not folds or not all(isinstance(f, int) and not isinstance(f, bool) and 1 <= f <= 10 for f in folds):
        raise ValueError(f"config: 'train_lfw_folds' must list LFW folds 1-10, got {folds!r}")
    for name, (required, optional) in SUB_KEYS.items():
        if cfg.get(name):
            known(f"in {name!r}: ", cfg[name], required | optional)
            if required - set(cfg[name]):
                raise ValueError(f"config: {name!r} lacks {', '.join(sorted(required - set(cfg[name])))}")
    known("in 'stages': ", cfg["stages"], STAGE_KEYS)
    for st in STAGES:
        if st not in cfg["stages"] and (st != "inpaint" or cfg.get("generative_pretraining", True)):
            raise ValueError(f"config: 'stages' has no {st!r} stage")
    for st, s in cfg["stages"].items():
        required, optional = STAGE_KEYS[st]
        typed(f"stages[{st!r}]", "", s, dict)
        known(f"in stage {st!r}: ", s, required | optional)
        if required - set(s):
            raise ValueError(f"config: stage {st!r} lacks {', '.join(sorted(required - set(s)))}")
        for k, v in s.items():
            typed(f"{st}.{k}", k, v, int if k in INT_KEYS else float)


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


@dataclass
class TrainSet:
    """Aligned training faces: crops, their landmarks, teacher embeddings of the unmasked face, labels."""
    img112: np.ndarray  # (N,112,112,3) uint8 RGB
    lm68_112: np.ndarray  # (N,68,2)
    teacher: np.ndarray  # (N,128) float32, L2-normalised
    labels: np.ndarray  # (N,) int64
    n_classes: int
    center: np.ndarray | None = None  # set by centred(): the mean the teacher targets were centred on
    teacher_mirror: np.ndarray | None = None  # (N,128) the teacher on the mirrored faces (configs with p_mirror)


def centred(data: TrainSet) -> TrainSet:
    """Teacher targets moved off dlib's narrow cone: minus their mean, re-normalised (see ``Reformer``)."""
    center = data.teacher.mean(0)

    def move(t: np.ndarray | None) -> np.ndarray | None:
        if t is None:
            return None
        t = t - center
        return (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)

    return replace(data, teacher=move(data.teacher), teacher_mirror=move(data.teacher_mirror), center=center)


def mirror_face(img: np.ndarray, lm68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A crop and its 68 landmarks mirrored left-right (pixel centres at integers: x -> W - 1 - x).

    The ArcFace template is symmetric to within half a pixel, so the mirrored crop is an aligned face too.
    """
    lm = lm68[MIRROR68].copy()
    lm[:, 0] = img.shape[1] - 1 - lm[:, 0]
    return np.ascontiguousarray(img[:, ::-1]), lm


def interpolate_weights(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT (Wortsman et al., CVPR 2022): ``(1 - alpha) * start + alpha * tuned`` for every float tensor.

    Why: the fine-tuned student gives up about a point on unmasked faces against the dlib network it
    started from; part of the way back recovers half of it and keeps the masked gains (benchmarks/RESULTS.md).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise_alpha must be in [0, 1], got {alpha}")
    if start.keys() != tuned.keys():
        raise ValueError("the two state dicts hold different tensors: not the same architecture")
    return {k: torch.lerp(start[k].to(v.dtype), v, alpha) if v.is_floating_point() else v for k, v in tuned.items()}


def warm_up(opt: torch.optim.Optimizer, base_lrs: list[float], step: int, warmup_steps: int) -> None:
    """Linear warm-up to ``base_lrs`` over ``warmup_steps`` (0-based ``step``).

    Adam's first steps move every weight by about the rate, which wrecks dlib-initialised layers.
    """
    for g, lr in zip(opt.param_groups, base_lrs):
        g["lr"] = lr * min(1.0, (step + 1) / max(1, warmup_steps))


def jitter_alignment(img: np.ndarray, occ: np.ndarray, rng: np.random.Generator, rot_deg: float, scale: float,
                     shift_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Re-warp a crop by a small random similarity (Gaussian rotation, scale, shift; same map for ``occ``).

    A deployed detector places landmarks on masked faces far less precisely than dlib does on the
    unmasked image the training crops come from (MTCNN: 10-14 % of the eye distance at the eyes,
    ~25 % at the mouth), so the student must also see crops that are slightly off.
    """
    a = np.deg2rad(rng.normal(0, rot_deg))
    s = 1 + rng.normal(0, scale)
    m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), np.rad2deg(a), s)
    m[:, 2] += rng.normal(0, shift_px, 2)
    warp = lambda x: cv2.warpAffine(x, m, x.shape[1::-1], flags=cv2.INTER_LINEAR, borderValue=0)  # noqa: E731
    return warp(img), warp(occ.astype(np.uint8)).astype(bool)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 images (..., H, W, 3) as a monochrome sensor gives them: luma (OpenCV's BT.601 RGB2GRAY) in all
    three channels (night cameras in infrared mode, roughly)."""
    luma = cv2.cvtColor(np.ascontiguousarray(rgb).reshape(-1, rgb.shape[-2], 3), cv2.COLOR_RGB2GRAY)
    return np.repeat(luma.reshape(rgb.shape[:-1])[..., None], 3, -1)


def degrade(img: np.ndarray, scale: float, blur_px: float = 0.0, blur_deg: float = 0.0,
            jpeg_quality: int | None = None, grey: bool = False) -> np.ndarray:
    """RGB ``img`` as a camera further away would give it: motion blur, shrunk, JPEG-compressed, scaled back.

    In the order a camera applies them: the face moves during the exposure (a line kernel ``blur_px`` long at
    ``blur_deg``), the sensor sees it ``scale`` times as large (area average), the encoder compresses that
    small image, and the alignment scales it back up to the crop (bilinear). ``grey``: a monochrome sensor
    (:func:`to_grey`) took it.
    """
    h, w = img.shape[:2]
    if grey:
        img = to_grey(img)
    if blur_px > 1.0:
        img = cv2.filter2D(img, -1, motion_kernel(blur_px, blur_deg), borderType=cv2.BORDER_REFLECT)
    small = img if scale == 1.0 else cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    if jpeg_quality is not None:  # OpenCV's codec reads BGR: the luma and chroma planes must be a camera's
        bgr = np.ascontiguousarray(small[..., ::-1])
        buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])[1]
        small = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return small if small.shape[:2] == (h, w) else cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def motion_kernel(length: float, deg: float) -> np.ndarray:
    """Normalised line kernel ``length`` pixels long at angle ``deg`` (anti-aliased, sub-pixel ends)."""
    k = int(np.ceil(length)) // 2 * 2 + 3
    ker = np.zeros((k, k), np.float32)
    dx, dy = (length - 1) / 2 * np.cos(np.deg2rad(deg)), (length - 1) / 2 * np.sin(np.deg2rad(deg))
    c, sub = (k - 1) / 2, 1 << 4  # cv2.line takes fixed-point ends with 4 fractional bits
    ends = [(round((c + sx * dx) * sub), round((c + sx * dy) * sub)) for sx in (-1, 1)]
    cv2.line(ker, ends[0], ends[1], 1.0, 1, cv2.LINE_AA, 4)
    return ker / ker.sum()


def random_degrade(img: np.ndarray, rng: np.random.Generator, min_scale: float, p_blur: float = 0.0,
                   max_blur_px: float = 0.0, p_jpeg: float = 0.0, jpeg_quality: tuple[int, int] = (30, 90),
                   p_grey: float = 0.0) -> np.ndarray:
    """:func:`degrade` with a log-uniform ``scale`` in [min_scale, 1], and blur / JPEG / grey each with its own odds.

    Cameras at a distance give faces of 30-60 pixels, upscaled to 112 by the alignment, moving and
    compressed; training on shrunken inputs alone added 1-2 masked points at 28-40 pixels
    (benchmarks/RESULTS.md, "Low-resolution faces"). The scale is drawn first and grey last (only when
    ``p_grey`` > 0), so a config without the later options draws the same as before they existed.
    """
    scale = float(np.exp(rng.uniform(np.log(min_scale), 0.0)))
    blur = (rng.uniform(1.0, max_blur_px), rng.uniform(0.0, 180.0)) if rng.random() < p_blur else (0.0, 0.0)
    quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)) if rng.random() < p_jpeg else None
    grey = bool(p_grey > 0 and rng.random() < p_grey)
    return degrade(img, scale, *blur, quality, grey)


class MaskedFaces(torch.utils.data.Dataset):
    """Fresh masks every epoch, reproducible: the mask of item i in epoch e depends on (seed, stage, e, i) only.

    ``jitter`` (``dict(p=, rot_deg=, scale=, shift_px=)``, optional): share of masked inputs re-warped by
    :func:`jitter_alignment`; the clean target and the teacher embedding stay exactly aligned.
    ``degrade`` (``dict(p=, min_scale=, ...)``, optional): share of inputs, masked or not, passed through
    :func:`random_degrade` (the other keys are its arguments); the targets stay sharp.
    ``p_mirror``: share of faces mirrored (:func:`mirror_face`) before anything else, with the teacher's
    embedding of the mirrored face as their target (``data.teacher_mirror``).
    """

    def __init__(self, data: TrainSet, synth: MaskSynth, p_mask: float, seed: int, stage: int,
                 jitter: dict | None = None, degrade: dict | None = None, p_mirror: float = 0.0):
        self.d, self.synth, self.p_mask, self.seed, self.stage = data, synth, p_mask, seed, stage
        self.jitter, self.degrade, self.p_mirror = jitter, degrade, p_mirror
        if p_mirror > 0 and data.teacher_mirror is None:
            raise ValueError("p_mirror needs the teacher's embeddings of the mirrored faces (data.teacher_mirror)")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.d.labels)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.stage, self.epoch, i])
        clean, lm, teacher = self.d.img112[i], self.d.lm68_112[i], self.d.teacher
        if self.p_mirror > 0 and rng.random() < self.p_mirror:  # drawn only when asked: older configs draw as before
            (clean, lm), teacher = mirror_face(clean, lm), self.d.teacher_mirror
        if rng.random() < self.p_mask:
            masked, occ = self.synth(clean, lm, rng)
            if self.jitter and rng.random() < self.jitter["p"]:
                masked, occ = jitter_alignment(masked, occ, rng, self.jitter["rot_deg"], self.jitter["scale"],
                                               self.jitter["shift_px"])
        else:
            masked, occ = clean, np.zeros(clean.shape[:2], bool)
        if self.degrade and rng.random() < self.degrade["p"]:  # drawn last: the masks above stay as without it
            masked = random_degrade(masked, rng, **{k: v for k, v in self.degrade.items() if k != "p"})
        return (torch.from_numpy(to_input(masked)[0]), torch.from_numpy(to_input(clean)[0]),
                torch.from_numpy(occ[None].astype(np.float32)), torch.from_numpy(teacher[i]),
                int(self.d.labels[i]))


def teacher_embeddings(chips: np.ndarray, cache_file: Path) -> np.ndarray:
    """dlib teacher (our parity-tested port, under ONNX Runtime) on unmasked chips, L2-normalised, cached.

    A cached file of other faces was used as it was: training then died in a DataLoader worker (IndexError).
    """
    if cache_file.exists():
        try:
            emb = np.load(cache_file, allow_pickle=False)
        except (ValueError, OSError, EOFError):  # numpy's words: "file seems not fully written?", or pickle advice
            raise ValueError(f"the teacher cache {cache_file} is damaged (truncated, or not an array numpy "
                             "saved): delete it to have it recomputed") from None
        if emb.shape != (len(chips), 128):
            raise ValueError(f"the teacher cache {cache_file} holds an array of shape {emb.shape}, not "
                             f"{len(chips)} faces' 128-d embeddings: delete it to have it recomputed")
        return emb
    from maskfr.training.teacher import OnnxTeacher
    emb = OnnxTeacher()(chips)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.rename(cache_file)
    return emb


def build_trainset(cfg: dict, lfw_cache: dict | None, celeba_cache: dict | None, lfw_root: Path | None,
                   cache_dir: Path) -> TrainSet:
    """Training faces: LFW people of the configured folds (never the test folds) plus CelebA."""
    parts = []
    if lfw_cache is not None:
        from maskfr.training.data import LFW
        folds = LFW(lfw_root).people_folds()
        people = {p for f in cfg["train_lfw_folds"] for p in folds[f - 1]}
        parts.append((lfw_cache, np.isin(lfw_cache["identity"], sorted(people)), "lfw"))
    if celeba_cache is not None and cfg.get("use_celeba", True):
        parts.append((celeba_cache, celeba_cache["found"].astype(bool), "celeba"))
    imgs, lms, teach, mirrored, ids = [], [], [], [], []
    for cache, keep, tag in parts:
        rows = np.flatnonzero(keep)
        key = tag + "-" + hashlib.sha1("\n".join(cache["path"][rows].tolist()).encode()).hexdigest()[:12]
        teach.append(teacher_embeddings(cache["chip150"][rows], cache_dir / f"teacher-{key}.npy"))
        if cfg.get("p_mirror"):  # dlib's chip template is symmetric too: the mirrored chip is the mirrored face's
            mirrored.append(teacher_embeddings(cache["chip150"][rows][:, :, ::-1],
                                               cache_dir / f"teacher-{key}-mirror.npy"))
        imgs.append(cache["img112"][rows])
        lms.append(cache["lm68_112"][rows])
        ids.append(cache["identity"][rows])
    identity = np.concatenate(ids)
    names, labels = np.unique(identity, return_inverse=True)
    return TrainSet(np.concatenate(imgs), np.concatenate(lms).astype(np.float32),
                    np.concatenate(teach).astype(np.float32), labels.astype(np.int64), len(names),
                    teacher_mirror=np.concatenate(mirrored).astype(np.float32) if mirrored else None)


# what every <stage>.pt and <stage>.partial.pt holds (Trainer._state)
STAGE_CKPT_KEYS = {"model", "decoder", "head", "optimizer", "stage", "epoch", "config", "git_rev", "torch_rng"}
RUN_ONLY_KEYS = {"name", "threads", "workers", "log_every", "device", "wise_alpha"}  # do not change a stage's weights


def config_changes(old: dict, new: dict, stage: str) -> list[str]:
    """Keys of two configs that differ and bear on ``stage`` (every key but RUN_ONLY_KEYS and later stages)."""
    def flat(c: dict) -> dict:
        out = {k: v for k, v in c.items() if k not in RUN_ONLY_KEYS and k != "stages"}
        out.update({f"stages.{s}": (c.get("stages") or {}).get(s) for s in STAGES[:STAGES.index(stage) + 1]})
        return out
    a, b = flat(old), flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class Trainer:
    """Runs the stages of one config into ``run_dir``; every stage resumable."""

    def __init__(self, cfg: dict, data: TrainSet, synth: MaskSynth, run_dir: Path, pretrained: bool = True):
        self.cfg, self.data, self.synth, self.run = cfg, data, synth, Path(run_dir)
        self.run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg["seed"])
        self.student: G2DStudent = create_student(pretrained=pretrained)
        if cfg.get("center_teacher", True):  # student and targets share one centring
            self.data = data = centred(data)
            self.student.reformer.center.copy_(torch.from_numpy(data.center))
        self.start = ({k: v.clone() for k, v in self.student.state_dict().items()}  # WiSE-FT's end point
                      if cfg.get("wise_alpha", 1.0) != 1.0 else None)
        self.decoder = Decoder()
        # the frozen face network of the inpainting stage's perceptual term (losses.perceptual_loss)
        inpaint = cfg["stages"].get("inpaint", {})
        self.perceiver = load_dlib_resnet().eval().requires_grad_(False) if inpaint.get("w_perceptual") else None
        # its adversarial term's critic, trained alongside the inpainter (Trainer._critic_step)
        self.critic = PatchCritic() if inpaint.get("w_adversarial") else None
        self.head = CosFaceHead(data.n_classes, s=cfg["stages"]["classifier"]["scale"],
                                m=cfg["stages"]["classifier"]["margin"])
        self.device = torch.device(cfg.get("device", "cpu"))  # e.g. "cuda" in configs/g2d_gpu.py
        for m in (self.student, self.decoder, self.head, self.perceiver, self.critic):
            if m is not None:
                m.to(self.device)
        self.critic_opt = (torch.optim.Adam(self.critic.parameters(), lr=inpaint.get("lr_critic", 2e-4),
                                            betas=(0.5, 0.999)) if self.critic is not None else None)
        self.log = open(self.run / "log.jsonl", "a")

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self, stage: str, epoch: int, opt: torch.optim.Optimizer | None) -> dict:
        return {"model": self.student.state_dict(), "decoder": self.decoder.state_dict(),
                "head": self.head.state_dict(), "optimizer": opt.state_dict() if opt else None,
                "stage": stage, "epoch": epoch, "config": self.cfg, "git_rev": git_rev(),
                "torch_rng": torch.get_rng_state(),
                **({"critic": self.critic.state_dict(), "critic_optimizer": self.critic_opt.state_dict()}
                   if self.critic is not None else {})}

    def _save(self, state: dict, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _load(self, path: Path, opt: torch.optim.Optimizer | None = None) -> dict:
        st = load_checkpoint(path, STAGE_CKPT_KEYS)
        try:
            self.student.load_state_dict(st["model"])
            self.decoder.load_state_dict(st["decoder"])
            self.head.load_state_dict(st["head"])
            if opt is not None and st.get("optimizer"):
                opt.load_state_dict(st["optimizer"])
            if self.critic is not None and "critic" in st:
                self.critic.load_state_dict(st["critic"])
                self.critic_opt.load_state_dict(st["critic_optimizer"])
        except (RuntimeError, ValueError) as exc:  # e.g. a head for another number of identities: a traceback
            raise ValueError(f"checkpoint {path} does not fit this run (trained on other data or with another "
                             f"config: {' '.join(str(exc).split())[:300]}); give another --run") from None
        torch.set_rng_state(st["torch_rng"])
        return st

    # -- stages --------------------------------------------------------------------------------
    def _optimizer(self, stage: str) -> torch.optim.Optimizer:
        s = self.cfg["stages"][stage]
        enc, ref = self.student.encoder.parameters(), self.student.reformer.parameters()
        if stage == "inpaint":
            # dlib's layers get a small rate (Adam at 2e-4 rewrote them within 90 steps: the reformer
            # then started from features the teacher's later levels could not read); the new dilated
            # blocks and the decoder learn at full rate
            old, new = self.student.encoder.dlib_and_new_parameters()
            groups = [{"params": old, "lr": s["lr_encoder"]}, {"params": new, "lr": s.get("lr_new", s["lr_encoder"])},
                      {"params": self.decoder.parameters(), "lr": s["lr_decoder"]}]
        elif stage == "reformer":
            groups = [{"params": enc, "lr": s["lr_encoder"]}, {"params": ref, "lr": s["lr_reformer"]}]
        else:
            groups = [{"params": ref, "lr": s["lr_reformer"]}, {"params": self.head.parameters(), "lr": s["lr_head"]}]
        return torch.optim.Adam(groups)

    def _loss(self, stage: str, batch) -> tuple[torch.Tensor, dict]:
        s = self.cfg["stages"][stage]
        masked, clean, occ, teacher, labels = (t.to(self.device, non_blocking=True) for t in batch)
        if stage == "inpaint":
            out = self.decoder(self.student.encoder(masked))
            target = self.student.encoder.chip(clean)
            occ_chip = (self.student.encoder.chip(occ) > 0.5).float()
            loss = l1 = inpaint_loss(out, target, occ_chip, s["hole_weight"])
            parts = {"l1": l1.item()}
            if s.get("w_perceptual"):
                perceptual = perceptual_loss(self.perceiver, out, target)
                loss, parts["perceptual"] = loss + s["w_perceptual"] * perceptual, perceptual.item()
            if self.critic is not None:
                adversarial = hinge_generator_loss(self.critic(out))
                loss, parts["adversarial"] = loss + s["w_adversarial"] * adversarial, adversarial.item()
                self._critic_batch = out.detach(), target
            return loss, parts
        emb = self.student(masked)
        rel, inst = relation_kd(emb, teacher, s.get("tau", 0.1)), instance_kd(emb, teacher)
        if stage == "reformer":
            loss = s["w_relation"] * rel + s["w_instance"] * inst
            return loss, {"relation": rel.item(), "instance": inst.item()}
        ce = F.cross_entropy(self.head(emb, labels), labels)
        loss = ce + s["w_kd"] * (rel + inst)
        return loss, {"ce": ce.item(), "relation": rel.item(), "instance": inst.item()}

    def _critic_step(self) -> float:
        """One critic update on the batch the inpainter just stepped on: its clean chips against the inpainted
        ones (the inpainter's backward left gradients in the critic; they are cleared here, never applied)."""
        fake, real = self._critic_batch
        loss = hinge_critic_loss(self.critic(real), self.critic(fake))
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        return loss.item()

    def _check_reuse(self, st: dict, path: Path, stage: str) -> None:
        """Say so when a stage on disk was trained with other settings: a rerun with a changed config (or --set)
        and the same run folder returned the old stages, and so the old model, without a word. Only a note:
        copying a stage across runs on purpose is documented (configs/g2d_cpu_scarf.py)."""
        changed = config_changes(st.get("config") or {}, self.cfg, stage)
        if changed:
            print(f"note: reusing {path}, trained with other settings ({', '.join(changed)}); give another --run "
                  "or name to train this config afresh", file=sys.stderr, flush=True)

    def run_stage(self, stage: str, prev: Path | None) -> Path:
        done = self.run / f"{stage}.pt"
        if done.exists():
            self._check_reuse(self._load(done), done, stage)
            return done
        s = self.cfg["stages"][stage]
        opt = self._optimizer(stage)
        base_lrs = [g["lr"] for g in opt.param_groups]  # before a resume loads the warmed-up ones
        partial = self.run / f"{stage}.partial.pt"
        start = 0
        if partial.exists():
            st = self._load(partial, opt)
            self._check_reuse(st, partial, stage)
            start = st["epoch"] + 1
        elif prev is not None:
            self._load(prev)
        # jitter, camera degradations and mirroring only where the student learns identity (the inpainter's target
        # is the aligned face)
        identity = stage != "inpaint"
        ds = MaskedFaces(self.data, self.synth, self.cfg["p_mask"], self.cfg["seed"], STAGES.index(stage),
                         self.cfg.get("align_jitter") if identity else None,
                         self.cfg.get("degrade") if identity else None,
                         self.cfg.get("p_mirror", 0.0) if identity else 0.0)
        batches = len(ds) // self.cfg["batch_size"]
        if (s.get("max_steps") or 0) > batches:  # it caps each epoch: more would silently run fewer steps
            raise ValueError(f"stage {stage}: max_steps={s['max_steps']} is more than one epoch of this data "
                             f"({batches} batches of {self.cfg['batch_size']}); set epochs for longer stages")
        train_mods = {"inpaint": (self.student.encoder, self.decoder),
                      "reformer": (self.student,), "classifier": (self.student.reformer, self.head)}[stage]
        for epoch in range(start, s["epochs"]):
            ds.epoch = epoch
            order = torch.Generator().manual_seed(self.cfg["seed"] * 1000 + STAGES.index(stage) * 100 + epoch)
            loader = torch.utils.data.DataLoader(
                ds, batch_size=self.cfg["batch_size"], sampler=torch.utils.data.RandomSampler(ds, generator=order),
                num_workers=self.cfg["workers"], drop_last=True, persistent_workers=False)
            per_epoch = min(len(loader), s.get("max_steps") or len(loader))
            self.student.eval()  # dlib's "affine" layers are frozen statistics: no train/eval difference
            for m in train_mods:
                m.train()
            t0, n = time.time(), 0
            for step, batch in enumerate(loader):
                if s.get("max_steps") and step >= s["max_steps"]:
                    break
                # a function of (epoch, step) only, so a resumed run follows the same schedule
                warm_up(opt, base_lrs, epoch * per_epoch + step, s.get("warmup_steps", 0))
                loss, parts = self._loss(stage, batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if stage == "inpaint" and self.critic is not None:
                    parts["critic"] = self._critic_step()
                n += len(batch[0])
                if step % self.cfg.get("log_every", 10) == 0:
                    rec = {"stage": stage, "epoch": epoch, "step": step, "loss": loss.item(), **parts,
                           "img_per_s": n / (time.time() - t0)}
                    self.log.write(json.dumps(rec) + "\n")
                    self.log.flush()
                    print(json.dumps(rec), flush=True)
            self._save(self._state(stage, epoch, opt), partial)
        self._save(self._state(stage, s["epochs"] - 1, None), done)
        partial.unlink(missing_ok=True)
        return done

    def fit(self) -> Path:
        prev = None
        for stage in STAGES:
            if stage == "inpaint" and not self.cfg.get("generative_pretraining", True):
                continue
            prev = self.run_stage(stage, prev)
        final = self.run / "final.pt"
        st = load_checkpoint(prev, STAGE_CKPT_KEYS)
        model = st["model"]
        if self.cfg.get("wise_alpha", 1.0) != 1.0:  # back part of the way to the starting weights (WiSE-FT)
            model = interpolate_weights(self.start, model, self.cfg["wise_alpha"])
            self.student.load_state_dict(model)
        self._save({"model": model, "decoder": st["decoder"], "config": self.cfg, "git_rev": st["git_rev"],
                    "stage": "final"}, final)
        return final


def load_inpainter(path: Path) -> tuple[G2DStudent, Decoder]:
    """Encoder and decoder as the inpainting stage left them (``<run>/inpaint.pt``).

    The reformer stage goes on to fine-tune the encoder for identity, and the decoder was never trained
    to read that encoder: the inpainter is the pair the inpainting stage saved.
    """
    st = load_checkpoint(path, {"model", "decoder"})
    student, decoder = create_student(pretrained=False), Decoder()
    student.load_state_dict(st["model"])
    decoder.load_state_dict(st["decoder"])
    return student.eval(), decoder.eval()


def save_inpaint_grid(student: G2DStudent, decoder: Decoder, masked: np.ndarray, clean: np.ndarray,
                      path: Path) -> None:
    """PNG rows of masked | inpainted | original (all in dlib's chip frame) so a person can judge it."""
    with torch.inference_mode():
        student.eval()
        decoder.eval()
        out = decoder(student.encoder(torch.from_numpy(to_input(masked))))
        src = student.encoder.chip(torch.from_numpy(to_input(masked)))
        ref = student.encoder.chip(torch.from_numpy(to_input(clean)))
    to_img = lambda t: np.clip(t.permute(0, 2, 3, 1).numpy() * 127.5 + 127.5, 0, 255).astype(np.uint8)  # noqa: E731
    rows = [np.hstack([a, b, c]) for a, b, c in zip(to_img(src), to_img(out), to_img(ref))]
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))


def mask_synth(cfg: dict, masks_root: str | Path | None) -> MaskSynth:
    """The masks a config trains with (configs older than a key get its default)."""
    return MaskSynth(masks_root, **{k: cfg[k] for k in MaskSynth.SHARES if k in cfg})


def train_from_args(a) -> int:
    """Entry point of ``maskfr train`` (argument parsing lives in the CLI)."""
    import ast

    from maskfr.training import cache as fc
    from maskfr.training.data import LFW, celeba
    from maskfr.training.embedders import inpaint_teacher_embedder, torch_embedder
    from maskfr.training.evaluate import TABLE_HEADER, evaluate, lfw_pairs, markdown_rows
    cfg = load_config(a.config)
    for kv in a.set or []:
        k, eq, v = kv.partition("=")
        try:  # without "=", or with a bare word as value, literal_eval raised a SyntaxError or a cryptic ValueError
            if not eq or not k.strip():
                raise ValueError
            cfg[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValueError(f"--set {kv!r}: expected KEY=VALUE with a Python literal as the value, e.g. --set "
                             "p_template=0.0, --set \"name='my_run'\" (strings quoted) or --set \"stages={...}\""
                             ) from None
    check_config(cfg)
    test_folds = [f for f in range(1, 11) if f not in cfg["train_lfw_folds"]]
    if a.eval and len(test_folds) < 2:  # found out after training, and with one fold every accuracy read 50 %
        raise ValueError(f"--eval picks each test fold's threshold on the other test folds: train_lfw_folds="
                         f"{cfg['train_lfw_folds']} leaves {len(test_folds)} of LFW's 10 folds to test on, 2 needed")
    p_template = cfg.get("p_template", 0.5)
    if p_template > 0 and not a.masks:
        raise ValueError(f"p_template={p_template} asks for MaskTheFace template masks: give their folder with "
                         "--masks, or --set p_template=0.0 for procedural masks only")
    torch.set_num_threads(cfg["threads"])
    run = Path(a.run or fc.CACHE_ROOT / "runs" / cfg["name"])
    lfw_root = Path(a.lfw)
    # people.txt and pairs.txt were first read after the cache build and the training (an IndexError for too few folds)
    n_folds = len(LFW(lfw_root).people_folds())
    if max(cfg["train_lfw_folds"], default=0) > n_folds:
        raise ValueError(f"train_lfw_folds={cfg['train_lfw_folds']}: {lfw_root / 'people.txt'} has {n_folds} folds")
    pairs = lfw_pairs(lfw_root, test_folds) if a.eval else []
    lfw_cache = fc.load(fc.build(LFW(lfw_root).samples(), fc.lfw_cache_path(), a.masks))
    cel = fc.load(fc.build(celeba(a.celeba), fc.CACHE_ROOT / "celeba.npz", a.masks)) if a.celeba else None
    data = build_trainset(cfg, lfw_cache, cel, lfw_root, fc.CACHE_ROOT)
    print(f"training faces: {len(data.labels)}, identities: {data.n_classes}")
    trainer = Trainer(cfg, data, mask_synth(cfg, a.masks), run)
    final = trainer.fit()
    print(f"checkpoint: {final}")
    trainer.student.cpu()  # evaluation below runs on the CPU
    trainer.decoder.cpu()
    if not a.eval:
        return 0
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    rows = np.flatnonzero(np.isin(lfw_cache["path"], need))
    sub = {k: v[rows] for k, v in lfw_cache.items()}
    lines = list(TABLE_HEADER)
    rep = evaluate(torch_embedder(trainer.student)(sub), sub, pairs, run, cfg["name"])
    lines += markdown_rows(rep)
    if cfg.get("generative_pretraining", True):
        inpainter, decoder = load_inpainter(run / "inpaint.pt")
        save_inpaint_grid(inpainter, decoder, sub["img112_masked"][:8], sub["img112"][:8], run / "inpaint_examples.png")
        rep = evaluate(inpaint_teacher_embedder(inpainter, decoder)(sub), sub, pairs, run, "inpaint-then-teacher")
        lines += markdown_rows(rep)
    print("\n".join(lines))
    (run / "table.md").write_text("\n".join(lines) + "\n")
    return 0
