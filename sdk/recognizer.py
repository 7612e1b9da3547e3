"""FaceRecognizer: detect, align, embed, verify and identify faces, masked or not.

Input conventions (one function, :func:`load_image`, applies them everywhere):

* a path or bytes is decoded with OpenCV, turned upright by its EXIF orientation as photo viewers do
  (phone pictures are often stored sideways); missing files, empty files and non-images raise;
* arrays must be uint8 or uint16 (scaled by 1/257) with 1 (grayscale), 3 (BGR) or 4 (BGRA,
  alpha dropped) channels; anything else raises :class:`ImageError`. Colour arrays are BGR as
  OpenCV gives them; pass ``channels="rgb"`` for RGB ones (PIL, imageio, face_recognition's
  ``load_image_file``): the detector, given swapped colours, finds fewer faces (92 % unmasked and 76 % masked
  instead of 99 % in one check on LFW, README);
* PIL images are read by their own mode (RGB, RGBA, L, I;16, palette ...), whatever ``channels`` says,
  and turned upright by their EXIF orientation;
* images over ``MAX_PIXELS`` are refused; frames longer than ``max_side`` are shrunk for
  detection only, and faces are aligned from the full-resolution frame.

Preprocessing goes through :func:`maskfr.preprocess.preprocess` (C++/CUDA/numpy), so crops
match :mod:`maskfr.align` exactly. Each face also gets a mask flag from a tiny MLP on colour,
texture and luma statistics of the crop (``models/mask_classifier.json``, trained by
``python -m maskfr.training.mask_classifier``).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from maskfr.align import similarity_transform, template, to_input, warp_face
from maskfr.backends import Runner, load_runner
from maskfr.gallery import Gallery, Match

try:
    from maskfr.preprocess import preprocess as _preprocess
except ImportError:  # older install without the preprocessing module: the canonical numpy path
    _preprocess = None

MODELS = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS / "g2d_student.onnx"
MASK_CLASSIFIER = MODELS / "mask_classifier.json"
MAX_PIXELS = 1 << 27  # 134 Mpx: beyond this a frame is almost surely a mistake (and ~400 MB)
SIZE = 112
DEFAULT_FAR = "far=1e-3"


class ImageError(ValueError):
    """An input that is not a usable image (missing, empty, corrupt, wrong dtype/channels, too big)."""


class NoFaceError(ValueError):
    """No face was found where one was required."""


@dataclass
class Face:
    """One detected face; ``embedding`` and ``masked`` are filled by :meth:`FaceRecognizer.analyze`."""
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    frame: int = 0
    embedding: np.ndarray | None = None
    masked: bool | None = None
    mask_score: float | None = None

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


@dataclass(frozen=True)
class VerifyResult:
    similarity: float
    same: bool
    threshold: float


@dataclass
class Identification:
    """A face and its best gallery matches; ``identity`` is the top match if one of its templates clears the
    threshold of its comparison's mask condition (:meth:`FaceRecognizer.threshold_for`), ``threshold`` that one."""
    face: Face
    matches: list[Match] = field(default_factory=list)
    identity: str | None = None
    threshold: float | None = None


def _read_thresholds(src: dict[str, float] | str | Path) -> dict[str, float]:
    """Thresholds given as a dict or a JSON file (``maskfr calibrate -o``), checked."""
    what = "thresholds"
    if not isinstance(src, dict):
        what = str(src)
        try:
            src = json.loads(Path(src).read_text())
        except ValueError as exc:
            raise ValueError(f"{what}: not a JSON file of thresholds ({exc})") from None
    if not isinstance(src, dict) or not any("," not in str(k) for k in src) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in src.values()):
        raise ValueError(f"{what}: expected thresholds such as {{\"far=1e-3\": 0.57, \"far=1e-3,m-m\": 0.62}}")
    return {str(k): float(v) for k, v in src.items()}


def _check_channels(channels: str) -> None:
    if channels not in ("bgr", "rgb"):
        raise ValueError(f"channels must be 'bgr' or 'rgb', got {channels!r}")


def _is_pil(src: Any) -> bool:
    return type(src).__module__.startswith("PIL.") and hasattr(src, "convert")


def _from_pil(img: Any) -> np.ndarray:
    """A PIL image, upright by its EXIF orientation -> a grey, RGB or RGBA array."""
    from PIL import ImageOps  # only reached with a PIL image in hand

    if img.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even an upright image: only when it says turned
        img = ImageOps.exif_transpose(img)
    if img.mode in ("L", "I;16", "I;16L", "I;16B"):
        arr = np.asarray(img)
        return arr.astype(np.uint16) if arr.dtype.kind == "u" and arr.itemsize == 2 else arr
    alpha = "A" in img.getbands() or "transparency" in img.info
    return np.asarray(img.convert("RGBA" if alpha else "RGB"))


