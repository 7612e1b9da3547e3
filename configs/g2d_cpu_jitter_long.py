"""configs/g2d_cpu_jitter.py with 5x longer reformer and 2.5x longer classifier stages (~25 CPU minutes).

Same settings and seed as g2d_cpu.py up to the end of the inpainting stage (so the same weights there).
Asks whether the packaged recipe was still short of steps: its reformer stage (one epoch) ended with the
instance loss still falling.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_jitter.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["reformer"].update(epochs=5, max_steps=None)  # 925 steps of 64 faces
_stages["classifier"].update(epochs=2, max_steps=None)  # 370 steps
config = dict(_base, name="g2d_cpu_jitter_long", stages=_stages)
