"""Each camera sample runs headless on a generated video with the stand-in model and detector."""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime_helpers import MarkerDetector, count_frames, draw_faces, make_model, write_video

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture
def sample():
    sys.path.insert(0, str(SAMPLES))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(SAMPLES))


@pytest.mark.parametrize("name,every", [("video", False), ("webcam", False), ("rtsp", False), ("rtsp", True)])
def test_sample_headless(tmp_path, sample, name, every):
    video = write_video(tmp_path / "in.avi", n_frames=12)
    model = make_model(tmp_path / "m.onnx")
    people = tmp_path / "people"
    for ident, who in ((1, "alice"), (2, "bob")):
        (people / who).mkdir(parents=True)
        cv2.imwrite(str(people / who / "a.jpg"), draw_faces([(ident, 50, 40, 100)], jitter=9))
    out, gal = tmp_path / "out.avi", tmp_path / "g.npz"
    source = {"video": [str(video)], "webcam": ["--camera", str(video)], "rtsp": [str(video)]}[name]
    rc = sample(name).main(source + ["--model", str(model), "--enroll", str(people), "--gallery", str(gal),
                                     "--headless", "--out", str(out)] + ["--every-frame"] * every,
                           detector=MarkerDetector())
    assert rc == 0 and out.exists() and gal.exists()
    if name == "video":  # a restart with the same folders replaces their faces, it does not add them again
        assert sample(name).main(source + ["--model", str(model), "--enroll", str(people), "--gallery", str(gal),
                                           "--headless", "--out", str(out)], detector=MarkerDetector()) == 0
        from maskfr.gallery import Gallery
        g = Gallery.load(gal)
        assert sorted(g.identities) == ["alice", "bob"] and g.n_templates == 2
    if name == "video" or every:
        assert count_frames(out) == 12
    else:  # a live source: frames that arrive while one is being recognised are skipped, never the last one
        assert 1 <= count_frames(out) <= 12


class PacedSource:
    """A camera stand-in: frame i (filled with i) becomes readable i * period seconds after the first read."""

    def __init__(self, n: int, period: float):
        self.n, self.period, self.i, self.t0, self.released = n, period, 0, None, False

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 1.0 / self.period

    def read(self):
        self.t0 = self.t0 or time.perf_counter()
        if self.i == self.n:
            return False, None
        time.sleep(max(0.0, self.t0 + self.i * self.period - time.perf_counter()))
        self.i += 1
        return True, np.full((2, 2, 3), self.i - 1, np.uint8)

    def release(self) -> None:
        self.released = True


def test_latest_frame_skips_stale_frames(sample):
    """A consumer 4x slower than the camera gets newer frames each time, skips the rest, sees the last one."""
    src = PacedSource(n=40, period=0.01)
    cap = sample("_common").LatestFrame(src)
    got = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        got.append(int(frame[0, 0, 0]))
        time.sleep(0.02)
    assert got == sorted(set(got)) and got[-1] == 39
    assert 2 <= len(got) < 40 and cap.dropped == 40 - len(got)
    assert cap.read() == (False, None)  # stays ended
    cap.release()
    assert src.released


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


def test_sample_argument_mistakes_are_errors(tmp_path, sample):
    """A typo in --enroll or --gallery, or a --out that cannot be written, stops with a message instead of a
    traceback, a run where everyone is "unknown", or "wrote" for a video that was never written."""
    video = write_video(tmp_path / "in.avi", n_frames=3)
    model = make_model(tmp_path / "m.onnx")
    common = [str(video), "--model", str(model), "--headless"]
    (tmp_path / "empty" / "alice").mkdir(parents=True)
    (tmp_path / "empty" / "alice" / "._a.jpg").write_bytes(b"\0\5")  # a macOS companion file is not a photo
    for extra, message in ((["--enroll", str(tmp_path / "nobody")], "--enroll"),
                           (["--enroll", str(tmp_path / "empty")], "--enroll: .* no <identity>/ sub-folders"),
                           (["--gallery", str(tmp_path / "typo.npz")], "--gallery"),
                           (["--out", str(tmp_path / "out.unknown-extension")], "cannot write the video")):
        with pytest.raises(SystemExit, match=message):
            sample("video").main(common + extra, detector=MarkerDetector())
    assert not (tmp_path / "typo.npz").exists()
    out = tmp_path / "new" / "dir" / "out.avi"  # missing folders are made, as for the other outputs
    assert sample("video").main(common + ["--out", str(out)], detector=MarkerDetector()) == 0
    assert count_frames(out) == 3


