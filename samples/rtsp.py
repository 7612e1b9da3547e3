"""Recognise faces on an RTSP / HTTP stream: ``python samples/rtsp.py rtsp://cam/stream --enroll people/``.

Uses OpenCV's FFmpeg backend over TCP (fewer torn frames than UDP on lossy networks);
``--gstreamer`` instead decodes with a GStreamer pipeline (``nvv4l2decoder`` on Jetson).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import cv2

from _common import add_common_args, live, run


def gst_pipeline(url: str, latency_ms: int = 200) -> str:
    """H.264 RTSP through the Jetson hardware decoder, ending in a BGR appsink."""
    return (f"rtspsrc location={url} latency={latency_ms} ! rtph264depay ! h264parse ! nvv4l2decoder ! "
            "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1")


def main(argv: list[str] | None = None, detector: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url", help="rtsp://, http:// or any source OpenCV's FFmpeg backend opens")
    p.add_argument("--gstreamer", action="store_true", help="decode with GStreamer (Jetson hardware decoder)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="give up when the stream does not open, or sends no frame, for S seconds (FFmpeg; "
                        "default 10: OpenCV's own 30 s varies with its build)")
    add_common_args(p, live_source=True)
    args = p.parse_args(argv)
    if args.gstreamer:
        cap = cv2.VideoCapture(gst_pipeline(args.url), cv2.CAP_GSTREAMER)
    else:
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        ms = int(args.timeout * 1000)
        cap = cv2.VideoCapture(args.url, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    run(live(cap, args), args, detector, title=args.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
