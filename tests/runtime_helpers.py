"""Stand-ins for the runtime tests: a tiny ONNX embedder, a marker-box detector and synthetic faces.

The runtime is tested without torch, the trained model or the real detector: faces are
per-identity colour patterns framed by a green marker box the stand-in detector finds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskfr.align import ARCFACE_112


def make_model(path: Path, size: int = 112, dim: int = 128, thresholds: dict | None = None,
               version: str = "standin-1") -> Path:
    """(N,3,size,size) -> 8x8 average pool -> flatten -> fixed random projection -> L2 normalise."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    feat = 3 * (size // 8) ** 2
    w = np.random.default_rng(0).standard_normal((feat, dim)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "w"], ["e"]),
        helper.make_node("LpNormalization", ["e"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "standin", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"embedding_size": str(dim), "model_version": version,
            "recommended_thresholds": json.dumps(thresholds or {"far=1e-3": 0.8, "far=1e-2": 0.7})}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@dataclass
class Det:
    box: np.ndarray
    score: float
    landmarks: np.ndarray


class MarkerDetector:
    """Finds green marker boxes; landmarks are the ArcFace template placed in the box."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, frame_bgr: np.ndarray) -> list[Det]:
        self.calls += 1
        b, g, r = (frame_bgr[..., i].astype(np.int16) for i in range(3))
        mask = ((g > 180) & (r < 90) & (b < 90)).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        out = []
        for x, y, w, h, area in stats[1:]:
            if w >= 20 and h >= 20 and area > 2 * (w + h):
                side = float(min(w, h))
                box = np.array([x, y, x + side, y + side], np.float32)
                out.append(Det(box, 0.99, (box[:2] + ARCFACE_112 * side / 112).astype(np.float32)))
        return out

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Det]]:
        return [self.detect(f) for f in frames]


def face_patch(identity: int, side: int, masked: bool = False, jitter: int = 0) -> np.ndarray:
    """A BGR pattern unique to ``identity``; ``jitter`` adds a little noise (another "photo")."""
    grid = np.random.default_rng(identity).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = cv2.resize(grid, (side, side), interpolation=cv2.INTER_LINEAR)
    if jitter:
        noise = np.random.default_rng(1000 + jitter).integers(-12, 13, img.shape)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if masked:
        img[int(side * 0.62):, :] = (200, 120, 40)
    return img


def draw_faces(faces: list[tuple[int, int, int, int]], size: tuple[int, int] = (240, 320), masked: bool = False,
               jitter: int = 0) -> np.ndarray:
    """Frame (BGR) with faces (identity, x, y, side), each framed by a 3-pixel green marker."""
    frame = np.full((*size, 3), 90, np.uint8)
    for ident, x, y, side in faces:
        frame[y:y + side, x:x + side] = face_patch(ident, side, masked, jitter)
        cv2.rectangle(frame, (x - 2, y - 2), (x + side + 1, y + side + 1), (0, 255, 0), 3)
    return frame


def write_video(path: Path, n_frames: int = 12, size: tuple[int, int] = (240, 320), fps: float = 10.0) -> Path:
    """An MJPG .avi with one face moving across and a second one appearing halfway."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    for i in range(n_frames):
        faces = [(1, 20 + 4 * i, 40, 96)] + ([(2, 200, 100, 80)] if i >= n_frames // 2 else [])
        vw.write(draw_faces(faces, size))
    vw.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
