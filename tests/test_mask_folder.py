import shutil

import cv2
import numpy as np

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
    occ = cv2.imread(str(tmp_path / "dst/_occlusion/Aaron_Eckhart/Aaron_Eckhart_0001.png"), cv2.IMREAD_GRAYSCALE)
    assert 0.05 < (occ > 0).mean() < 0.4  # the lower face of a 250x250 LFW image
    before = cv2.imread(str(src / "Aaron_Eckhart_0001.jpg")).astype(int)
    after = cv2.imread(str(tmp_path / "dst/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")).astype(int)
    assert np.abs(after - before)[occ > 0].mean() > 10 and np.abs(after - before)[occ == 0].mean() < 5
