"""The one canonical face alignment (5 points -> 112x112 ArcFace template).

Everything else (training cache, runtime, the C++/CUDA extension) must reproduce
exactly this:

* ``M = similarity_transform(landmarks5, ARCFACE_112 * size / 112)``: least-squares
  similarity (Umeyama, no reflection) from frame pixels to crop pixels.
* Pixel centres sit at integer coordinates (OpenCV convention): the crop pixel
  ``(x, y)`` samples the frame at ``M^-1 @ (x, y, 1)``.
* ``cv2.warpAffine(frame, M, (size, size), flags=INTER_LINEAR,
  borderMode=BORDER_CONSTANT, borderValue=0)`` on the uint8 frame, with Intel IPP off: OpenCV
  >= 4.11 computes 8-bit bilinear warps in float32 (the inverse matrix cast to float, blend
  by FMAs, round-half-even to uint8; ``cpp_ext/src/warp_math.h`` reproduces it bit
  for bit); taps outside the frame read 0 (black).
* Network input: RGB, ``(x - 127.5) / 127.5``, NCHW float32.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Standard ArcFace 5-point template for a 112x112 crop: left eye, right eye (as
#: seen in the image), nose tip, left and right mouth corners.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
MEAN = 127.5
STD = 127.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Umeyama (1991) without reflection; returns a 2x3 float64 matrix.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("degenerate landmarks: all points coincide")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1
    r = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def template(size: int = 112) -> np.ndarray:
    """The ArcFace template scaled to a square crop of ``size`` pixels."""
    return ARCFACE_112 * (size / 112.0)


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp a uint8 HxWxC frame into a size x size crop with the canonical settings.

    Intel IPP is switched off for the call (OpenCV keeps that switch per thread; it is restored after):
    OpenCV 5.1 hands 8-bit bilinear warpAffine to IPP on x86, whose double-precision coordinates land
    one grey level away from OpenCV's own float32 kernel in 1 of 800 to 1 of 5,000 samples. The
    canonical alignment is OpenCV's own kernel, the same on every CPU and OpenCV >= 4.11, which the
    training caches and ``maskfr._ext`` follow.
    """
    ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.warpAffine(
            frame, np.asarray(matrix, np.float64), (size, size),
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
    finally:
        cv2.ipp.setUseIPP(ipp)


def align_face(frame: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned ``size`` x ``size`` crop of the face with these 5 landmarks (same channel order as frame)."""
    return warp_face(frame, similarity_transform(landmarks5, template(size)), size)


def to_input(crops_rgb: np.ndarray) -> np.ndarray:
    """Batch of aligned RGB uint8 crops (N,H,W,3) -> normalised NCHW float32 network input."""
    x = np.asarray(crops_rgb, np.float32)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2))
