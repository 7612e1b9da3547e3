"""Each camera sample runs headless on a generated video with the stand-in model and detector."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import cv2
import pytest

from runtime_helpers import MarkerDetector, count_frames, draw_faces, make_model, write_video

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture
def sample():
    sys.path.insert(0, str(SAMPLES))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(SAMPLES))


@pytest.mark.parametrize("name", ["video", "webcam", "rtsp"])
def test_sample_headless(tmp_path, sample, name):
    video = write_video(tmp_path / "in.avi", n_frames=12)
    model = make_model(tmp_path / "m.onnx")
    people = tmp_path / "people"
    for ident, who in ((1, "alice"), (2, "bob")):
        (people / who).mkdir(parents=True)
        cv2.imwrite(str(people / who / "a.jpg"), draw_faces([(ident, 50, 40, 100)], jitter=9))
    out, gal = tmp_path / "out.avi", tmp_path / "g.npz"
    source = {"video": [str(video)], "webcam": ["--camera", str(video)], "rtsp": [str(video)]}[name]
    rc = sample(name).main(source + ["--model", str(model), "--enroll", str(people), "--gallery", str(gal),
                                     "--headless", "--out", str(out)], detector=MarkerDetector())
    assert rc == 0 and out.exists() and gal.exists()
    assert count_frames(out) == 12


def test_annotations_name_known_faces(tmp_path, sample):
    common = sample("_common")
    from maskfr.recognizer import FaceRecognizer
    rec = FaceRecognizer(make_model(tmp_path / "m.onnx"), detector=MarkerDetector())
    g = rec.new_gallery()
    rec.enroll(g, "alice", [draw_faces([(1, 50, 40, 100)])])
    res = rec.identify(draw_faces([(1, 30, 30, 90), (5, 180, 60, 80)]), g)
    assert [r.identity for r in res] == ["alice", None]
    assert common.annotate(draw_faces([]), res).shape == (240, 320, 3)


def test_csi_pipeline_string(sample):
    s = sample("webcam").csi_pipeline(1, 640, 480, 30)
    assert s.startswith("nvarguscamerasrc sensor-id=1") and "appsink" in s and "width=640" in s
