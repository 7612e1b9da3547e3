"""Files written whole or not at all: a crash, a full disk or a power cut mid-write leaves the previous file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _file_mode(path: Path) -> int:
    """Permission bits for a file written to ``path``: the existing file's, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        pass
    try:  # Linux: read the umask without changing it (os.umask would, for every thread of the process)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


@contextlib.contextmanager
def written_then_renamed(dst: str | os.PathLike) -> Iterator[str]:
    """A fresh temporary path next to ``dst`` for a writer that wants a path; when the block succeeds it is synced
    to disk and renamed to ``dst``, else deleted: the previous file stays whole (or absent), nothing else is left.

    The temporary file is unique (two threads may save one path) and gets the mode ``dst`` would have, not
    mkstemp's 0600, so a save does not lock out another user (a camera service) that reads the file.
    """
    dst = Path(dst)
    try:
        fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    except OSError as exc:  # name the file asked for, not a temporary the user never heard of
        raise OSError(exc.errno, exc.strerror, str(dst)) from exc
    try:
        try:
            os.fchmod(fd, _file_mode(dst))
        finally:
            os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_then_rename(path: str | os.PathLike, data: bytes) -> None:
    """``data`` to ``path`` through :func:`written_then_renamed`."""
    with written_then_renamed(path) as tmp:
        Path(tmp).write_bytes(data)
