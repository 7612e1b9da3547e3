"""Packaged on the evening of 2026-12-02, until configs/g2d_cpu_camera.py: g2d_cpu_jitter_long.py, then
WiSE-FT: the final weights are moved 30 % of the way back to the dlib-initialised weights training started
from (wise_alpha=0.7).

The training stages are those of g2d_cpu_jitter_long.py. 0.7 has the best mean accuracy of 0.5-1.0 on the
pairs of LFW folds 1-5 (the training people, never the test folds; benchmarks/RESULTS.md, "G2D training").
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_jitter_long.py")))["config"]
config = dict(_base, name="g2d_cpu_jitter_long_wise", wise_alpha=0.7)
