"""configs/g2d_cpu.py plus alignment jitter on masked inputs, and longer reformer and classifier stages.

The packaged model is trained on crops aligned with dlib's landmarks of the unmasked image; the runtime
aligns masked faces with MTCNN's landmarks, which miss by 10-25 % of the eye distance. The jitter
(Gaussian rotation, scale and shift of the masked crop) makes the student see such crops in training.
The inpainting stage is the same as in g2d_cpu.py (same settings and seed, so the same weights).
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["reformer"].update(max_steps=None, warmup_steps=40)  # one epoch: 185 steps of 64 faces
_stages["classifier"].update(max_steps=150, warmup_steps=15)
config = dict(_base, name="g2d_cpu_jitter", stages=_stages,
              align_jitter=dict(p=0.7, rot_deg=5.0, scale=0.06, shift_px=3.0))
