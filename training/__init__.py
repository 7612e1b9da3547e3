"""Training, data preparation and evaluation (needs the ``train`` extra)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable


def load_checkpoint(path: Path, keys: set[str], writer: str = "this trainer",
                    fix: str = "move it aside to train that part again") -> dict[str, Any]:
    """A checkpoint ``writer`` wrote, holding ``keys`` (for resuming, or exporting: ``fix`` says what to do).

    weights_only: tensors and plain values only, so a pickled object in the file is refused, never run. torch's
    own errors for a truncated or foreign file (a zip error, a bare KeyError) named neither the file nor what to do.
    """
    import pickle

    import torch
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as e:
        why = ("it holds Python objects besides tensors, which are not unpickled (that would run their code)"
               if isinstance(e, pickle.UnpicklingError) else "truncated, or not a file torch.save wrote")
        raise ValueError(f"checkpoint {path} is damaged: {why}; {fix}") from e
    lacking = keys - set(st) if isinstance(st, dict) else keys
    if lacking:
        raise ValueError(f"checkpoint {path} is not one {writer} wrote (it lacks {', '.join(sorted(lacking))}); {fix}")
    return st


def run_cli(main: Callable[[], object], prog: str) -> int:
    """Run a ``python -m maskfr.training.*`` entry point as ``maskfr`` runs its commands: bad input (a missing file
    or folder, a config error, a damaged checkpoint) ends with one line naming it and exit status 2, not a traceback.
    """
    try:
        main()
    except (ValueError, OSError, KeyError) as exc:  # KeyError's str() would add quotes
        print(f"{prog}: error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    return 0
