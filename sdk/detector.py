"""Face detection with 5 landmarks that keeps working when the lower face is masked.

An MTCNN cascade (Zhang et al. 2016) run on ONNX Runtime, with the image pyramid,
box regression and NMS in numpy here (no torch): P-Net proposes 12x12 windows over a
pyramid, R-Net (24x24) and O-Net (48x48) re-score and refine them, and a fourth stage,
LNet (64x64, ``maskfr.training.lnet``), places the 5 points (O-Net's points are used when a
models folder has no ``mtcnn_lnet.onnx``). The packaged P/R/O-Nets are facenet-pytorch's,
fine-tuned on synthetically masked faces (``maskfr.training.mtcnn``): on masked LFW faces of
people never trained on they find 99.0% (as shipped: 89%; dlib's HOG detector: 27%), with
5-point errors of 5.9% of the eye distance (O-Net's points: 8.2%; as shipped: 18%)
(benchmarks/detection.py).

Coordinates are continuous frame pixels (pixel centres at integer coordinates, as in
:mod:`maskfr.align`); boxes are ``(left, top, right, bottom)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
PYRAMID_FACTOR = 0.709  # MTCNN's scale step: each level halves the area
LNET_INPUT = 64  # the packaged landmark stage's crop side (maskfr.training.lnet; read from each file)
MIRROR = [1, 0, 2, 4, 3]  # the 5 points' order in a mirrored face: eyes and mouth corners swap


@dataclass
class Detection:
    box: np.ndarray  # (4,) float32: left, top, right, bottom in frame pixels
    score: float
    landmarks: np.ndarray = field(repr=False)  # (5, 2) float32, maskfr.align.ARCFACE_112 order


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with each of (N, 4) boxes."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    inter = _intersection(np.asarray(box, np.float64), boxes)
    return inter / np.maximum(_area(box) + _area(boxes) - inter, 1e-12)


def _area(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64)
    return np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)


def _intersection(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    return np.maximum(w, 0) * np.maximum(h, 0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``mode="min"`` divides the overlap by the smaller box's area instead of the union, so a
    box nested inside a better one is dropped too (MTCNN's last stage).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', not {mode!r}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    areas = _area(boxes)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        inter = _intersection(boxes[i], boxes[rest])
        denom = areas[i] + areas[rest] - inter if mode == "union" else np.minimum(areas[i], areas[rest])
        order = rest[inter / np.maximum(denom, 1e-12) <= threshold]
    return np.array(keep, np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the nets' box regression (offsets as fractions of the box width/height)."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes + reg * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre, on whole pixels: the next net sees exactly this
    crop, so its box and landmark outputs are relative to it."""
    c = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
    return np.round(np.hstack([c - half, c + half]))


def crop_resize(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops of these boxes (zero outside the frame) resized to size x size: (N, size, size, 3) uint8.

    Boxes are rounded to whole pixels and shrunk with INTER_AREA, as the nets were trained.
    """
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(np.int64)):
        if x2 <= x1 or y2 <= y1:
            continue
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        interp = cv2.INTER_AREA if patch.shape[0] >= size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


def to_net_input(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB uint8 -> MTCNN's (x - 127.5) / 128 NCHW float32."""
    x = (np.asarray(rgb, np.float32) - 127.5) * 0.0078125
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Check a frame and bring it to 3-channel BGR uint8 (grayscale and BGRA are converted)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame))}")
    if frame.ndim in (2, 3) and (frame.shape[0] == 0 or frame.shape[1] == 0):  # cv2.cvtColor would assert
        raise ValueError(f"frame is empty: shape {frame.shape}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ValueError(f"frame must be HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), got shape {frame.shape}")


