"""Bad input to the training and evaluation commands: a clear error (exit 2) before any work, never a traceback,
a silently wrong result or a damaged source folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import lfw_tree
from runtime_helpers import make_model

from maskfr.cli import main
from maskfr.training import cache as fc
from maskfr.training.data import LFW, Sample
from maskfr.training.mask_folder import mask_folder

CONFIGS = Path(__file__).parents[1] / "configs"


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("folds", ["11", "5-1", "abc", "0", "", "3-12", "6-"])
def test_bad_folds_are_named(tmp_path, capsys, folds):
    lfw = lfw_tree(tmp_path / "lfw")
    for cmd in (["eval", "--mask-style", "procedural", "--cache", tmp_path / "c.npz", "--out", tmp_path / "o"],
                ["thresholds", "--model", tmp_path / "m.onnx", "-o", tmp_path / "t.json"]):
        rc, err = _run(capsys, *cmd, "--lfw", lfw, "--folds", folds)
        assert rc == 2 and f"--folds {folds!r}" in err and "1-10" in err, err
    assert not list(tmp_path.glob("c.*"))  # nothing built for no pairs


def test_eval_needs_two_folds_and_thresholds_folds_people_txt_has(tmp_path, capsys):
    lfw = lfw_tree(tmp_path / "lfw")
    # one fold: no other fold to pick its threshold on, and every accuracy read 50 %
    rc, err = _run(capsys, "eval", "--lfw", lfw, "--folds", "2", "--mask-style", "procedural", "--cache",
                   tmp_path / "c.npz", "--out", tmp_path / "o")
    assert rc == 2 and "at least two" in err
    rc, err = _run(capsys, "thresholds", "--lfw", lfw, "--folds", "3", "--model", tmp_path / "m.onnx",
                   "-o", tmp_path / "t.json")  # was an IndexError
    assert rc == 2 and "has 2 folds" in err


def test_set_needs_key_equals_literal(tmp_path, capsys):
    lfw = lfw_tree(tmp_path / "lfw")
    for bad in ("p_template", "p_template=", "name=my_run", "=0.0", "p_template=0.0 0.1"):
        rc, err = _run(capsys, "train", CONFIGS / "g2d_cpu.py", "--lfw", lfw, "--set", bad)
        assert rc == 2 and f"--set {bad!r}: expected KEY=VALUE" in err, err


@pytest.mark.parametrize("setting, message", [
    ("p_templat=0.0", "unknown key 'p_templat' (did you mean 'p_template'?)"),
    ("batch_size='64'", "'batch_size' must be an integer, got '64'"),
    ("p_mask=1.5", "'p_mask' must be in [0, 1]"),
    ("wise_alpha=1.5", "'wise_alpha' must be in [0, 1]"),
    ("train_lfw_folds=[0, 1]", "'train_lfw_folds' must list LFW folds 1-10"),  # 0 read fold 10, the test people
    ("align_jitter={'p': 0.5, 'rot': 5.0, 'scale': 0.06, 'shift_px': 3.0}",
     "unknown key in 'align_jitter': 'rot' (did you mean 'rot_deg'?)"),
    ("stages={'inpaint': {}, 'reformer': {}, 'classifier': {}}", "stage 'inpaint' lacks epochs"),
])
def test_config_typos_and_wrong_types_are_refused_before_training(tmp_path, capsys, setting, message):
    lfw = lfw_tree(tmp_path / "lfw")
    rc, err = _run(capsys, "train", CONFIGS / "g2d_cpu.py", "--lfw", lfw, "--set", "p_template=0.0", "--set", setting)
    assert rc == 2 and message in err, err


def test_config_files_checked(tmp_path, capsys):
    lfw = lfw_tree(tmp_path / "lfw")
    typo = tmp_path / "typo.py"
    typo.write_text(f"import runpy\nc = runpy.run_path({str(CONFIGS / 'g2d_cpu.py')!r})['config']\n"
                    "c['stages']['reformer']['max_step'] = 10\nconfig = dict(c, p_template=0.0)\n")
    rc, err = _run(capsys, "train", typo, "--lfw", lfw)
    assert rc == 2 and "unknown key in stage 'reformer': 'max_step' (did you mean 'max_steps'?)" in err
    (tmp_path / "c.txt").write_text("config = dict()\n")  # was an AttributeError on a None loader
    (tmp_path / "none.py").write_text("x = 1\n")
    for path in (tmp_path / "c.txt", tmp_path / "none.py"):
        rc, err = _run(capsys, "train", path, "--lfw", lfw)
        assert rc == 2 and "config = dict(...)" in err, err
    # --eval with one test fold left was found out after training (and read 50 %)
    rc, err = _run(capsys, "train", CONFIGS / "g2d_cpu.py", "--lfw", lfw, "--eval", "--set", "p_template=0.0",
                   "--set", "train_lfw_folds=[1, 2, 3, 4, 5, 6, 7, 8, 9]")
    assert rc == 2 and "2 needed" in err


def _fake_cache(path: Path, samples: list[Sample]) -> None:
    np.savez(path, path=np.array([s.path for s in samples]), identity=np.array([s.identity for s in samples]))


def test_cache_built_for_fewer_images_is_refused(tmp_path, capsys):
    """`maskfr eval` caches only its pairs' images at the path training reads: training then went on without the
    other faces, and `maskfr thresholds` computed its thresholds on about half of them."""
    lfw = lfw_tree(tmp_path / "lfw")
    samples = LFW(lfw).samples()
    out = tmp_path / "lfw.npz"
    _fake_cache(out, samples[:4])
    with pytest.raises(ValueError, match=r"holds 4 of the 6 images asked for .* lacks .*Bob_B_0002\.jpg"):
        fc.build(samples, out, None)
    assert fc.build(samples[1:3], out, None) == out  # a cache holding every image asked for is used as it is
    rc, err = _run(capsys, "thresholds", "--lfw", lfw, "--folds", "2", "--model", make_model(tmp_path / "m.onnx"),
                   "--cache", out, "-o", tmp_path / "t.json")
    assert rc == 2 and "lacks 1 images of the people of folds 2" in err and not (tmp_path / "t.json").exists()


def test_cache_of_the_same_images_elsewhere_is_named(tmp_path, capsys):
    """LFW moved (or mounted elsewhere) was told its cache was "built for others, e.g. by 'maskfr eval'"."""
    _fake_cache(tmp_path / "lfw.npz", LFW(lfw_tree(tmp_path / "old")).samples())
    lfw = lfw_tree(tmp_path / "new")
    with pytest.raises(ValueError, match=f"built from the images at another path \\({tmp_path / 'old'}"):
        fc.build(LFW(lfw).samples(), tmp_path / "lfw.npz", None)
    rc, err = _run(capsys, "thresholds", "--lfw", lfw, "--folds", "2", "--model", make_model(tmp_path / "m.onnx"),
                   "--cache", tmp_path / "lfw.npz", "-o", tmp_path / "t.json")
    assert rc == 2 and "another path" in err


def test_mask_refuses_to_write_into_its_source(tmp_path):
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "blank.jpg"), np.full((80, 80, 3), 127, np.uint8))
    before = (src / "blank.jpg").read_bytes()
    for dst in (tmp_path / "src", tmp_path / "src" / "masked", src / ".." / "p" / "out"):
        with pytest.raises(ValueError, match="inside it"):
            mask_folder(tmp_path / "src", dst)
    assert (src / "blank.jpg").read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["blank.jpg"]


def test_mask_names_a_source_that_is_missing_a_file_or_empty(tmp_path, capsys):
    """A mistyped or empty folder "masked 0 images" and exited 0; a file was called missing."""
    (tmp_path / "empty" / "p").mkdir(parents=True)
    (tmp_path / "empty" / "p" / "notes.txt").write_text("x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    for src, says in (("empty", "no images (.jpg"), ("a.jpg", "is not a folder"), ("nowhere", "does not exist")):
        rc, err = _run(capsys, "mask", tmp_path / src, tmp_path / "dst")
        assert rc == 2 and says in err and str(tmp_path / src) in err
    assert not (tmp_path / "dst").exists()


def test_mask_copies_unreadable_files_and_goes_on(tmp_path):
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    (src / "a_broken.jpg").write_bytes(b"not a jpeg")  # one bad file ended the whole run
    cv2.imwrite(str(src / "b_blank.png"), np.full((80, 80, 3), 127, np.uint8))
    (src / "c_dir.jpg").mkdir()
    n, skipped = mask_folder(tmp_path / "src", tmp_path / "dst")
    assert n == 0 and skipped == ["p/a_broken.jpg", "p/b_blank.png"]
    assert (tmp_path / "dst/p/a_broken.jpg").read_bytes() == b"not a jpeg"


def test_mask_writes_then_renames(tmp_path, monkeypatch):
    """A run killed while writing left a truncated image at the destination, which decodes without an error."""
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "blank.jpg"), np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8))

    def killed(self, data):
        Path.write_text(self, "half")  # what was on disk when the process died
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        mask_folder(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst/p/blank.jpg").exists()
    monkeypatch.undo()
    n, skipped = mask_folder(tmp_path / "src", tmp_path / "dst")  # a rerun replaces the leftover
    assert skipped == ["p/blank.jpg"]
    assert (tmp_path / "dst/p/blank.jpg").read_bytes() == (src / "blank.jpg").read_bytes()


def test_bad_masks_folder_is_an_error_not_a_hang(tmp_path):
    """MaskSynth raised in every cache worker's initializer, which multiprocessing restarts forever."""
    code = ("from maskfr.training import cache as fc; from maskfr.training.data import Sample; "
            f"fc.build([Sample('/x/a.jpg', 'a')], {str(tmp_path / 'c.npz')!r}, {str(tmp_path / 'nomasks')!r})")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("fc.build hung on a masks folder without templates")
    assert out.returncode == 1 and "no MaskTheFace templates in" in out.stderr.splitlines()[-1]
    assert not list(tmp_path.glob("c.*"))


