"""The packaged recipe (configs/g2d_cpu_camera.py) with a perceptual term in the inpainting stage.

The inpainter's loss adds 0.5 x losses.perceptual_loss: how differently dlib's frozen ResNet sees the inpainted and
the clean face, layer by layer and in its embedding. With L1 alone the inpainter draws a generic lower face that
makes strangers look alike to dlib (benchmarks/RESULTS.md, "G2D training"); the issue asks whether such a term
helps. The weight was set once, before any measurement (the term is normalised to about 1 per layer at the start).
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_camera.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["inpaint"].update(w_perceptual=0.5)
config = dict(_base, name="g2d_cpu_camera_perceptual", stages=_stages)
