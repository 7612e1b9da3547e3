import shutil

import cv2
import numpy as np
import pytest
from conftest import face_landmarks

from maskfr.training.mask_folder import mask_folder


def test_faceless_images_are_copied_and_reported(tmp_path):
    src = tmp_path / "src" / "nobody"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "blank.jpg"), np.full((80, 80, 3), 127, np.uint8))
    n, skipped = mask_folder(tmp_path / "src", tmp_path / "dst")
    assert n == 0 and skipped == ["nobody/blank.jpg"]
    assert (tmp_path / "dst" / "nobody" / "blank.jpg").read_bytes() == (src / "blank.jpg").read_bytes()


def test_real_faces_get_masked(tmp_path, shared_data):
    src = tmp_path / "src" / "Aaron_Eckhart"
    src.mkdir(parents=True)
    shutil.copy(shared_data / "lfw/images_deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg", src)
    n, skipped = mask_folder(tmp_path / "src", tmp_path / "dst", shared_data / "masks", seed=3)
    assert n == 1 and not skipped
    occ = cv2.imread(str(tmp_path / "dst/_occlusion/Aaron_Eckhart/Aaron_Eckhart_0001.jpg.png"), cv2.IMREAD_GRAYSCALE)
    assert 0.05 < (occ > 0).mean() < 0.4  # the lower face of a 250x250 LFW image
    before = cv2.imread(str(src / "Aaron_Eckhart_0001.jpg")).astype(int)
    after = cv2.imread(str(tmp_path / "dst/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")).astype(int)
    assert np.abs(after - before)[occ > 0].mean() > 10 and np.abs(after - before)[occ == 0].mean() < 5


def test_an_interrupted_run_resumes_to_the_straight_result(tmp_path, monkeypatch):
    """Long folders get interrupted: a re-run with the same options keeps what is done and ends where one run
    would; other options are refused rather than mixed in. a.jpg and a.png keep an occlusion map each."""
    import maskfr.training.dlib_models as dm
    calls = []

    def detect(img):
        calls.append(1)
        return face_landmarks(cx=64, cy=60, s=0.6), None, True

    monkeypatch.setattr(dm, "detect_landmarks", detect)
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "b.png"):
        cv2.imwrite(str(src / name), rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    assert mask_folder(tmp_path / "src", tmp_path / "one") == (3, [])
    occ = tmp_path / "one" / "_occlusion" / "p"
    assert sorted(f.name for f in occ.iterdir()) == ["a.jpg.png", "a.png.png", "b.png.png"]

    assert mask_folder(tmp_path / "src", tmp_path / "two") == (3, [])
    (tmp_path / "two" / "_occlusion" / "p" / "b.png.png").unlink()  # stopped before b's map was written
    calls.clear()
    assert mask_folder(tmp_path / "src", tmp_path / "two") == (3, [])
    assert len(calls) == 1  # only b is masked again
    for f in sorted(f for f in (tmp_path / "one").rglob("*") if f.is_file()):
        assert (tmp_path / "two" / f.relative_to(tmp_path / "one")).read_bytes() == f.read_bytes(), f
    with pytest.raises(ValueError, match="was masked as .*another --seed or --masks"):
        mask_folder(tmp_path / "src", tmp_path / "two", seed=1)