class _Built(Exception):
    pass


def test_cache_is_not_reused_for_masks_drawn_otherwise(tmp_path, monkeypatch):
    """A cache records how its masked crops were drawn: asking the same path for other masks (a masks folder, a
    style) refuses, where it used to evaluate on the cached masks in silence."""
    row = {k: np.zeros(1, np.uint8) for k in fc.FIELDS}
    monkeypatch.setattr(fc, "process_one", lambda path, index, synth: row)  # workers fork: they see it too
    samples = LFW(lfw_tree(tmp_path / "lfw")).samples()
    out = fc.build(samples, tmp_path / "c.npz", None)
    assert json.loads(str(np.load(out)["masks"]))["p_below_nose"] == 0.0
    assert "masks" not in fc.load(out) and len(fc.load(out)["img112"]) == len(samples)  # a row per image only
    assert fc.build(samples, out, None, p_below_nose=0.0) == out  # the same recipe, however it is spelt
    with pytest.raises(ValueError, match=r"holds masks drawn as .*\"p_below_nose\": 0\.0.* asked as .*0\.25"):
        fc.build(samples, out, None, p_below_nose=0.25)


def test_eval_builds_the_training_cache_for_mixed_masks(tmp_path, capsys, monkeypatch):
    """Masks are seeded by cache row: the default mixed cache holds all of LFW in training's order, so `maskfr eval`
    and `maskfr train` draw the same masks whichever builds it; other styles cache only the pairs' images."""
    lfw = lfw_tree(tmp_path / "lfw")
    (lfw / "images_deepfunneled" / "Cy_C" / "Cy_C_0002.jpg").write_bytes(b"")  # in no pair
    monkeypatch.setattr(fc, "CACHE_ROOT", tmp_path / "cache")
    built = {}

    def build(samples, out, masks_root, **kw):
        built[Path(out).name] = [s.path for s in samples]
        raise _Built

    monkeypatch.setattr(fc, "build", build)
    for style in ("mixed", "procedural"):
        with pytest.raises(_Built):
            main(["eval", "--lfw", str(lfw), "--folds", "1-2", "--masks", str(tmp_path), "--mask-style", style])
    assert built["lfw.npz"] == [s.path for s in LFW(lfw).samples()] and len(built["lfw.npz"]) == 7
    assert len(built["lfw-procedural.npz"]) == 6 and not any("Cy_C_0002" in p for p in built["lfw-procedural.npz"])


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch, capsys):
    """`maskfr mask` after the runtime-only install: which extra to install, not a ModuleNotFoundError traceback."""
    import maskfr.training.mask_folder as mf

    def no_dlib(*args, **kw):
        raise ModuleNotFoundError("No module named 'dlib'", name="dlib")

    monkeypatch.setattr(mf, "mask_folder", no_dlib)
    rc, err = _run(capsys, "mask", tmp_path / "a", tmp_path / "b")
    assert rc == 2 and "dlib is not installed; this command needs pip install 'maskfr[train]'" in err


