"""The recipe of configs/g2d_cpu_jitter.py (packaged until 2026-12-02) on the 6x longer inpainting stage
of g2d_cpu_inpaint3.py.

Same settings and seed as g2d_cpu_inpaint3.py up to the end of the inpainting stage, so that stage's file
can be copied into this run's folder instead of being trained again (~40 minutes on 2 CPU cores).
"""
import runpy
from pathlib import Path

_here = Path(__file__).parent
_jitter = runpy.run_path(str(_here / "g2d_cpu_jitter.py"))["config"]
_inpaint3 = runpy.run_path(str(_here / "g2d_cpu_inpaint3.py"))["config"]
config = dict(_jitter, name="g2d_cpu_jitter_inpaint3",
              stages=dict(_jitter["stages"], inpaint=dict(_inpaint3["stages"]["inpaint"])))
