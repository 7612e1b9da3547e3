"""The model that ships inside the package: present, small, self-describing, and still the released function."""
import json

import numpy as np
import pytest

import maskfr.recognizer as r


def test_default_model_ships_with_its_contract():
    path = r.DEFAULT_MODEL
    assert path.is_file(), f"{path} is missing from the install"
    assert path.stat().st_size <= 25 << 20
    rec = r.FaceRecognizer(mask_classifier=None, detector=object())
    meta = rec.metadata
    assert json.loads(meta["input_size"]) == [112, 112] and meta["colour_order"] == "RGB"
    assert meta["embedding_size"] == "128" and not meta["model_version"].startswith("untrained")
    thr = rec.thresholds
    assert 0 < thr["far=1e-2"] < thr["far=1e-3"] < 1
    assert rec.threshold == thr["far=1e-3"]  # the operating point when a mask flag is not known
    conditions = ("u-u", "m-u", "m-m")  # ... and one per mask condition when both are
    assert set(thr) == {f"far=1e-{k}{c}" for k in (2, 3) for c in ("", *(f",{c}" for c in conditions))}
    assert [rec.threshold_for(a, b) for a, b in ((False, False), (True, False), (True, True))] == \
        [thr[f"far=1e-3,{c}"] for c in conditions]
    assert thr["far=1e-3,m-m"] > thr["far=1e-3"] > thr["far=1e-3,m-u"]  # masked faces look alike


def test_golden_embeddings_reproduce():
    golden = pytest.importorskip("maskfr.export.golden")
    rep = golden.check_golden(r.DEFAULT_MODEL)
    assert rep["same_model"], "the golden file was made from another model file"
    assert rep["passed"] and rep["min_cosine"] >= 0.9999
    g = golden.read_golden(golden.golden_path(r.DEFAULT_MODEL))
    # crops of one person, masked and not: the shipped model must call every pair "same"
    e = g["embeddings"] / np.linalg.norm(g["embeddings"], axis=1, keepdims=True)
    assert (e @ e.T).min() >= r.FaceRecognizer(detector=object()).threshold


def test_demo_with_the_shipped_model(capsys, tmp_path):
    pytest.importorskip("skimage")
    from maskfr.cli import main
    rc = main(["demo", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["all_correct"], out["verify"]
    assert out["verify"][0]["answer"] == "same"
