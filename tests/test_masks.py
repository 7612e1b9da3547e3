from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import data_root, draw_face, face_landmarks

from maskfr.training.masks import MaskSynth, face_anchors, load_templates

COVERED = [30, 33, 51, 57, 62, 66, 8]  # nose tip (its lower side), lips, chin
EYES = list(range(36, 48))


def _check_coverage(occ: np.ndarray, lm: np.ndarray, eyes_bare: bool = True) -> None:
    inner = lm[[33, 51, 57, 62, 66]]
    chin = lm[57] + 0.7 * (lm[8] - lm[57])  # between lower lip and chin tip
    for p in np.vstack([inner, chin[None]]):
        assert occ[int(round(p[1])), int(round(p[0]))], f"point {p} not covered"
    for p in lm[EYES] if eyes_bare else []:
        assert not occ[int(round(p[1])), int(round(p[0]))], f"eye point {p} covered"


def test_anchors_on_jaw():
    lm = face_landmarks()
    a, b, c, d, e, f = face_anchors(lm)
    assert a[0] < lm[30, 0] < c[0] and d[0] < lm[57, 0] < f[0]
    assert abs(a[1] - lm[30, 1]) < 6 and abs(d[1] - lm[57, 1]) < 6  # same height on an upright face
    np.testing.assert_allclose(e, lm[8])


@pytest.mark.parametrize("angle", [0.0, 0.25, -0.3])
def test_procedural_masks_cover_nose_to_chin_not_eyes(tmp_path, angle):
    synth = MaskSynth(None)
    lm = face_landmarks(angle=angle)
    img = draw_face(lm)
    sheet = []
    for seed in range(24):
        masked, occ = synth(img, lm, np.random.default_rng(seed))
        assert masked.shape == img.shape and masked.dtype == np.uint8 and occ.dtype == bool
        _check_coverage(occ, lm)
        assert (masked[occ] != img[occ]).any() and (masked[~occ & (occ == 0)] == img[~occ]).mean() > 0.9
        sheet.append(masked)
    path = tmp_path / "contact_sheet.png"
    cv2.imwrite(str(path), np.vstack([np.hstack(sheet[r * 6:(r + 1) * 6]) for r in range(4)]))
    assert cv2.imread(str(path)).shape == (4 * img.shape[0], 6 * img.shape[1], 3)


def _check_below_nose(occ: np.ndarray, lm: np.ndarray, template: bool) -> None:
    """Mouth and chin covered, eyes and nose bare (a template's nose clip may still reach its tip)."""
    chin = lm[57] + (0.4 if template else 0.7) * (lm[8] - lm[57])
    for p in np.vstack([lm[[62, 66, 57]], chin[None]]):
        assert occ[int(round(p[1])), int(round(p[0]))], f"point {p} not covered"
    for p in lm[EYES + [27, 28, 29] + ([] if template else [30])]:
        assert not occ[int(round(p[1])), int(round(p[0]))], f"point {p} covered"


@pytest.mark.parametrize("p_template", [0.0, 1.0])
def test_masks_worn_below_the_nose(p_template):
    data = data_root()
    if p_template and data is None:
        pytest.skip("the MaskTheFace templates are in the shared data")
    root = data / "masks" if p_template else None
    synth = MaskSynth(root, p_template=p_template, p_below_nose=1.0)
    for angle in (0.0, 0.25, -0.3):
        lm = face_landmarks(angle=angle)
        img = draw_face(lm)
        for seed in range(12):
            _check_below_nose(synth(img, lm, np.random.default_rng(seed))[1], lm, bool(p_template))


def _posed_faces(seeds: int = 12):
    """A drawn face at three head rolls, each with ``seeds`` fresh generators: (68 points, image, generator)."""
    for angle in (0.0, 0.25, -0.3):
        lm = face_landmarks(angle=angle)
        img = draw_face(lm)
        for seed in range(seeds):
            yield lm, img, np.random.default_rng(seed)


