"""configs/g2d_cpu_camera.py (the packaged recipe) with night cameras too: 30 % of the degraded inputs (12 % of all)
are made monochrome (``train.to_grey``, the luma in all three channels) after shrinking, blur and JPEG, as an
infrared camera at night sends them; the teacher's targets stay those of the sharp colour faces. Same inpainting
stage (weights) as the camera run.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_camera.py")))["config"]
config = dict(_base, name="g2d_cpu_night", degrade=dict(_base["degrade"], p_grey=0.3))
