"""configs/g2d_cpu_camera.py (the packaged recipe) with sunglasses drawn over the eyes of 15 % of the masked training
faces (p_mask 0.75: ~11 % of all), on top of their mask (``MaskSynth(p_sunglasses=...)``): with both worn, only the brows, the forehead and the face's
outline are left (benchmarks/RESULTS.md, "Masks with sunglasses").
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_camera.py")))["config"]
config = dict(_base, name="g2d_cpu_sunglasses", p_sunglasses=0.15)
