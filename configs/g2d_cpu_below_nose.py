"""configs/g2d_cpu_camera.py (the packaged recipe) with a quarter of the masks worn below the nose (nose bare, top
edge between the nostrils and the upper lip; ``MaskSynth(p_below_nose=...)``), as people often wear them: the
packaged model never saw one and, on such faces, is no better than the teacher (benchmarks/RESULTS.md, "Masks worn
below the nose"). Same inpainting stage (weights) as the camera run.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_camera.py")))["config"]
config = dict(_base, name="g2d_cpu_below_nose", p_below_nose=0.25)