def test_stream_without_a_frame_rate_still_writes_its_video(tmp_path, sample):
    """RTSP streams report a frame rate of 0, NaN or a 90 kHz clock: the annotated video still gets written."""
    video = write_video(tmp_path / "in.avi", n_frames=4)
    model = make_model(tmp_path / "m.onnx")

    class NoRate:
        def __init__(self):
            self.cap = cv2.VideoCapture(str(video))

        def get(self, prop: int) -> float:
            return float("nan") if prop == cv2.CAP_PROP_FPS else self.cap.get(prop)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    common = sample("_common")
    p = __import__("argparse").ArgumentParser()
    common.add_common_args(p)
    out = tmp_path / "out.avi"
    common.run(NoRate(), p.parse_args(["--model", str(model), "--headless", "--out", str(out)]), MarkerDetector())
    assert count_frames(out) == 4


def test_sdk_errors_stop_a_sample_in_one_line(tmp_path, sample):
    """A gallery of another model, a damaged gallery, an unreadable enrolment photo, a missing model or a gallery
    in a missing folder: the SDK's message as a one-line exit, not a traceback (the camera is released too)."""
    from maskfr.gallery import Gallery
    video = write_video(tmp_path / "in.avi", n_frames=3)
    model = make_model(tmp_path / "m.onnx")
    Gallery(256, "other").save(tmp_path / "other.npz")
    (tmp_path / "damaged.npz").write_bytes(b"PK\3\4 truncated")
    people = tmp_path / "people"
    (people / "alice").mkdir(parents=True)
    (people / "alice" / "a.jpg").write_bytes(b"not a jpeg")
    good = tmp_path / "good"
    (good / "bob").mkdir(parents=True)
    cv2.imwrite(str(good / "bob" / "a.jpg"), draw_faces([(2, 50, 40, 100)]))
    common = [str(video), "--headless", "--out", str(tmp_path / "out.avi")]
    for extra, message in ((["--model", str(model), "--gallery", str(tmp_path / "other.npz")], "re-enrol"),
                           (["--model", str(model), "--gallery", str(tmp_path / "damaged.npz")], "damaged"),
                           (["--model", str(model), "--enroll", str(people)], "a.jpg: cannot decode"),
                           (["--model", str(tmp_path / "none.onnx")], "model file not found"),
                           (["--model", str(model), "--enroll", str(good), "--gallery",
                             str(tmp_path / "no" / "g.npz")], "cannot save the gallery .*folder .* does not exist")):
        with pytest.raises(SystemExit, match=f"^error: .*{message}"):
            sample("video").main(common + extra, detector=MarkerDetector())


def test_restart_with_faceless_photos_keeps_the_stored_faces(tmp_path, sample):
    """An identity is replaced by its folder's faces only when the folder gave some: photos in which no face is
    found (a changed camera, a wrong folder) removed the person from the saved gallery."""
    from maskfr.gallery import Gallery
    video = write_video(tmp_path / "in.avi", n_frames=2)
    model = make_model(tmp_path / "m.onnx")
    people, gal = tmp_path / "people", tmp_path / "g.npz"
    (people / "alice").mkdir(parents=True)
    cv2.imwrite(str(people / "alice" / "a.jpg"), draw_faces([(1, 50, 40, 100)]))
    args = [str(video), "--model", str(model), "--enroll", str(people), "--gallery", str(gal), "--headless",
            "--out", str(tmp_path / "out.avi")]
    assert sample("video").main(args, detector=MarkerDetector()) == 0
    cv2.imwrite(str(people / "alice" / "a.jpg"), draw_faces([]))
    assert sample("video").main(args, detector=MarkerDetector()) == 0
    g = Gallery.load(gal)
    assert g.identities == ["alice"] and g.n_templates == 1


