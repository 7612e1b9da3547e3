"""configs/g2d_cpu.py with a 6x longer inpainting stage: three epochs (555 steps of 64) instead of 90 steps.

Is the generative stage limited by its length on the CPU? At 90 steps the inpainter draws a blurry mean
lower face; this measures what a longer stage gives the inpainter and, through it, the student.
The reformer and classifier stages are g2d_cpu.py's. About 45 minutes of training on 2 CPU cores.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["inpaint"].update(epochs=3, max_steps=None, warmup_steps=30)
config = dict(_base, name="g2d_cpu_inpaint3", stages=_stages)
