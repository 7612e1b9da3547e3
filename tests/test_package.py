import subprocess
import sys
from pathlib import Path


def test_runtime_imports_without_torch():
    code = "import sys, maskfr, maskfr.metrics, maskfr.align, maskfr.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_and_bad_input_exit_code(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "maskfr.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "mask" in ok.stdout and "eval" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "maskfr.cli", "mask", str(tmp_path / "nope"), str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    no_masks = subprocess.run([sys.executable, "-m", "maskfr.cli", "eval", "--lfw", str(tmp_path), "--mask-style",
                               "template", "--cache", str(tmp_path / "c.npz")], capture_output=True, text=True)
    assert no_masks.returncode == 2 and "--masks" in no_masks.stderr
    config = Path(__file__).parents[1] / "configs" / "g2d_cpu.py"  # p_template=0.5 needs the templates
    no_masks = subprocess.run([sys.executable, "-m", "maskfr.cli", "train", str(config), "--lfw", str(tmp_path)],
                              capture_output=True, text=True)
    assert no_masks.returncode == 2 and "--masks" in no_masks.stderr


def test_top_level_names_are_lazy():
    code = ("import sys, maskfr; assert 'maskfr.recognizer' not in sys.modules; "
            "from maskfr import FaceRecognizer, Gallery, FaceDetector; print(FaceRecognizer.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "maskfr.recognizer"
