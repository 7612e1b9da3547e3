"""configs/g2d_cpu_jitter_long.py with both trained stages twice as long again (~35 CPU minutes).

Asks whether the packaged recipe is still short of steps. Its inpainting stage is the packaged run's
(same settings and seed): copy ``inpaint.pt`` from that run's folder to skip it.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_jitter_long.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["reformer"].update(epochs=10)  # 1,850 steps of 64 faces
_stages["classifier"].update(epochs=4)  # 740 steps
config = dict(_base, name="g2d_cpu_jitter_long2", stages=_stages)
