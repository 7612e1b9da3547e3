"""maskfr: masked face recognition for edge GPUs and plain CPUs.

The runtime package never imports torch; training and export code live in
``maskfr.training`` and ``maskfr.export`` and pull their heavy deps lazily.
"""
from maskfr.align import ARCFACE_112, align_face, similarity_transform, warp_face

__version__ = "0.1.0"
__all__ = ["ARCFACE_112", "align_face", "similarity_transform", "warp_face", "__version__"]
