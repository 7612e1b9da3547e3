from pathlib import Path

import pytest

from conftest import lfw_tree

from maskfr.training.data import LFW, celeba, image_folder


def _lfw_tree(root: Path) -> LFW:
    return LFW(lfw_tree(root))


def test_lfw_pairs_folds_and_people(tmp_path):
    lfw = _lfw_tree(tmp_path)
    pairs = lfw.pairs()
    assert [(Path(p.a).name, Path(p.b).name, p.same, p.fold) for p in pairs] == [
        ("Ann_A_0001.jpg", "Ann_A_0002.jpg", True, 0), ("Ann_A_0003.jpg", "Bob_B_0001.jpg", False, 0),
        ("Bob_B_0001.jpg", "Bob_B_0002.jpg", True, 1), ("Ann_A_0002.jpg", "Cy_C_0001.jpg", False, 1)]
    assert lfw.people_folds() == [["Ann_A", "Cy_C"], ["Bob_B"]]
    dev = lfw.pairs("pairsDevTest.txt")
    assert len(dev) == 2 and dev[0].same and not dev[1].same and {p.fold for p in dev} == {0}
    assert lfw.dev_people("Test") == ["Ann_A", "Bob_B"]
    assert [s.identity for s in lfw.samples(["Bob_B"])] == ["Bob_B", "Bob_B"]
    assert len(lfw.samples()) == 6


def test_lfw_bad_pairs_file(tmp_path):
    lfw = _lfw_tree(tmp_path)
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_A\t1\t2\n")
    with pytest.raises(ValueError, match="expected 4 pairs"):
        lfw.pairs()


def test_celeba_and_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "identity.txt").write_text("000001.jpg 7\n000002.jpg 9\n")
    assert [(Path(s.path).name, s.identity) for s in celeba(tmp_path)] == [
        ("000001.jpg", "celeba_7"), ("000002.jpg", "celeba_9")]
    for who in ("x", "y"):
        (tmp_path / "f" / who).mkdir(parents=True)
        (tmp_path / "f" / who / "1.jpg").write_bytes(b"")
        (tmp_path / "f" / who / "notes.txt").write_text("")
    assert [s.identity for s in image_folder(tmp_path / "f")] == ["x", "y"]


def test_real_lfw_protocol(shared_data):
    lfw = LFW(shared_data / "lfw")
    pairs = lfw.pairs()
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    folds = lfw.people_folds()
    assert len(folds) == 10 and not set(folds[0]) & set(folds[5])
    assert all(Path(p.a).exists() and Path(p.b).exists() for p in pairs[:50])
