"""configs/g2d_cpu.py plus alignment jitter on masked inputs (reformer and classifier stages).

The packaged model is trained on crops aligned with dlib's landmarks of the unmasked image; the runtime
aligns masked faces with MTCNN's landmarks, which miss by 10-25 % of the eye distance. The jitter
(Gaussian rotation, scale and shift of the masked crop) makes the student see such crops in training.
"""
import runpy
from pathlib import Path

config = dict(runpy.run_path(str(Path(__file__).with_name("g2d_cpu.py")))["config"], name="g2d_cpu_jitter",
              align_jitter=dict(p=0.7, rot_deg=5.0, scale=0.06, shift_px=3.0))
