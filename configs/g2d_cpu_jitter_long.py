"""configs/g2d_cpu_jitter.py with 5x longer reformer and 2.5x longer classifier stages, about 22 minutes of
training on 2 CPU cores (run 10; packaged on 2026-12-02, then with WiSE-FT: configs/g2d_cpu_jitter_long_wise.py).

Same settings and seed as g2d_cpu.py up to the end of the inpainting stage (so the same weights there).
configs/g2d_cpu_jitter.py's reformer stage (one epoch) ended with the instance loss still falling; these
longer stages gain mostly at strict FAR (benchmarks/RESULTS.md, "G2D training", run 10).
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_jitter.py")))["config"]
_stages = {k: dict(v) for k, v in _base["stages"].items()}
_stages["reformer"].update(epochs=5, max_steps=None)  # 925 steps of 64 faces
_stages["classifier"].update(epochs=2, max_steps=None)  # 370 steps
config = dict(_base, name="g2d_cpu_jitter_long", stages=_stages)
