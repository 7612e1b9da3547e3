"""The WiSE-FT recipe (configs/g2d_cpu_jitter_long_wise.py) with camera degradations: the packaged model.

40 % of the student's inputs (masked or not) are shrunk by a log-uniform factor down to 1/4 (a 28-pixel face),
30 % of those first smeared by motion blur up to 7 pixels long and half of them JPEG-compressed at quality 30-90
at the small size, then scaled back up; the teacher's targets stay those of the sharp faces. The inpainting
stage is unchanged (same weights). The packaged model (g2d-cpu-camera-1) was trained before ``degrade`` handed
JPEG the real colour order (it encoded RGB as if BGR): a rerun of this config is not bit-for-bit that model.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_jitter_long_wise.py")))["config"]
config = dict(_base, name="g2d_cpu_camera",
              degrade=dict(p=0.4, min_scale=0.25, p_blur=0.3, max_blur_px=7.0, p_jpeg=0.5, jpeg_quality=(30, 90)))
