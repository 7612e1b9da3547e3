"""Shared loop for the camera samples: read frames, identify faces, draw boxes and names.

On screen by default; ``--headless`` writes the annotated frames to a video instead (MJPG .avi
plays everywhere and needs no extra codecs). ``--enroll DIR`` builds the gallery from
DIR/<identity>/*.jpg at start-up (an identity already in the gallery gets that folder's faces instead
of its old ones, so restarting a camera does not enrol everyone again; when no photo there shows a face, the
old ones stay); ``--gallery FILE`` loads (and, with --enroll, saves) one.
Live sources (camera, RTSP) go through :class:`LatestFrame`, so a recogniser slower than the camera
always works on the newest frame (``--every-frame`` to process them all instead).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskfr.cli_runtime import folder_images
from maskfr.gallery import Gallery
from maskfr.recognizer import FaceRecognizer


def add_common_args(p: argparse.ArgumentParser, live_source: bool = False) -> None:
    p.add_argument("--model", help="ONNX model or TensorRT engine (default: the packaged model)")
    p.add_argument("--backend", default="auto", help="auto, cpu, cuda or tensorrt")
    p.add_argument("--enroll", metavar="DIR", help="enrol DIR/<identity>/*.jpg before starting")
    p.add_argument("--gallery", metavar="FILE", help="gallery .npz to load (and save after --enroll)")
    p.add_argument("--threshold", type=float, help="one similarity threshold (default: the model's, per mask condition)")
    p.add_argument("--thresholds", metavar="FILE", help="per-condition thresholds from 'maskfr calibrate -o FILE'")
    p.add_argument("--min-face", type=int, help="smallest face side to look for, pixels (default 20; 12 for far faces)")
    p.add_argument("--headless", action="store_true", help="no window: write the annotated video to --out")
    p.add_argument("--out", default="annotated.avi", help="output video for --headless")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: until the end)")
    if live_source:
        p.add_argument("--every-frame", action="store_true",
                       help="process every frame, however far behind the camera (default: always the newest)")


class LatestFrame:
    """A live source read on its own thread, keeping only the newest frame (a ``cv2.VideoCapture`` stand-in).

    A recogniser slower than the camera would otherwise be fed from a growing queue (OpenCV's FFmpeg
    backend buffers RTSP without bound): boxes drawn on the scene of seconds ago, then torn frames once the
    buffer overflows. ``read`` waits for a frame newer than the last one it returned; ``dropped`` counts
    the frames that were never read.
    """

    def __init__(self, cap: Any):
        self._cap, self._cond = cap, threading.Condition()
        self._frame: np.ndarray | None = None
        self._ended = self._stop = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._pump, daemon=True)
        if cap.isOpened():
            self._thread.start()

    def _pump(self) -> None:
        while True:
            ok, frame = self._cap.read()  # OpenCV releases the GIL while it waits and decodes
            with self._cond:
                if not ok or self._stop:
                    self._ended = True
                    self._cond.notify_all()
                    return
                self.dropped += self._frame is not None
                self._frame = frame
                self._cond.notify_all()

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._ended)
            frame, self._frame = self._frame, None
        return frame is not None, frame

    def isOpened(self) -> bool:
        return self._cap.isOpened()

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def release(self) -> None:
        with self._cond:
            self._stop = True
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if not self._thread.is_alive():  # never release under a read still blocked on a stalled stream
            self._cap.release()


def live(cap: cv2.VideoCapture, args: argparse.Namespace) -> Any:
    """``cap`` as it is with ``--every-frame``, else wrapped in :class:`LatestFrame`."""
    return cap if args.every_frame else LatestFrame(cap)


def build(args: argparse.Namespace, detector: Any = None) -> tuple[FaceRecognizer, Gallery]:
    # checked first, so a typo is an error rather than a traceback or a run where everyone is "unknown"
    if args.enroll and not Path(args.enroll).is_dir():
        raise SystemExit(f"--enroll {args.enroll}: no such folder (it holds one folder of photos per person)")
    if args.gallery and not args.enroll and not Path(args.gallery).exists():
        raise SystemExit(f"--gallery {args.gallery}: no such file (add --enroll DIR to build it)")
    rec = FaceRecognizer(args.model, detector=detector, backend=args.backend, threshold=args.threshold,
                         min_face=args.min_face, thresholds=args.thresholds)
    gallery = Gallery.load(args.gallery) if args.gallery and Path(args.gallery).exists() else rec.new_gallery()
    if args.enroll:
        try:
            people = folder_images(Path(args.enroll))
        except ValueError as e:  # no <identity>/ folders with images
            raise SystemExit(f"--enroll: {e}") from None
        for person, paths in people.items():
            old = gallery.templates(person) if person in gallery else None
            if old is not None:
                gallery.remove(person)
            n, kept = rec.enroll(gallery, person, paths), ""
            if not n and old is not None:  # photos without a face must not delete the faces stored before
                gallery.add(person, *old)
                kept = f", kept the {len(old[0])} enrolled before"
            print(f"enrolled {person}: {n} face(s){kept}", file=sys.stderr)
        if args.gallery:
            gallery.save(args.gallery)
    return rec, gallery


def annotate(frame: np.ndarray, results: list) -> np.ndarray:
    """Green box for a known person, red for unknown; name, similarity and a mask tag."""
    for r in results:
        l, t, rr, b = (int(round(v)) for v in r.face.box)
        colour = (0, 200, 0) if r.identity else (0, 0, 230)
        cv2.rectangle(frame, (l, t), (rr, b), colour, 2)
        sim = f" {r.matches[0].similarity:.2f}" if r.matches else ""
        text = f"{r.identity or 'unknown'}{sim}{' [mask]' if r.face.masked else ''}"
        cv2.putText(frame, text, (l, max(t - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return frame


def run(cap: cv2.VideoCapture, args: argparse.Namespace, detector: Any = None, title: str = "maskfr") -> int:
    """Process frames until the source ends (or q / Esc on screen); returns the frame count."""
    if not cap.isOpened():
        raise SystemExit(f"cannot open the video source ({title})")
    writer, n, t0, ok = None, 0, time.perf_counter(), True
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 1 <= fps <= 240 else 25.0  # streams report 0, NaN or 90000 (a clock rate) too
    try:
        rec, gallery = build(args, detector)
        while not args.max_frames or n < args.max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frame = annotate(frame, rec.identify(frame, gallery, top_k=1))
            n += 1
            if args.headless:
                if writer is None:
                    h, w = frame.shape[:2]
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
                    if not writer.isOpened():  # else every frame is dropped silently and "wrote" is a lie
                        raise SystemExit(f"cannot write the video {args.out} (not writable, or not a .avi name)")
                writer.write(frame)
            else:
                cv2.imshow(title, frame)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
    except (ValueError, OSError, RuntimeError) as exc:
        # the SDK's own messages (a gallery of another model, an unreadable photo, no model): one line, as the
        # maskfr command prints them, not a traceback
        raise SystemExit(f"error: {exc}") from None
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if not args.headless:
            cv2.destroyAllWindows()
    if n == 0 and not ok:  # else "0 frames" and exit 0, with no output video
        raise SystemExit(f"no frame could be read from {title} (an empty video, or a stream that sent none)")
    dropped = f" ({cap.dropped} older ones skipped)" if isinstance(cap, LatestFrame) else ""
    fps_run = n / max(time.perf_counter() - t0, 1e-9)
    print(f"{n} frames{dropped}, {fps_run:.1f} fps" + (f", wrote {args.out}" if writer else ""), file=sys.stderr)
    return n
