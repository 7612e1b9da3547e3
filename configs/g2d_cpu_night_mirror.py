"""configs/g2d_cpu_night.py with half of the faces mirrored left-right (``p_mirror``) in the reformer and classifier
stages, each with the teacher's embedding of the mirrored face as its target (one more teacher pass over the
mirrored chips, cached). 11,847 training faces are few: mirroring is the usual way to see each twice.
"""
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("g2d_cpu_night.py")))["config"]
config = dict(_base, name="g2d_cpu_night_mirror", p_mirror=0.5)
