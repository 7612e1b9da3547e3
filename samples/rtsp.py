"""Recognise faces on an RTSP / HTTP stream: ``python samples/rtsp.py rtsp://cam/stream --enroll people/``.

Uses OpenCV's FFmpeg backend over TCP (fewer torn frames than UDP on lossy networks);
``--gstreamer`` instead decodes with a GStreamer pipeline (``nvv4l2decoder`` on Jetson). A stream that drops
(a camera rebooting, a network blip) is reopened (``--reconnect``); one that does not come back ends the run with
exit code 1, so a service manager restarts it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

import cv2

from _common import add_common_args, live, run


def gst_pipeline(url: str, latency_ms: int = 200) -> str:
    """H.264 RTSP through the Jetson hardware decoder, ending in a BGR appsink."""
    return (f"rtspsrc location={url} latency={latency_ms} ! rtph264depay ! h264parse ! nvv4l2decoder ! "
            "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1")


class Reconnecting:
    """A ``cv2.VideoCapture`` stand-in that reopens its stream when a read fails: ``attempts`` tries, ``delay``
    seconds apart, before the failure is passed on (``lost`` then says so); ``reconnects`` counts the recoveries.
    A source that reports a frame count (a file, also over HTTP) has simply ended: it is not reopened."""

    def __init__(self, open_stream: Callable[[], Any], attempts: int, delay: float):
        self._open, self.attempts, self.delay = open_stream, attempts, delay
        self._cap = open_stream()
        self.reconnects, self.lost = 0, False

    def read(self) -> tuple[bool, Any]:
        ok, frame = self._cap.read()
        if not ok and self._cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0:  # a file's end, not a dropped stream
            return ok, frame
        for _ in range(self.attempts if not ok else 0):
            time.sleep(self.delay)
            self._cap.release()
            self._cap = self._open()
            ok, frame = self._cap.read() if self._cap.isOpened() else (False, None)
            if ok:
                self.reconnects += 1
                break
        self.lost = not ok
        return ok, frame

    def isOpened(self) -> bool:
        return self._cap.isOpened()

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def release(self) -> None:
        self._cap.release()


def main(argv: list[str] | None = None, detector: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url", help="rtsp://, http:// or any source OpenCV's FFmpeg backend opens")
    p.add_argument("--gstreamer", action="store_true", help="decode with GStreamer (Jetson hardware decoder)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="give up when the stream does not open, or sends no frame, for S seconds (FFmpeg; "
                        "default 10: OpenCV's own 30 s varies with its build)")
    p.add_argument("--reconnect", type=int, default=5, metavar="N",
                   help="reopen a stream that drops up to N times in a row, 2 s apart (default 5; 0: end with it)")
    add_common_args(p, live_source=True)
    args = p.parse_args(argv)
    ms = int(args.timeout * 1000)

    def open_stream() -> cv2.VideoCapture:
        if args.gstreamer:
            return cv2.VideoCapture(gst_pipeline(args.url), cv2.CAP_GSTREAMER)
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        return cv2.VideoCapture(args.url, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])

    cap = Reconnecting(open_stream, args.reconnect, delay=2.0)
    run(live(cap, args), args, detector, title=args.url)
    if cap.reconnects:
        print(f"reconnected {cap.reconnects} time(s)", file=sys.stderr)
    if cap.lost:
        again = f" and did not come back after {args.reconnect} attempt(s)" if args.reconnect else ""
        print(f"error: {args.url} dropped{again}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
