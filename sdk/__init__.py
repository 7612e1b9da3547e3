"""maskfr: masked face recognition for edge GPUs and plain CPUs.

    import maskfr
    rec = maskfr.FaceRecognizer()          # the packaged G2D model, ONNX Runtime on the CPU
    rec.verify("a.jpg", "b_masked.jpg")    # VerifyResult(similarity, same, threshold)

The runtime package never imports torch; training and export code live in
``maskfr.training`` and ``maskfr.export`` and pull their heavy deps lazily.
"""
from typing import Any

from maskfr.align import ARCFACE_112, align_face, similarity_transform, warp_face

__version__ = "0.1.0"
_LAZY = {"FaceRecognizer": "maskfr.recognizer", "Gallery": "maskfr.gallery", "FaceDetector": "maskfr.detector"}
__all__ = ["ARCFACE_112", "FaceDetector", "FaceRecognizer", "Gallery", "align_face", "similarity_transform",
           "warp_face", "__version__"]


def __getattr__(name: str) -> Any:
    """``maskfr.FaceRecognizer`` etc. without importing ONNX Runtime until they are used."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'maskfr' has no attribute {name!r}")
