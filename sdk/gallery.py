"""A gallery of enrolled identities: several L2-normalised embeddings per identity, top-k cosine search.

An identity's score is its best template's similarity (max over its enrolled images), so
enrolling both masked and unmasked photos of a person helps. Search is numpy brute force, or an
exact faiss ``IndexFlatIP`` when asked for, or automatically from ``FAISS_MIN_SIZE`` templates
when faiss is installed (see the measurements there). Both give the same ranking.

Files are a ``.npz`` read with ``allow_pickle=False`` holding a JSON header (format name,
version, model version, sizes), the embeddings, a label and a mask flag per embedding (files written before
the flags read as "not known") and the identity names;
:meth:`Gallery.save` writes a temp file in the same folder and ``os.replace``-s it, so a crash
mid-save leaves the previous gallery intact.
"""
from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskfr.fileio import written_then_renamed

FORMAT = "maskfr-gallery"
VERSION = 1
#: Templates from which faiss (when installed) replaces numpy. Exact faiss (IndexFlatIP) never beat numpy's
#: matrix product on two 2-core machines, 10k to 1M templates (benchmarks/RESULTS.md, "Gallery search"), so
#: auto stays on numpy beyond the largest size measured. Re-run it on bigger CPUs; index="faiss" forces it.
FAISS_MIN_SIZE = 2_000_000


def _flag(v: int) -> bool | None:
    return None if v < 0 else bool(v)


class GalleryFormatError(ValueError):
    """The file is not a maskfr gallery, or it is damaged, truncated or from a newer version."""