class FaceDetector:
    """MTCNN cascade on ONNX Runtime: ``detect(frame_bgr) -> list[Detection]``, best score first.

    ``min_face``: smallest face side searched for, in pixels (smaller = slower);
    ``score_threshold``: O-Net's final face probability (0.95: the nets trained on grey crops too gave
    textures 0.7-0.94, benchmarks/RESULTS.md, "Night cameras"); ``pnet_threshold`` /
    ``rnet_threshold``: the earlier stages' cut-offs (low, so masked faces survive to O-Net; P-Net's
    0.3 instead of MTCNN's usual 0.6 gives R-Net more boxes around each face, which recovered faces
    whose only 0.6-proposals R-Net rejected: benchmarks/RESULTS.md, "P-Net threshold");
    ``backend``: ``"auto"`` (CUDA when onnxruntime has it), ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, min_face: int = 20, score_threshold: float = 0.95, nms_threshold: float = 0.7,
                 backend: str = "auto", pnet_threshold: float = 0.3, rnet_threshold: float = 0.7,
                 models_dir: str | Path | None = None, threads: int | None = None) -> None:
        if backend not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend must be 'auto', 'cpu' or 'cuda', not {backend!r}")
        if min_face < 12:
            raise ValueError("min_face must be >= 12 (P-Net's window)")
        self.min_face = int(min_face)
        self.thresholds = (float(pnet_threshold), float(rnet_threshold), float(score_threshold))
        self.nms_threshold = float(nms_threshold)
        self.backend = backend
        self.models_dir = Path(models_dir) if models_dir is not None else MODELS_DIR
        self.threads = threads
        self._sessions: dict = {}
        # the landmark stage is optional: without it (e.g. facenet-pytorch's nets) O-Net's points are used
        self.has_landmark_net = (self.models_dir / "mtcnn_lnet.onnx").is_file()

    # -- sessions ----------------------------------------------------------------------------
    def _providers(self) -> list[str]:
        import onnxruntime as ort
        have = ort.get_available_providers()
        if self.backend == "cuda" and "CUDAExecutionProvider" not in have:
            raise RuntimeError("backend='cuda' but onnxruntime has no CUDAExecutionProvider "
                               "(install onnxruntime-gpu)")
        if self.backend != "cpu" and "CUDAExecutionProvider" in have:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _session(self, name: str):
        if name not in self._sessions:  # created on first use: constructing a detector stays cheap
            import onnxruntime as ort

            from maskfr.backends import session_options
            path = self.models_dir / f"mtcnn_{name}.onnx"
            if not path.is_file():
                raise FileNotFoundError(f"{path} missing (the MTCNN nets ship in maskfr/models)")
            self._sessions[name] = ort.InferenceSession(str(path), session_options(self.threads),
                                                        providers=self._providers())
        return self._sessions[name]

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        return self._session(name).run(None, {"input": x})

    @cached_property
    def _lnet_side(self) -> int:
        """The landmark stage's crop side, as its file declares (64 for the packaged one)."""
        return int(self._session("lnet").get_inputs()[0].shape[2])

    # -- stages ------------------------------------------------------------------------------
    def _scales(self, h: int, w: int) -> list[float]:
        scale, side, out = 12.0 / self.min_face, min(h, w) * 12.0 / self.min_face, []
        while side >= 12:
            out.append(scale)
            scale *= PYRAMID_FACTOR
            side *= PYRAMID_FACTOR
        return out

    def _propose(self, rgbs: list[np.ndarray]) -> list[np.ndarray]:
        """P-Net over the pyramid of same-sized frames: per frame (N, 5) square boxes + score."""
        h, w = rgbs[0].shape[:2]
        found: list[list[np.ndarray]] = [[] for _ in rgbs]
        for scale in self._scales(h, w):
            size = (int(w * scale + 1), int(h * scale + 1))
            x = to_net_input(np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in rgbs]))
            prob, reg = self._run("pnet", x)
            for i in range(len(rgbs)):
                ys, xs = np.nonzero(prob[i] >= self.thresholds[0])
                if not len(ys):
                    continue
                cells = np.stack([xs, ys, xs, ys], 1).astype(np.float64) * 2 + [0, 0, 12, 12]
                cand = np.hstack([cells / scale, prob[i, ys, xs, None], reg[i][:, ys, xs].T])
                found[i].append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        out = []
        for cands in found:
            if not cands:
                out.append(np.zeros((0, 5)))
                continue
            c = np.vstack(cands)
            c = c[nms(c[:, :4], c[:, 4], 0.7)]
            out.append(np.hstack([_square(_regress(c[:, :4], c[:, 5:9])), c[:, 4:5]]))
        return out

    def _refine(self, rgbs: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """R-Net on every proposal of every frame at once."""
        idx = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]).astype(np.int64)
        if not len(idx):
            return boxes
        crops = np.concatenate([crop_resize(rgbs[i], b[:, :4], 24) for i, b in enumerate(boxes) if len(b)])
        prob, reg = self._run("rnet", to_net_input(crops))
        allb = np.vstack(boxes)
        out = []
        for i in range(len(rgbs)):
            sel = np.flatnonzero((idx == i) & (prob >= self.thresholds[1]))
            sel = sel[nms(allb[sel, :4], prob[sel], 0.7)]
            out.append(np.hstack([_square(_regress(allb[sel, :4], reg[sel])), prob[sel, None]]))
        return out

    def _output(self, rgbs: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[Detection]]:
        """O-Net: final score, box and landmarks; NMS with the 'min' overlap."""
        idx = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]).astype(np.int64)
        if not len(idx):
            return [[] for _ in rgbs]
        crops = np.concatenate([crop_resize(rgbs[i], b[:, :4], 48) for i, b in enumerate(boxes) if len(b)])
        prob, reg, lm = self._run("onet", to_net_input(crops))
        allb = np.vstack(boxes)[:, :4]
        wh = allb[:, 2:4] - allb[:, 0:2]
        pts = np.stack([allb[:, 0:1] + lm[:, :5] * wh[:, 0:1], allb[:, 1:2] + lm[:, 5:] * wh[:, 1:2]], -1)
        final = _regress(allb, reg)
        kept = []
        for i in range(len(rgbs)):
            sel = np.flatnonzero((idx == i) & (prob >= self.thresholds[2]))
            kept.append(sel[nms(final[sel], prob[sel], self.nms_threshold, mode="min")])
        if self.has_landmark_net and any(len(k) for k in kept):
            sel = np.concatenate(kept)
            pts[sel] = self._landmarks([rgbs[i] for i, k in enumerate(kept) for _ in k], final[sel])
        return [[Detection(final[k].astype(np.float32), float(prob[k]), pts[k].astype(np.float32)) for k in sel]
                for sel in kept]

    def _landmarks(self, rgbs: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """LNet's 5 points on the squared final boxes (one frame per box): (N, 5, 2) frame pixels.

        Each crop is also run mirrored and the two answers averaged (its mirrored points mapped back,
        left and right swapped): 0.2 points of eye distance better for ~1 ms a face. LNet answers in
        fractions of the box in edge coordinates, hence the half pixel.
        """
        sq = _square(boxes)
        crops = np.concatenate([crop_resize(rgb, b[None], self._lnet_side) for rgb, b in zip(rgbs, sq)])
        both = self._run("lnet", to_net_input(np.concatenate([crops, crops[:, :, ::-1]])))[0]
        f, fm = np.split(both.reshape(-1, 2, 5).transpose(0, 2, 1), 2)
        f = (f + np.stack([1 - fm[:, MIRROR, 0], fm[:, MIRROR, 1]], 2)) / 2
        return sq[:, None, :2] + f * (sq[:, None, 2:] - sq[:, None, :2]) - 0.5

    # -- public ------------------------------------------------------------------------------
    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Faces in one BGR uint8 frame (grayscale and BGRA accepted), best score first."""
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Faces in each frame; frames of the same size share P-Net runs, all share R/O-Net runs."""
        rgbs = [cv2.cvtColor(to_bgr(f), cv2.COLOR_BGR2RGB) for f in frames]
        if not rgbs:
            return []
        proposals: list[np.ndarray] = [np.zeros((0, 5))] * len(rgbs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(rgbs):
            groups.setdefault(f.shape[:2], []).append(i)
        for members in groups.values():
            for i, p in zip(members, self._propose([rgbs[i] for i in members])):
                proposals[i] = p
        return self._output(rgbs, self._refine(rgbs, proposals))