# keep grey and 16-bit as stored, drop alpha, apply EXIF orientation (IMREAD_UNCHANGED would ignore it)
_DECODE = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG or JPEG header declares it, or None (another format, or a header not read):
    a 20000x20000 JPEG of a few MB would otherwise be decoded (seconds, gigabytes) before its size is refused."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i = 2 if data[:2] == b"\xff\xd8" else len(data)
    while i + 9 <= len(data) and data[i] == 0xFF:  # JPEG segments up to the frame header (SOFn)
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn: length, precision, H, W
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode(data: bytes, what: str) -> np.ndarray | None:
    size = declared_size(data)
    if size and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(f"{what}: image {size[0]}x{size[1]} exceeds {MAX_PIXELS} pixels (refused before decoding)")
    return cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE)


def load_image(src: Any, channels: str = "bgr") -> np.ndarray:
    """Any supported input -> BGR uint8 (H, W, 3), applying the conversions in the module docstring.

    channels: colour order of 3- and 4-channel arrays, ``"bgr"`` (OpenCV) or ``"rgb"``.
    """
    _check_channels(channels)
    if _is_pil(src):
        return load_image(_from_pil(src), "rgb")
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        data = path.read_bytes()
        if not data:
            raise ImageError(f"{path}: empty file")
        img = _decode(data, str(path))
        if img is None:
            raise ImageError(f"{path}: cannot decode (corrupt or not an image)")
        try:
            return load_image(img)
        except ImageError as exc:  # e.g. a float TIFF: say which of many files it was
            raise ImageError(f"{path}: {exc}") from None
    if isinstance(src, (bytes, bytearray)):
        img = _decode(bytes(src), "image bytes") if src else None
        if img is None:
            raise ImageError("cannot decode image bytes (empty, corrupt or not an image)")
        return load_image(img)
    if src is None:
        raise ImageError("image is None (cv2.imread returns None for a file it cannot read)")
    img = np.asarray(src)
    if img.size == 0:
        raise ImageError(f"empty image array {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ImageError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {img.shape}")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageError(f"image {img.shape[1]}x{img.shape[0]} exceeds {MAX_PIXELS} pixels")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"image dtype must be uint8 or uint16, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    rgb = channels == "rgb"
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if rgb else np.ascontiguousarray(img)


# -- mask classifier ----------------------------------------------------------------------------
_UPPER = (slice(24, 58), slice(24, 88))  # eyes and brows of the 112 crop
_LOWER = (slice(74, 108), slice(30, 82))  # mouth and chin


def mask_features(batch: np.ndarray) -> np.ndarray:
    """(N, 3, 112, 112) normalised RGB network input -> (N, 272) colour, texture and shape statistics.

    Per region (eyes band, mouth band): mean and std of Y, Cr, Cb, and mean gradient magnitude;
    plus the lower-vs-upper chroma distance and brightness gap. A mask changes the mouth band's
    colour and flattens its texture while the eye band stays skin. Then the luma at 16x16 (7x7 block
    means), standardised per crop: the mask's outline, which is all that is left in grey frames
    (night cameras in infrared mode), where the colour statistics alone flagged 38 % of masked faces.
    """
    x = np.asarray(batch, np.float32) * 127.5 + 127.5
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    chans = (y, (r - y) * 0.713, (b - y) * 0.564)
    feats = []
    for rows, cols in (_UPPER, _LOWER):
        for c in chans:
            reg = c[:, rows, cols]
            feats += [reg.mean((1, 2)), reg.std((1, 2))]
        reg = y[:, rows, cols]
        feats.append((np.abs(np.diff(reg, axis=1)).mean((1, 2)) + np.abs(np.diff(reg, axis=2)).mean((1, 2))))
    f = np.stack(feats, 1)
    dcr, dcb, dy = f[:, 9] - f[:, 2], f[:, 11] - f[:, 4], f[:, 7] - f[:, 0]
    grid = y.reshape(len(y), 16, 7, 16, 7).mean((2, 4)).reshape(len(y), -1)
    grid = (grid - grid.mean(1, keepdims=True)) / (grid.std(1, keepdims=True) + 1.0)
    return np.concatenate([f, np.hypot(dcr, dcb)[:, None], np.abs(dy)[:, None], grid], 1)