@dataclass(frozen=True)
class Match:
    identity: str
    similarity: float
    masked: bool | None = None  # the best template's mask flag (None: not recorded), for mask-aware thresholds


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class Gallery:
    """Identities -> embeddings. All methods are thread-safe (one re-entrant lock)."""

    def __init__(self, dim: int = 128, model_version: str = "", index: str = "auto"):
        if index not in ("auto", "numpy", "faiss"):
            raise ValueError(f"index must be 'auto', 'numpy' or 'faiss', got {index!r}")
        if index == "faiss" and _faiss() is None:
            raise RuntimeError("index='faiss' needs faiss (pip install faiss-cpu)")
        self.dim, self.model_version, self.index = dim, model_version, index
        self._emb = np.zeros((0, dim), np.float32)
        self._label = np.zeros(0, np.int64)
        self._masked = np.zeros(0, np.int8)  # per template: 1 masked, 0 not, -1 not recorded
        self._names: list[str] = []
        self._lock = threading.RLock()
        self._faiss_index = None

    # -- editing -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, identity: str) -> bool:
        return identity in self._names

    @property
    def identities(self) -> list[str]:
        return list(self._names)

    @property
    def n_templates(self) -> int:
        return len(self._emb)

    def add(self, identity: str, embeddings: np.ndarray, masked: Any = None) -> None:
        """Enrol one or more embeddings (D,) or (N, D) for ``identity`` (new or existing).

        ``masked``: whether each face wore a mask (one bool, or one per embedding; None: not known), so that
        :meth:`FaceRecognizer.identify` can apply the threshold of the right comparison condition.
        """
        e = np.asarray(embeddings, np.float32)
        e = e[None] if e.ndim == 1 else e
        if e.ndim != 2 or e.shape[1] != self.dim or len(e) == 0:
            raise ValueError(f"embeddings must be (N, {self.dim}) with N >= 1, got {e.shape}")
        masked = [masked] * len(e) if masked is None or isinstance(masked, (bool, np.bool_)) else list(masked)
        if len(masked) != len(e):
            raise ValueError(f"masked must be one flag or one per embedding ({len(e)}), got {len(masked)}")
        flags = np.array([-1 if m is None else int(bool(m)) for m in masked], np.int8)
        if not np.isfinite(e).all():
            raise ValueError("embeddings contain NaN or inf")
        if not identity or not isinstance(identity, str):
            raise ValueError("identity must be a non-empty string")
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        with self._lock:
            if identity not in self._names:
                self._names.append(identity)
            k = self._names.index(identity)
            self._emb = np.concatenate([self._emb, e])
            self._label = np.concatenate([self._label, np.full(len(e), k, np.int64)])
            self._masked = np.concatenate([self._masked, flags])
            self._faiss_index = None

    def remove(self, identity: str) -> None:
        with self._lock:
            k = self._require(identity)
            keep = self._label != k
            self._emb, self._label, self._masked = self._emb[keep], self._label[keep], self._masked[keep]
            self._label[self._label > k] -= 1
            del self._names[k]
            self._faiss_index = None

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            k = self._require(old)
            if new in self._names:
                raise ValueError(f"identity {new!r} already exists")
            if not new or not isinstance(new, str):  # else saved, and the file then refused as damaged
                raise ValueError("identity must be a non-empty string")
            self._names[k] = new

    def templates(self, identity: str) -> tuple[np.ndarray, list[bool | None]]:
        """An identity's enrolled embeddings (N, D) and their mask flags (None: not recorded)."""
        with self._lock:
            rows = self._label == self._require(identity)
            return self._emb[rows], [_flag(v) for v in self._masked[rows]]

    @classmethod
    def one_template_each(cls, embeddings: np.ndarray, index: str = "auto") -> "Gallery":
        """Identities "0".."N-1", one template each (mask flag not known): the stand-in gallery of timing runs
        (``maskfr bench``, benchmarks/gallery_search.py), built at once where :meth:`add` per identity would copy
        the arrays N times."""
        e = np.asarray(embeddings, np.float32)
        g = cls(e.shape[1], index=index)
        g._emb, g._label = e / np.linalg.norm(e, axis=1, keepdims=True), np.arange(len(e))
        g._masked, g._names = np.full(len(e), -1, np.int8), [str(i) for i in range(len(e))]
        return g

    def _require(self, identity: str) -> int:
        try:
            return self._names.index(identity)
        except ValueError:
            raise KeyError(f"no identity {identity!r} in the gallery") from None

    # -- search --------------------------------------------------------------------------
    def backend(self) -> str:
        """'faiss' or 'numpy': what :meth:`search` uses at the current size."""
        if self.index != "auto":
            return self.index
        return "faiss" if len(self._emb) >= FAISS_MIN_SIZE and _faiss() is not None else "numpy"

    def search(self, queries: np.ndarray, top_k: int = 1) -> list[list[Match]]:
        """Best ``top_k`` identities for each query (D,) or (M, D), most similar first."""
        if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
            # 0 would report every known face as unknown
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        q = np.asarray(queries, np.float32)
        q = q[None] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (M, {self.dim}), got {q.shape}")
        with self._lock:  # arrays are replaced, never edited in place, so a snapshot stays valid
            emb, label, flag, names, use = self._emb, self._label, self._masked, list(self._names), self.backend()
            if use == "faiss" and self._faiss_index is None:
                self._faiss_index = _faiss().IndexFlatIP(self.dim)
                self._faiss_index.add(emb)
            index = self._faiss_index
        if len(names) == 0:
            return [[] for _ in q]
        k = min(top_k, len(names))
        # enough templates that the best k identities are among them even if each has many
        kt = min(len(emb), k * int(np.bincount(label).max()))
        if use == "faiss":
            sims, idx = index.search(np.ascontiguousarray(q), kt)
        else:
            s = q @ emb.T
            idx = np.argpartition(-s, kt - 1, axis=1)[:, :kt] if kt < len(emb) else np.tile(np.arange(len(emb)), (len(q), 1))
            sims = np.take_along_axis(s, idx, 1)
        if kt == k:  # one template per identity: no per-identity reduction needed
            order = np.argsort(-sims, axis=1, kind="stable")
            return [[Match(names[label[i]], float(v), _flag(flag[i])) for v, i in zip(srow[o], irow[o])]
                    for srow, irow, o in zip(sims, idx, order)]
        out = []
        for srow, irow in zip(sims, idx):
            best: dict[int, tuple[float, int]] = {}  # identity -> (similarity, template) of its best template
            for sv, iv in zip(srow, irow):
                if iv >= 0 and sv > best.get(label[iv], (-np.inf, -1))[0]:
                    best[int(label[iv])] = (float(sv), int(iv))
            ranked = sorted(best.items(), key=lambda t: (-t[1][0], t[0]))[:k]
            out.append([Match(names[i], s, _flag(flag[t])) for i, (s, t) in ranked])
        return out

    # -- files ---------------------------------------------------------------------------
    @staticmethod
    def check_save_path(path: str | Path) -> None:
        """Refuse a path :meth:`save` cannot write (its folder missing), before any work is done for it; the
        error would otherwise name the temporary file."""
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot save the gallery {path}: folder {path.parent} does not exist")

    def save(self, path: str | Path) -> None:
        """Write atomically (:func:`maskfr.fileio.written_then_renamed`): a crash mid-save keeps the old gallery."""
        path = Path(path)
        self.check_save_path(path)
        with self._lock:
            header = {"format": FORMAT, "version": VERSION, "dim": self.dim, "model_version": self.model_version,
                      "n_identities": len(self._names), "n_templates": len(self._emb)}
            arrays = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8),
                      "embeddings": self._emb, "labels": self._label, "masked": self._masked,
                      "names": np.frombuffer(json.dumps(self._names).encode(), np.uint8)}
            with written_then_renamed(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path, index: str = "auto") -> Gallery:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gallery file not found: {path}")
        if not zipfile.is_zipfile(path):  # else numpy's message: advice to load it "unsafely" with pickle
            raise GalleryFormatError(f"{path}: not a maskfr gallery (not an .npz archive), or truncated")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "header" not in z.files:
                    raise GalleryFormatError(f"{path}: not a maskfr gallery (no header)")
                header = json.loads(z["header"].tobytes())
                if header.get("format") != FORMAT:
                    raise GalleryFormatError(f"{path}: not a maskfr gallery (format {header.get('format')!r})")
                if header.get("version", 0) > VERSION:
                    raise GalleryFormatError(f"{path}: gallery format version {header['version']} is newer than "
                                             f"this maskfr supports ({VERSION}); upgrade maskfr")
                emb, labels = z["embeddings"], z["labels"]
                # galleries saved before mask flags were recorded: not known
                flags = z["masked"] if "masked" in z.files else np.full(len(labels), -1, np.int8)
                names = json.loads(z["names"].tobytes())
        except GalleryFormatError:
            raise
        # TypeError / AttributeError: JSON of the wrong shape (a list for the header, a string for the version)
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise GalleryFormatError(f"{path}: damaged, truncated or not a maskfr gallery ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
            raise GalleryFormatError(f"{path}: damaged gallery (identity names are not a list of strings)")
        n = len(names)
        if (emb.ndim != 2 or emb.shape != (header.get("n_templates"), header.get("dim")) or emb.dtype != np.float32
                or labels.shape != (len(emb),) or flags.shape != (len(emb),) or flags.dtype != np.int8
                or n != header.get("n_identities")
                or (len(labels) and (labels.min() < 0 or labels.max() >= n)) or len(set(names)) != n):
            raise GalleryFormatError(f"{path}: damaged gallery (arrays disagree with the header)")
        g = cls(int(header["dim"]), str(header.get("model_version", "")), index)
        g._emb, g._label, g._masked, g._names = emb, labels.astype(np.int64), flags, list(names)
        return g