def test_sources_without_frames_are_errors(tmp_path, sample):
    """A video without frames (or a stream that sends none) ended "0 frames" with exit 0 and no output video; a
    camera that does not exist was reported as "cannot open the video source (maskfr webcam)", not by its index."""
    model = make_model(tmp_path / "m.onnx")
    empty = write_video(tmp_path / "empty.avi", n_frames=0)
    out = tmp_path / "out.avi"
    with pytest.raises(SystemExit, match="no frame .*empty.avi"):
        sample("video").main([str(empty), "--model", str(model), "--headless", "--out", str(out)],
                             detector=MarkerDetector())
    with pytest.raises(SystemExit, match="camera 97"):
        sample("webcam").main(["--camera", "97", "--model", str(model), "--headless", "--out", str(out)],
                              detector=MarkerDetector())


def test_rtsp_sample_bounds_open_and_read_time(sample, monkeypatch):
    """A stream that accepts the connection and never answers must end within --timeout, on every OpenCV build."""
    seen = {}

    class Closed:
        def __init__(self, url, api, params=()):
            seen.update(url=url, api=api, params=dict(zip(params[::2], params[1::2])))

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(cv2, "VideoCapture", Closed)
    with pytest.raises(SystemExit, match="cannot open the video source"):
        sample("rtsp").main(["rtsp://cam/stream", "--timeout", "2.5", "--headless"])
    assert seen["api"] == cv2.CAP_FFMPEG
    assert seen["params"] == {cv2.CAP_PROP_OPEN_TIMEOUT_MSEC: 2500, cv2.CAP_PROP_READ_TIMEOUT_MSEC: 2500}


class DroppingStream:
    """An RTSP stand-in: each opening serves ``frames[k]`` frames then fails, as a camera that reboots does."""

    def __init__(self, frames: list[int]):
        self.frames, self.opened, self.served = frames, 0, 0

    def open(self, *args):
        k, self.opened = self.opened, self.opened + 1
        left = self.frames[k] if k < len(self.frames) else 0
        outer = self

        class Cap:
            def isOpened(self) -> bool:
                return k < len(outer.frames)

            def read(self):
                nonlocal left
                if left <= 0:
                    return False, None
                left -= 1
                outer.served += 1
                return True, np.full((120, 160, 3), 90, np.uint8)

            def get(self, prop: int) -> float:
                return -1.0 if prop == cv2.CAP_PROP_FRAME_COUNT else 25.0

            def release(self) -> None:
                pass

        return Cap()


@pytest.mark.parametrize("frames,attempts,max_frames,rc,opened", [([3, 4], 2, 7, 0, 2), ([3], 2, 0, 1, 3),
                                                                    ([3, 4], 0, 0, 1, 1)])
def test_rtsp_sample_reopens_a_dropped_stream(tmp_path, sample, monkeypatch, frames, attempts, max_frames, rc, opened):
    """A drop is bridged by reopening (every frame of both connections processed); a stream that does not come
    back within --reconnect attempts ends with exit code 1, for a service manager to restart."""
    rtsp = sample("rtsp")
    stream = DroppingStream(frames)
    monkeypatch.setattr(cv2, "VideoCapture", stream.open)
    monkeypatch.setattr(rtsp.time, "sleep", lambda s: None)
    out = tmp_path / "out.avi"
    got = rtsp.main(["rtsp://cam/stream", "--reconnect", str(attempts), "--max-frames", str(max_frames),
                     "--every-frame", "--headless", "--out", str(out), "--model", str(make_model(tmp_path / "m.onnx"))],
                    detector=MarkerDetector())
    assert (got, stream.opened) == (rc, opened)
    monkeypatch.undo()  # count_frames opens the written video with the real cv2.VideoCapture
    assert count_frames(out) == stream.served == (sum(frames) if attempts else frames[0])
