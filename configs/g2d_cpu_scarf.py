"""configs/g2d_cpu_camera.py (the packaged recipe) with a fifth of the occluders drawn as scarves, neck gaiters
and bandanas (``MaskSynth(p_scarf=...)``: cloth from the nose past the chin and out past the jaw line, which
masks leave visible). Same inpainting stage (weights) as the camera run: copy its ``inpaint.pt`` into this run's
folder first (benchmarks/RESULTS.md, "Scarves, neck gaiters and bandanas").
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_camera.py")))["config"]
config = dict(_base, name="g2d_cpu_scarf", p_scarf=0.2)