def _full_cache(path: Path, samples: list[Sample]) -> Path:
    """An aligned-face cache of these samples with every field (blank faces)."""
    n = len(samples)
    shapes = {"img112": (112, 112, 3), "img112_masked": (112, 112, 3), "occ112": (112, 112), "chip150": (150, 150, 3),
              "chip150_masked": (150, 150, 3), "lm68_112": (68, 2), "found": (), "found_masked": (), "box": (4,),
              "box_masked": (4,), "score": ()}
    np.savez(path, path=np.array([s.path for s in samples]), identity=np.array([s.identity for s in samples]),
             **{k: np.zeros((n, *s), np.uint8) for k, s in shapes.items()})
    return path


@pytest.mark.parametrize("kind", ["missing", "not onnx", "not a face model"])
def test_eval_and_thresholds_name_a_missing_or_foreign_model(tmp_path, capsys, kind):
    """A typo in --model (or another ONNX file) was an onnxruntime traceback, or numpy's 'object too deep for
    desired array' for a detector net."""
    from maskfr.detector import MODELS_DIR
    lfw = lfw_tree(tmp_path / "lfw")
    cache = _full_cache(tmp_path / "c.npz", LFW(lfw).samples())
    model = {"missing": tmp_path / "g2d_studnet.onnx", "not onnx": tmp_path / "notes.onnx",
             "not a face model": MODELS_DIR / "mtcnn_pnet.onnx"}[kind]
    if kind == "not onnx":
        model.write_text("not a model\n")
    message = {"missing": "not found", "not onnx": "cannot load", "not a face model": "is not (N, embedding_size)"}
    for cmd in (["eval", "--mask-style", "procedural", "--out", tmp_path / "o"],
                ["thresholds", "-o", tmp_path / "t.json"]):
        rc, err = _run(capsys, *cmd, "--model", model, "--lfw", lfw, "--folds", "1-2", "--cache", cache)
        assert rc == 2 and str(model) in err and message[kind] in err, err
    assert not (tmp_path / "t.json").exists()
    # named before a cache is built (up to half an hour on a fresh machine), not after
    rc, err = _run(capsys, "eval", "--mask-style", "procedural", "--model", model, "--lfw", lfw, "--folds", "1-2",
                   "--cache", tmp_path / "fresh.npz")
    assert rc == 2 and message[kind] in err and not (tmp_path / "fresh.npz").exists()


