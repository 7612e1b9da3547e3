"""Recognise faces from a camera: ``python samples/webcam.py --enroll people/``.

``--camera`` is an OpenCV index (0, 1, ...) or any VideoCapture source string. ``--csi`` opens
a Jetson CSI camera through GStreamer (nvarguscamerasrc -> nvvidconv -> BGR appsink); it needs
an OpenCV built with GStreamer, as on JetPack.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import cv2

from _common import add_common_args, live, run


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """GStreamer pipeline string for a Jetson CSI camera, ending in a BGR appsink for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
            "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1")


def open_camera(camera: str, csi: bool, width: int, height: int) -> cv2.VideoCapture:
    if csi:
        return cv2.VideoCapture(csi_pipeline(int(camera) if camera.isdigit() else 0, width, height), cv2.CAP_GSTREAMER)
    cap = cv2.VideoCapture(int(camera) if camera.isdigit() else camera)
    if camera.isdigit():
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    return cap


def main(argv: list[str] | None = None, detector: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--camera", default="0", help="camera index or VideoCapture source (CSI: sensor id)")
    p.add_argument("--csi", action="store_true", help="Jetson CSI camera via GStreamer nvarguscamerasrc")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    add_common_args(p, live_source=True)
    args = p.parse_args(argv)
    cap = open_camera(args.camera, args.csi, args.width, args.height)
    run(live(cap, args), args, detector, title=f"camera {args.camera}" + (" (CSI)" if args.csi else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
