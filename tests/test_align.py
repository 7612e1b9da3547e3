import cv2
import numpy as np
import pytest

from maskfr.align import ARCFACE_112, align_face, similarity_transform, template, to_input, warp_face


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    R = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    M = similarity_transform(src, src @ R.T + t)
    np.testing.assert_allclose(M, np.hstack([R, t[:, None]]), atol=1e-9)


def test_similarity_transform_never_reflects():
    src = ARCFACE_112.astype(np.float64)
    mirrored = src * [-1, 1]
    M = similarity_transform(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), ARCFACE_112)
    with pytest.raises(ValueError, match="matching"):
        similarity_transform(np.ones((4, 2)), ARCFACE_112)


def test_align_identity_and_pixel_centres():
    """Landmarks already on the template: the crop is the frame's top-left 112x112, pixel for pixel."""
    frame = np.random.default_rng(1).integers(0, 256, (150, 130, 3), dtype=np.uint8)
    np.testing.assert_array_equal(align_face(frame, ARCFACE_112), frame[:112, :112])


def test_align_integer_shift_and_border_is_black():
    frame = np.random.default_rng(2).integers(1, 256, (120, 120, 3), dtype=np.uint8)
    crop = align_face(frame, ARCFACE_112 + [20, 10])  # face sits 20 px right, 10 px down
    np.testing.assert_array_equal(crop[:110, :100], frame[10:120, 20:120])
    assert (crop[112 - 2:, :] == 0).all() and (crop[:, 100:] == 0).all()  # outside the frame -> 0


def test_template_scales_and_to_input_normalises():
    np.testing.assert_allclose(template(224), ARCFACE_112 * 2)
    x = to_input(np.array([[[[0, 127.5, 255]]]], np.float32).astype(np.uint8))
    assert x.shape == (1, 3, 1, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [-1, 0, 1], atol=1 / 127.5)


def test_warp_face_matches_rotation_of_landmarks():
    """A rotated, scaled face aligns back so its landmarks land on the template."""
    ang, s = 0.4, 1.6
    R = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = ARCFACE_112 @ R.T + [60, 40]
    M = similarity_transform(pts, ARCFACE_112)
    np.testing.assert_allclose(pts @ M[:, :2].T + M[:, 2], ARCFACE_112, atol=1e-4)
    frame = np.zeros((300, 300, 3), np.uint8)
    p = np.round(pts[2]).astype(int)
    frame[p[1] - 3:p[1] + 4, p[0] - 3:p[0] + 4] = 255  # a bright blob on the nose tip
    crop = warp_face(frame, M)
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert abs(x - ARCFACE_112[2, 0]) <= 2 and abs(y - ARCFACE_112[2, 1]) <= 2


def test_warp_face_is_opencvs_own_kernel_and_restores_the_ipp_switch():
    """OpenCV 5.1 routes this warp to Intel IPP on x86 (1 grey level off in 1 of 800-5,000 samples); the canonical
    alignment runs OpenCV's own kernel, and leaves the caller's (per-thread) IPP setting as it was."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    m = similarity_transform(template(112) * 0.8 + (30, 5), template(112))
    m[:, :2] = m[:, :2] @ np.array([[0.96, -0.28], [0.28, 0.96]])  # a rotation: non-trivial sub-pixel taps
    before = cv2.ipp.useIPP()
    try:
        for ipp in (True, False):
            cv2.ipp.setUseIPP(ipp)
            setting = cv2.ipp.useIPP()  # False whatever was asked when OpenCV was built without IPP
            got = warp_face(frame, m)
            assert cv2.ipp.useIPP() == setting
            cv2.ipp.setUseIPP(False)
            want = cv2.warpAffine(frame, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
            np.testing.assert_array_equal(got, want)
    finally:
        cv2.ipp.setUseIPP(before)
