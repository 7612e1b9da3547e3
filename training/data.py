"""Readers for the face datasets we train and evaluate on.

Every reader returns plain lists of :class:`Sample` (path + identity); pairs come
as :class:`Pair` with the LFW fold they belong to. Paths are never hard-coded:
``data_root()`` looks at ``$MASKFR_DATA`` then ``../shared/data``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Sample:
    path: str
    identity: str


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    fold: int


def data_root() -> Path | None:
    """Where the shared face data lives, or None when this machine has none."""
    for cand in (os.environ.get("MASKFR_DATA"), Path(__file__).resolve().parents[1] / ".." / "shared" / "data",
                 Path.cwd() / ".." / "shared" / "data"):
        if cand and (Path(cand) / "lfw").is_dir():
            return Path(cand).resolve()
    return None


class LFW:
    """Labeled Faces in the Wild: ``images_*/<Name>/<Name>_NNNN.jpg`` plus the protocol files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()  # absolute: caches key faces by path, whatever the working directory
        dirs = sorted(self.root.glob("images_*")) or [self.root / "images"]
        self.images = dirs[0]
        if not self.images.is_dir():
            raise FileNotFoundError(f"no LFW image folder (images_*/) under {self.root}")

    def path(self, name: str, num: int) -> str:
        return str(self.images / name / f"{name}_{num:04d}.jpg")

    def samples(self, people: list[str] | None = None) -> list[Sample]:
        """Every image (of these people, when given), sorted by path."""
        names = people if people is not None else sorted(p.name for p in self.images.iterdir() if p.is_dir())
        out = []
        for n in names:
            out += [Sample(str(p), n) for p in sorted((self.images / n).glob("*.jpg"))]
        return out

    def pairs(self, fname: str = "pairs.txt") -> list[Pair]:
        """View 2 ``pairs.txt`` (10 folds) or a View 1 dev file (one fold, numbered 0)."""
        lines = (self.root / fname).read_text().split("\n")
        head = lines[0].split()
        n_folds, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
        body = [ln.split() for ln in lines[1:] if ln.strip()]
        if len(body) != n_folds * 2 * per:
            raise ValueError(f"{fname}: expected {n_folds * 2 * per} pairs, found {len(body)}")
        out = []
        for i, f in enumerate(body):
            fold = i // (2 * per)
            if len(f) == 3:
                out.append(Pair(self.path(f[0], int(f[1])), self.path(f[0], int(f[2])), True, fold))
            elif len(f) == 4:
                out.append(Pair(self.path(f[0], int(f[1])), self.path(f[2], int(f[3])), False, fold))
            else:
                raise ValueError(f"{fname}: bad line {i + 2}: {' '.join(f)!r}")
        return out

    def people_folds(self, fname: str = "people.txt") -> list[list[str]]:
        """``people.txt``: the (identity-disjoint) people of each of the 10 folds."""
        tok = [ln.split() for ln in (self.root / fname).read_text().split("\n") if ln.strip()]
        n, i, folds = int(tok[0][0]), 1, []
        for _ in range(n):
            k = int(tok[i][0])
            folds.append([t[0] for t in tok[i + 1:i + 1 + k]])
            i += 1 + k
        return folds

    def dev_people(self, split: str = "Train") -> list[str]:
        """View 1 ``peopleDevTrain.txt`` / ``peopleDevTest.txt``."""
        tok = [ln.split() for ln in (self.root / f"peopleDev{split}.txt").read_text().split("\n") if ln.strip()]
        return [t[0] for t in tok[1:]]


def celeba(root: str | os.PathLike) -> list[Sample]:
    """CelebA-style folder: ``images/`` plus ``identity.txt`` (``filename identity`` lines)."""
    root = Path(root).resolve()
    out = []
    for ln in (root / "identity.txt").read_text().split("\n"):
        if ln.strip():
            fn, ident = ln.split()
            out.append(Sample(str(root / "images" / fn), f"celeba_{ident}"))
    return out


def image_folder(root: str | os.PathLike) -> list[Sample]:
    """Any ``root/<identity>/*.jpg`` tree (one sub-folder per person)."""
    root = Path(root)
    return [Sample(str(p), d.name) for d in sorted(root.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