class MaskClassifier:
    """A tiny MLP on :func:`mask_features` (ReLU between layers, one logit out), stored as numbers in JSON.

    layers: ``[{"weights": (in, out) nested lists, "bias": (out,)}, ...]``; one layer is a logistic regression.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], layers: Sequence[dict],
                 threshold: float = 0.5, **info: Any):
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.layers = [(np.asarray(lay["weights"], np.float32), np.asarray(lay["bias"], np.float32)) for lay in layers]
        dims = [len(self.mean)] + [w.shape[1] for w, _ in self.layers]
        if [w.shape[0] for w, _ in self.layers] != dims[:-1] or dims[-1] != 1 or len(self.std) != dims[0]:
            raise ValueError(f"mask classifier layers do not chain from {dims[0]} features to one logit")
        self.threshold, self.info = threshold, info

    @classmethod
    def load(cls, path: str | Path = MASK_CLASSIFIER) -> MaskClassifier | None:
        """The shipped classifier, or None when it has not been trained yet."""
        path = Path(path)
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, 112, 112) network input -> (N,) probability that the face wears a mask."""
        return self.proba_from_features(mask_features(batch))

    def proba_from_features(self, feats: np.ndarray) -> np.ndarray:
        h = (feats - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0)
        return 0.5 * (1.0 + np.tanh(0.5 * h[:, 0]))  # the logistic function, without exp's overflow


# -- recognizer ---------------------------------------------------------------------------------
def _default_detector(threads: int | None = None, min_face: int | None = None) -> Any:
    try:
        from maskfr.detector import FaceDetector
    except ImportError:
        raise RuntimeError("no face detector: maskfr.detector is not available in this install; pass "
                           "detector=<object with detect(frame_bgr)>, or give aligned 112x112 crops") from None
    return FaceDetector(threads=threads) if min_face is None else FaceDetector(threads=threads, min_face=min_face)


def _image_list(images: Any) -> list:
    """One image (path, bytes, PIL image, (H, W[, C]) array) or an iterable of them -> a list of images."""
    one = images is None or isinstance(images, (str, Path, bytes, bytearray)) or _is_pil(images) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3))
    return [images] if one else list(images)


