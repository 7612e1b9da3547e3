"""The WiSE-FT recipe (configs/g2d_cpu_jitter_long_wise.py) with low-resolution inputs in the identity stages.

40 % of the student's inputs (masked or not) are shrunk by a log-uniform factor down to 1/4 (a 28-pixel face)
and scaled back up; the teacher's targets stay those of the sharp faces, so the student learns to give a
blurred face the embedding its teacher gives the sharp one. The inpainting stage is unchanged (same weights).
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_jitter_long_wise.py")))["config"]
config = dict(_base, name="g2d_cpu_lowres", degrade=dict(p=0.4, min_scale=0.25))