def test_config_that_does_not_run_is_named(tmp_path, capsys):
    """A syntax error in a config was a SyntaxError traceback; a config importing a missing module was blamed on
    the maskfr[train] extra."""
    lfw = lfw_tree(tmp_path / "lfw")
    cases = {"syntax.py": ("config = dict(name='x'\n", "line 1: '(' was never closed"),
             "imports.py": ("import no_such_module\nconfig = dict()\n", "line 1: ModuleNotFoundError"),
             "raises.py": ("c = {}\nconfig = dict(c['base'])\n", "line 2: KeyError: 'base'")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        rc, err = _run(capsys, "train", tmp_path / name, "--lfw", lfw)
        assert rc == 2 and f"config {tmp_path / name}" in err and message in err, err
        assert "maskfr[train]" not in err


@pytest.mark.parametrize("kind", ["truncated", "text", "foreign npz", "lacks fields", "object array"])
def test_damaged_or_foreign_cache_is_named(tmp_path, capsys, kind):
    """A truncated cache was a BadZipFile traceback, a text file got numpy's advice to load it with pickle, a foreign
    .npz 'path is not a file in the archive', one lacking the faces a KeyError later; none named the file or what to
    do."""
    lfw = lfw_tree(tmp_path / "lfw")
    samples = LFW(lfw).samples()
    cache = _full_cache(tmp_path / "c.npz", samples)
    if kind == "truncated":
        cache.write_bytes(cache.read_bytes()[:5000])
    elif kind == "text":
        cache.write_text("hello\n")
    elif kind == "foreign npz":
        np.savez(cache, a=np.arange(3))
    elif kind == "object array":  # unpickling it could run code: numpy refuses, and its message named no file
        np.savez(cache, path=np.array([{}], dtype=object), identity=np.array(["Ann_A"]))
    else:
        _fake_cache(cache, samples)  # path and identity only
    before = cache.read_bytes()
    model = make_model(tmp_path / "m.onnx")  # a model that opens: it is opened before the cache is read
    for cmd in (["eval", "--mask-style", "procedural", "--out", tmp_path / "o", "--model", model],
                ["thresholds", "-o", tmp_path / "t.json", "--model", model]):
        rc, err = _run(capsys, *cmd, "--lfw", lfw, "--folds", "1-2", "--cache", cache)
        assert rc == 2 and f"the cache {cache}" in err and "not an aligned-face cache" in err, err
        assert "pickle" not in err
    assert cache.read_bytes() == before  # never replaced or deleted: the user decides


def test_training_modules_answer_bad_input_without_a_traceback(tmp_path):
    """`python -m maskfr.training.lnet | mtcnn | qat` printed a traceback for every bad input (a missing folder,
    model or config error); qat read the multi-GB face caches before finding its model missing."""
    (tmp_path / "syntax.py").write_text("config = dict(\n")
    runs = [("lnet", ["--data", tmp_path / "none", "--ckpt-dir", tmp_path / "ck", "--out", tmp_path / "l.onnx"],
             f"no prepared chunks in {tmp_path / 'none'}"),
            ("mtcnn", ["--data", tmp_path / "none", "finetune", "--init", tmp_path / "init", "--ckpt-dir", tmp_path,
                       "--out", tmp_path / "o"], str(tmp_path / "init" / "mtcnn_pnet.onnx")),
            ("qat", [tmp_path / "m.onnx", tmp_path / "syntax.py", "-o", tmp_path / "q.onnx"],
             f"config {tmp_path / 'syntax.py'}, line 1"),
            ("qat", [tmp_path / "m.onnx", CONFIGS / "g2d_cpu.py", "-o", tmp_path / "q.onnx", "--lfw", tmp_path / "no"],
             str(tmp_path / "m.onnx"))]  # the model, not the LFW folder read after it
    for module, argv, message in runs:
        out = subprocess.run([sys.executable, "-m", f"maskfr.training.{module}", *map(str, argv)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith(f"python -m maskfr.training.{module}: error: ") and message in last, last


def test_train_checks_people_and_pairs_before_any_work(tmp_path, capsys, monkeypatch):
    """people.txt was read after the cache build (an IndexError for a config's folds it lacks), pairs.txt after the
    training."""
    monkeypatch.setattr(fc, "build", lambda *a, **k: pytest.fail("the cache was built first"))
    lfw = lfw_tree(tmp_path / "lfw")  # two folds
    rc, err = _run(capsys, "train", CONFIGS / "g2d_cpu.py", "--lfw", lfw, "--masks", tmp_path)
    assert rc == 2 and "has 2 folds" in err, err
    (lfw / "pairs.txt").unlink()
    rc, err = _run(capsys, "train", CONFIGS / "g2d_cpu.py", "--lfw", lfw, "--masks", tmp_path, "--set",
                   "train_lfw_folds=[1]", "--eval")
    assert rc == 2 and "pairs.txt" in err, err


def test_cache_folder_moves_with_maskfr_cache(tmp_path):
    """4 GB of face caches had to live under the home folder."""
    code = ("from maskfr.training import cache as fc, embedders, mtcnn; "
            "print(fc.lfw_cache_path(), embedders.CACHE_ROOT, mtcnn.CACHE)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MASKFR_CACHE": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(tmp_path / "lfw.npz"), str(tmp_path), str(tmp_path / "mtcnn")]