def _draws_as_before(synth: MaskSynth) -> None:
    """The random numbers a procedural mask took before scarves and sunglasses existed (the generator's next value
    after the call, for seeds 0-2; PCG64's stream is fixed across numpy versions): a new kind that draws even when
    its share is 0 would change every seeded cache's masks."""
    lm = face_landmarks()
    img = draw_face(lm)
    for seed, after in enumerate((0.8574042765875693, 0.689630155447081, 0.6830648223096253)):
        rng = np.random.default_rng(seed)
        synth(img, lm, rng)
        assert rng.random() == after


def test_scarves_hide_the_face_outline_too():
    """Scarves cover what masks do and also the jaw line and the neck below the chin, never the eyes."""
    synth = MaskSynth(None, p_scarf=1.0)
    for lm, img, rng in _posed_faces():
        occ = synth(img, lm, rng)[1]
        _check_coverage(occ, lm)
        below_chin = lm[8] + 0.3 * (lm[8] - lm[57])
        for p in np.vstack([lm[[6, 7, 8, 9, 10]], below_chin[None]]):  # the jaw around the chin, the neck
            assert occ[int(round(p[1])), int(round(p[0]))], f"point {p} not covered"
    _draws_as_before(MaskSynth(None, p_scarf=0.0))  # no draw when off: old masks unchanged


def test_sunglasses_cover_both_eyes_on_top_of_the_mask():
    """Sunglasses go over the eyes, with the mask still there; off, no random number is drawn (old masks unchanged)."""
    shaded = MaskSynth(None, p_sunglasses=1.0)
    for lm, img, rng in _posed_faces():
        occ = shaded(img, lm, rng)[1]
        _check_coverage(occ, lm, eyes_bare=False)
        for eye in (lm[36:42].mean(0), lm[42:48].mean(0)):
            assert occ[int(round(eye[1])), int(round(eye[0]))], f"eye {eye} not covered"
        brow = lm[19] + 0.5 * (lm[19] - lm[37])  # above the brow: the forehead stays bare
        assert not occ[int(round(brow[1])), int(round(brow[0]))]
    _draws_as_before(MaskSynth(None, p_sunglasses=0.0))


def test_deterministic_under_seed_and_varied_across_seeds():
    synth = MaskSynth(None)
    lm = face_landmarks()
    img = draw_face(lm)
    a1, o1 = synth(img, lm, np.random.default_rng(5))
    a2, o2 = synth(img, lm, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(o1, o2)
    outs = {synth(img, lm, np.random.default_rng(s))[0].tobytes() for s in range(10)}
    assert len(outs) == 10


def test_templates_from_shared_data(shared_data):
    root = shared_data / "masks"
    templates = load_templates(root)
    assert len(templates) >= 10 and {t.view < 0.35 for t in templates} == {True, False}
    synth = MaskSynth(root, p_template=1.0)
    lm = face_landmarks()
    img = draw_face(lm)
    for seed in range(12):
        _, occ = synth(img, lm, np.random.default_rng(seed))
        _check_coverage(occ, lm)


def test_template_without_alpha_is_rejected(tmp_path):
    (tmp_path / "templates").mkdir()
    cv2.imwrite(str(tmp_path / "templates" / "x.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "masks.cfg").write_text("[x]\ntemplate: masks/templates/x.png\n" +
                                        "".join(f"mask_{k}: 1, 2\n" for k in "abcdef"))
    with pytest.raises(ValueError, match="alpha"):
        load_templates(tmp_path)
    assert Path(tmp_path / "masks.cfg").exists()


def test_folder_without_templates_is_an_error_unless_procedural_asked(tmp_path):
    with pytest.raises(ValueError, match="no MaskTheFace templates"):
        MaskSynth(tmp_path)  # a mistyped --masks would otherwise train on procedural masks only
    lm = face_landmarks()
    _, occ = MaskSynth(tmp_path, p_template=0.0)(draw_face(lm), lm, np.random.default_rng(0))
    _check_coverage(occ, lm)
