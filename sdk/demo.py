"""Inputs and drawing for ``maskfr demo`` (runtime only: numpy + OpenCV, no torch, no dlib).

The demo ships no photos. It borrows two public-domain pictures that come inside the
scikit-image wheel (``pip install 'maskfr[demo]'``) and load from disk with no download:

* ``astronaut``: NASA portrait of astronaut Eileen Collins (NASA Great Images; no known
  copyright restrictions, public domain);
* ``coffee``: a cup of coffee (Rachel Michetti, CC0) -- an image with no face in it.

The masked probe is made here: :func:`draw_mask` paints a flat-coloured mask over the lower
face using only the detector's 5 landmarks.
"""
from __future__ import annotations

import cv2
import numpy as np

INSTALL_HINT = "pip install 'maskfr[demo]'"
MASK_BGR = (200, 170, 110)  # light surgical blue
CREDITS = {"astronaut": "NASA photo of astronaut Eileen Collins, public domain (via scikit-image)",
           "coffee": "coffee cup by Rachel Michetti, CC0 (via scikit-image)"}


class DemoDataMissing(RuntimeError):
    """scikit-image (which carries the demo photos) is not installed."""


def demo_images() -> dict[str, np.ndarray]:
    """``{"astronaut": BGR, "coffee": BGR}`` uint8, read from the installed scikit-image (offline)."""
    try:
        from skimage import data
    except ImportError:
        raise DemoDataMissing(f"the demo photos come with scikit-image: {INSTALL_HINT}") from None
    return {name: np.ascontiguousarray(getattr(data, name)()[..., ::-1]) for name in ("astronaut", "coffee")}


def mask_polygon(landmarks: np.ndarray) -> np.ndarray:
    """(N, 2) int32 outline of a mask from just below the nose tip to below the mouth, chin included.

    Built in the face's own frame (x along the eye line, y towards the mouth), so tilted
    faces get a tilted mask. Landmarks: left eye, right eye, nose, left mouth, right mouth.
    """
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eyes, nose, mouth = lm[:2].mean(0), lm[2], lm[3:].mean(0)
    ex = lm[1] - lm[0]
    eye_dist = max(float(np.hypot(*ex)), 1.0)
    ux = ex / eye_dist
    uy = np.array([-ux[1], ux[0]])
    if (mouth - eyes) @ uy < 0:  # keep y pointing from the eyes towards the mouth
        uy = -uy
    down = max(float((mouth - eyes) @ uy), 1.0)  # eyes-to-mouth height
    nose_y = float((nose - eyes) @ uy)
    mouth_half = max(float(abs((lm[4] - lm[3]) @ ux)) / 2, 0.3 * eye_dist)
    top = nose_y + 0.12 * (down - nose_y)  # just under the nose tip
    # (x, y) in the face frame, centred between the mouth corners horizontally
    cx = float((mouth - eyes) @ ux)
    chin = 1.95 * down  # the chin sits about one eyes-to-mouth height below the mouth
    pts = [(-0.95 * eye_dist, top), (0.95 * eye_dist, top), (1.0 * eye_dist, down),
           (mouth_half + 0.3 * eye_dist, 0.5 * (down + chin)), (0.35 * eye_dist, chin),
           (-0.35 * eye_dist, chin), (-mouth_half - 0.3 * eye_dist, 0.5 * (down + chin)), (-1.0 * eye_dist, down)]
    xy = np.array([eyes + (x + cx) * ux + y * uy for x, y in pts])
    return np.round(xy).astype(np.int32)


def draw_mask(img: np.ndarray, landmarks: np.ndarray, colour: tuple[int, int, int] = MASK_BGR) -> np.ndarray:
    """A copy of BGR ``img`` with a flat-coloured mask over the lower face (see :func:`mask_polygon`)."""
    out = np.ascontiguousarray(img).copy()
    cv2.fillPoly(out, [mask_polygon(landmarks)], colour, lineType=cv2.LINE_AA)
    return out


def annotate(img: np.ndarray, faces: list, label: str) -> np.ndarray:
    """A copy of BGR ``img`` with each face's box, 5 points and mask flag, and ``label`` on top."""
    out = np.ascontiguousarray(img).copy()
    for f in faces:
        x1, y1, x2, y2 = (int(round(float(v))) for v in f.box)
        colour = (0, 0, 255) if getattr(f, "masked", None) else (0, 200, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        for x, y in np.asarray(f.landmarks).reshape(5, 2):
            cv2.circle(out, (int(round(float(x))), int(round(float(y)))), 3, (0, 255, 255), -1)
        flag = getattr(f, "masked", None)
        if flag is not None:
            cv2.putText(out, "mask" if flag else "no mask", (x1, max(y1 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, colour, 1, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, label, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


__all__ = ["CREDITS", "DemoDataMissing", "INSTALL_HINT", "annotate", "demo_images", "draw_mask", "mask_polygon"]