class FaceRecognizer:
    """Detection + alignment + embedding + mask flag, batched. Safe to share between threads.

    model: .onnx file or TensorRT engine (default: the packaged ``models/g2d_student.onnx``).
    detector: any object with ``detect(frame_bgr) -> list`` of items with ``box``, ``score``,
    ``landmarks`` (5, 2); default ``maskfr.detector.FaceDetector``, created on first use.
    threshold: similarity for "same person", for every comparison (default: the model's recommended ones at FAR
    1e-3, one per condition when both faces' mask flags are known: :meth:`threshold_for`).
    thresholds: your own in the metadata's format, a dict or the JSON file of ``maskfr calibrate -o``, instead of
    the model's (``{"far=1e-3": t, "far=1e-3,u-u": t1, ...}``).
    threads: ONNX Runtime threads for the default detector and an ONNX model (default: one per core).
    min_face: smallest face side the default detector looks for, in pixels (default: the detector's, 20); 12
    finds faces down to an eye distance of ~9 pixels at about twice the detection time (benchmarks/RESULTS.md,
    "Small, blurred and compressed faces").
    channels: colour order of the arrays you pass, ``"bgr"`` (OpenCV, the default) or ``"rgb"`` (PIL, imageio,
    face_recognition); paths, bytes and PIL images are decoded right either way.
    """

    def __init__(self, model: str | Path | None = None, detector: Any = None, backend: str = "auto",
                 preprocess_backend: str = "auto", threshold: float | None = None, batch_size: int = 32,
                 max_side: int = 4096, mask_classifier: MaskClassifier | None | str = "default",
                 threads: int | None = None, min_face: int | None = None, channels: str = "bgr",
                 thresholds: dict[str, float] | str | Path | None = None):
        _check_channels(channels)
        if threshold is not None and not np.isfinite(threshold):  # NaN would accept nobody, silently
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        self.channels = channels
        if detector is not None and min_face is not None:
            raise ValueError("min_face sets the default detector; give it to your own detector instead")
        path = Path(model) if model is not None else DEFAULT_MODEL
        if model is None and not path.is_file():
            raise FileNotFoundError(f"default model {path} is not installed yet; pass model=<.onnx or engine path>")
        self.runner: Runner = load_runner(path, backend, SIZE, threads=threads)
        self.threads, self.min_face = threads, min_face
        self.metadata = self.runner.metadata
        self.model_version = self.metadata.get("model_version", path.stem)
        self.thresholds: dict[str, float] = _read_thresholds(thresholds) if thresholds is not None else \
            json.loads(self.metadata.get("recommended_thresholds", "{}"))
        self._threshold = threshold
        self.preprocess_backend = preprocess_backend
        self.batch_size, self.max_side = batch_size, max_side
        self.mask_classifier = MaskClassifier.load() if mask_classifier == "default" else mask_classifier
        self._detector = detector
        self._detector_lock = threading.Lock()  # detectors (dlib, OpenCV DNN) are not all thread-safe

    @property
    def threshold(self) -> float:
        """The one threshold (a given one, else the FAR 1e-3 one of all comparisons pooled)."""
        return self._threshold if self._threshold is not None else float(self.thresholds[self._far()])

    def _far(self) -> str:
        """The operating point's key: FAR 1e-3, else the first FAR the thresholds hold."""
        pooled = [k for k in self.thresholds if "," not in k]
        if not pooled:
            raise ValueError("the model has no recommended_thresholds; pass threshold= (see `maskfr calibrate`)")
        return DEFAULT_FAR if DEFAULT_FAR in pooled else pooled[0]

    # -- detection --------------------------------------------------------------------------
    def detect(self, frame: Any, index: int = 0) -> list[Face]:
        """Faces in one frame (any :func:`load_image` input), largest first."""
        return self._detect(load_image(frame, self.channels), index)

    def _detect(self, img: np.ndarray, index: int) -> list[Face]:
        h, w = img.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        # max(1, ...): a long thin strip (1x10000) would round to 0 rows, which cv2.resize refuses
        small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1 else img
        with self._detector_lock:
            if self._detector is None:
                self._detector = _default_detector(self.threads, self.min_face)
            dets = list(self._detector.detect(small))
        faces = [Face(np.asarray(d.box, np.float32) / scale, float(d.score),
                      np.asarray(d.landmarks, np.float32).reshape(5, 2) / scale, index) for d in dets]
        return sorted(faces, key=lambda f: -f.area)

    # -- embedding --------------------------------------------------------------------------
    def _inputs(self, frames: list[np.ndarray], faces: list[Face]) -> np.ndarray:
        mats = np.stack([similarity_transform(f.landmarks, template(SIZE)) for f in faces])
        idx = np.array([f.frame for f in faces], np.int64)
        if _preprocess is not None:
            return _preprocess(frames, idx, mats, size=SIZE, backend=self.preprocess_backend)
        return to_input(np.stack([warp_face(frames[i], m, SIZE)[..., ::-1] for i, m in zip(idx, mats)]))

    def _embed_inputs(self, x: np.ndarray) -> np.ndarray:
        outs = [self.runner.infer(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        e = np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, self._dim()), np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def _annotate(self, faces: list[Face], x: np.ndarray) -> None:
        emb = self._embed_inputs(x)
        probs = self.mask_classifier.predict_proba(x) if self.mask_classifier is not None and len(x) else None
        for i, f in enumerate(faces):
            f.embedding = emb[i]
            if probs is not None:
                f.mask_score = float(probs[i])
                f.masked = bool(probs[i] >= self.mask_classifier.threshold)

    def analyze(self, frames: Any) -> list[list[Face]]:
        """Detect every face in every frame (one image or a list, as for :meth:`embed`), then embed and
        mask-classify them all in batches; one list of faces per frame."""
        imgs = [load_image(f, self.channels) for f in _image_list(frames)]
        per_frame = [self._detect(img, i) for i, img in enumerate(imgs)]
        flat = [f for faces in per_frame for f in faces]
        if flat:
            self._annotate(flat, self._inputs(imgs, flat))
        return per_frame

    def embed(self, images: Any, aligned: bool = False) -> np.ndarray:
        """(N, D) L2-normalised float32 embeddings.

        images: one image or a list (paths, arrays, bytes). With ``aligned=False`` every face of
        every frame is embedded, frame by frame, largest first (N may be 0). With
        ``aligned=True`` each image is an already aligned 112x112 crop (colour order like any frame).
        """
        items = _image_list(images)
        if not aligned:
            embs = [f.embedding for faces in self.analyze(items) for f in faces]
            return np.stack(embs) if embs else np.zeros((0, self._dim()), np.float32)
        crops = [load_image(c, self.channels) for c in items]
        if not crops:
            return np.zeros((0, self._dim()), np.float32)
        bad = [c.shape for c in crops if c.shape[:2] != (SIZE, SIZE)]
        if bad:
            raise ImageError(f"aligned crops must be {SIZE}x{SIZE}, got {bad[0][:2]}")
        return self._embed_inputs(to_input(np.stack(crops)[..., ::-1]))

    def face(self, image: Any, what: str = "image") -> Face:
        """The largest face of one image, embedded; :class:`NoFaceError` if there is none."""
        faces = self.analyze([image])[0]
        if not faces:
            raise NoFaceError(f"no face found in {what}")
        return faces[0]

    # -- verification and identification ----------------------------------------------------
    def threshold_for(self, masked_a: bool | None, masked_b: bool | None) -> float:
        """The threshold for comparing a face with these mask flags against another (None: not known).

        Masked faces look more alike to each other than bare ones: at the one threshold calibrated on all
        comparisons pooled, masked-masked impostors pass 2-3x the target FAR while unmasked and masked-unmasked
        comparisons get a stricter one than they need (benchmarks/RESULTS.md, "Thresholds per mask
        condition"). So when both flags are known and the model carries per-condition thresholds
        (``far=1e-3,u-u`` / ``,m-u`` / ``,m-m``), that condition's one is used; otherwise, or when a threshold
        was given, :attr:`threshold`.
        """
        if self._threshold is not None or masked_a is None or masked_b is None:
            return self.threshold
        cond = "m-m" if masked_a and masked_b else "m-u" if masked_a or masked_b else "u-u"
        return float(self.thresholds.get(f"{self._far()},{cond}", self.threshold))

    def verify(self, a: Any, b: Any, threshold: float | None = None) -> VerifyResult:
        """Are the largest faces of ``a`` and ``b`` the same person? (each may also be an embedding, whose mask
        flag is then not known: :meth:`threshold_for`)."""
        (ea, ma), (eb, mb) = (self._as_embedding(x, n) for x, n in ((a, "first image"), (b, "second image")))
        t = self.threshold_for(ma, mb) if threshold is None else threshold
        s = float(ea @ eb)
        return VerifyResult(s, s >= t, t)

    def _as_embedding(self, x: Any, what: str) -> tuple[np.ndarray, bool | None]:
        """The embedding and mask flag of an image's largest face, or of a given embedding (flag not known)."""
        if isinstance(x, np.ndarray) and x.ndim == 1:
            return x / max(float(np.linalg.norm(x)), 1e-12), None
        if isinstance(x, Face):
            return x.embedding, x.masked
        f = self.face(x, what)
        return f.embedding, f.masked

    def enroll(self, gallery: Gallery, identity: str, images: Any) -> int:
        """Add the largest face of each image to ``identity``; returns how many were enrolled.

        images: one image or a list, as for :meth:`embed`."""
        self._check_gallery(gallery)
        faces = [faces[0] for faces in self.analyze(_image_list(images)) if faces]
        if faces:
            gallery.add(identity, np.stack([f.embedding for f in faces]), masked=[f.masked for f in faces])
        return len(faces)

    def identify(self, frame: Any, gallery: Gallery, top_k: int = 1,
                 threshold: float | None = None) -> list[Identification]:
        """For each face in ``frame`` (largest first): its ``top_k`` matches and the accepted identity."""
        self._check_gallery(gallery)
        faces = self.analyze([frame])[0]
        if not faces:
            return []
        out = []
        for f, m in zip(faces, gallery.search(np.stack([f.embedding for f in faces]), top_k)):
            if not m or threshold is not None:
                t = self.threshold if threshold is None else threshold
                out.append(Identification(f, m, m[0].identity if m and m[0].similarity >= t else None, t))
                continue
            # the top identity is accepted if any of its templates clears the threshold of its own condition: a
            # masked enrolment photo must not make a masked visitor harder to accept than the bare one alone
            try:
                emb, flags = gallery.templates(m[0].identity)
                sims = emb @ f.embedding
            except KeyError:  # removed by another thread since the search: judge the match found
                sims, flags = np.array([m[0].similarity]), [m[0].masked]
            ts = np.array([self.threshold_for(f.masked, g) for g in flags])
            best = int(np.argmax(sims - ts))
            out.append(Identification(f, m, m[0].identity if sims[best] >= ts[best] else None, float(ts[best])))
        return out

    def new_gallery(self, index: str = "auto") -> Gallery:
        return Gallery(self._dim(), self.model_version, index)

    def _dim(self) -> int:
        return int(self.metadata.get("embedding_size", 128))

    def _check_gallery(self, gallery: Gallery) -> None:
        if gallery.dim != self._dim() or (gallery.model_version and gallery.model_version != self.model_version):
            raise ValueError(f"gallery was made with model {gallery.model_version!r} ({gallery.dim}-d); this "
                             f"recognizer runs {self.model_version!r} ({self._dim()}-d): re-enrol")
