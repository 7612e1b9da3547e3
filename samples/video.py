"""Recognise faces in a video file: ``python samples/video.py clip.mp4 --enroll people/ --headless``."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import cv2

from _common import add_common_args, run


def main(argv: list[str] | None = None, detector: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("video", help="video file")
    add_common_args(p)
    args = p.parse_args(argv)
    run(cv2.VideoCapture(args.video), args, detector, title=args.video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
