"""The packaged recipe (configs/g2d_cpu_camera.py) with an adversarial term in the inpainting stage.

The inpainter's loss adds 0.1 x losses.hinge_generator_loss against models.PatchCritic, a patch critic trained
alongside it (Adam 2e-4, betas 0.5 / 0.999, one critic step per inpainter step). The issue asks whether a
perceptual or an adversarial term helps; configs/g2d_cpu_camera_perceptual.py measured the first. The weight is
EdgeConnect's adversarial weight, set once before any measurement.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_camera.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["inpaint"].update(w_adversarial=0.1, lr_critic=2e-4)
config = dict(_base, name="g2d_cpu_camera_adversarial", stages=_stages)
