"""Gallery: enrol/search/edit, safe versioned files, faiss parity, thread safety."""
from __future__ import annotations

import json
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from maskfr import gallery as gm
from maskfr.gallery import Gallery, GalleryFormatError


def unit(rng, n, d=128):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def gal():
    rng = np.random.default_rng(0)
    g = Gallery(128, "m1")
    for i in range(20):
        g.add(f"id{i}", unit(rng, 1 + i % 3))
    return g


def brute(g: Gallery, q: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    s = q @ g._emb.T
    out = []
    for row in s:
        best = {}
        for v, lab in zip(row, g._label):
            best[lab] = max(best.get(lab, -9), v)
        out.append([(g.identities[i], v) for i, v in sorted(best.items(), key=lambda t: -t[1])[:k]])
    return out


def test_search_is_best_template_per_identity(gal):
    q = unit(np.random.default_rng(1), 7)
    got = gal.search(q, top_k=5)
    for row, ref in zip(got, brute(gal, q, 5)):
        assert [m.identity for m in row] == [r[0] for r in ref]
        np.testing.assert_allclose([m.similarity for m in row], [r[1] for r in ref], atol=1e-6)
    probe = gal._emb[gal._label == gal.identities.index("id5")][1]
    assert gal.search(probe)[0][0].identity == "id5"
    assert gal.search(probe, top_k=100)[0].__len__() == 20


def test_edit_identities(gal):
    e = gal._emb[gal._label == gal.identities.index("id4")][0]
    gal.rename("id4", "alice")
    assert "alice" in gal and "id4" not in gal and gal.search(e)[0][0].identity == "alice"
    gal.remove("id3")
    assert len(gal) == 19 and gal.search(e)[0][0].identity == "alice"
    gal.add("alice", unit(np.random.default_rng(5), 2))
    assert (gal._label == gal.identities.index("alice")).sum() == 4
    with pytest.raises(KeyError):
        gal.remove("nobody")
    with pytest.raises(ValueError, match="already exists"):
        gal.rename("alice", "id5")
    with pytest.raises(ValueError, match="\\(N, 128\\)"):
        gal.add("x", np.zeros((2, 64)))
    assert Gallery().search(e) == [[]]


def test_save_load_roundtrip(gal, tmp_path):
    p = tmp_path / "g.npz"
    gal.save(p)
    g2 = Gallery.load(p)
    assert g2.identities == gal.identities and g2.model_version == "m1"
    q = unit(np.random.default_rng(2), 3)
    assert g2.search(q, 3) == gal.search(q, 3)
    assert [f.name for f in tmp_path.iterdir()] == ["g.npz"]  # no temp files left


def test_crash_mid_save_keeps_previous(gal, tmp_path, monkeypatch):
    p = tmp_path / "g.npz"
    gal.save(p)
    before = p.read_bytes()
    gal.add("new", unit(np.random.default_rng(3), 1))

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(gm.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        gal.save(p)
    assert p.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ["g.npz"]


def test_damaged_truncated_foreign_files(gal, tmp_path):
    p = tmp_path / "g.npz"
    gal.save(p)
    data = p.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "empty": b"", "foreign": b"GIF89a not a gallery",
             "text": b"alice,0.1,0.2\n", "npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'"}
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the embeddings: CRC mismatch
    cases["flipped"] = bytes(flipped)
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(GalleryFormatError, match="damaged|not a maskfr gallery") as e:
            Gallery.load(tmp_path / name)
        assert "pickle" not in str(e.value), name  # numpy's advice to load user files unsafely
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(GalleryFormatError, match="no header"):
        Gallery.load(tmp_path / "other.npz")
    header = json.dumps({"format": gm.FORMAT, "version": gm.VERSION + 1}).encode()
    np.savez(tmp_path / "newer.npz", header=np.frombuffer(header, np.uint8))
    with pytest.raises(GalleryFormatError, match="newer"):
        Gallery.load(tmp_path / "newer.npz")
    with zipfile.ZipFile(p) as z:  # header promising more templates than stored
        arrays = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    h = json.loads(arrays["header"].tobytes())
    h["n_templates"] += 1
    arrays["header"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
    np.savez(tmp_path / "lying.npz", **arrays)
    with pytest.raises(GalleryFormatError, match="disagree"):
        Gallery.load(tmp_path / "lying.npz")
    with pytest.raises(FileNotFoundError):
        Gallery.load(tmp_path / "missing.npz")


def test_foreign_npz_with_odd_json_is_a_format_error(tmp_path):
    """npz files from other programs whose 'header'/'names' hold JSON of the wrong shape: a clear
    GalleryFormatError (exit 2 in the CLI), not an AttributeError/TypeError traceback or odd identities."""
    def js(o):
        return np.frombuffer(json.dumps(o).encode(), np.uint8)
    good = {"format": gm.FORMAT, "version": 1, "dim": 4, "model_version": "", "n_identities": 1, "n_templates": 1}
    body = {"embeddings": np.ones((1, 4), np.float32), "labels": np.zeros(1, np.int64)}
    cases = {"header_list": {"header": js([1, 2])},
             "version_str": {"header": js(dict(good, version="2"))},
             "names_nested": dict(body, header=js(good), names=js([[1]])),
             "names_int": dict(body, header=js(good), names=js([7])),
             "names_dict": dict(body, header=js(good), names=js({"a": 1}))}
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(GalleryFormatError, match="damaged|not a maskfr gallery"):
            Gallery.load(tmp_path / f"{name}.npz")


def test_top_k_must_be_positive(gal):
    """top_k=0 used to return no matches (a known face came out unknown), top_k=-1 a wrong single match."""
    q = gal._emb[0]
    for bad in (0, -1, -5, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            gal.search(q, bad)
    assert len(gal.search(q, np.int64(2))[0]) == 2


def test_save_keeps_file_mode(gal, tmp_path):
    """mkstemp's 0600 used to replace the gallery's mode on every save, locking out other readers."""
    import os
    p = tmp_path / "g.npz"
    old = os.umask(0o022)
    try:
        gal.save(p)
        assert p.stat().st_mode & 0o777 == 0o644
        p.chmod(0o640)
        gal.save(p)
        assert p.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_pickle_is_never_loaded(tmp_path):
    np.savez(tmp_path / "evil.npz", header=np.array([{"format": gm.FORMAT}], dtype=object))
    with pytest.raises(GalleryFormatError):
        Gallery.load(tmp_path / "evil.npz")


def test_faiss_gives_same_ranking(gal):
    pytest.importorskip("faiss")
    q = unit(np.random.default_rng(4), 5)
    ref = gal.search(q, 4)
    gal.index = "faiss"
    got = gal.search(q, 4)
    for a, b in zip(got, ref):
        assert [m.identity for m in a] == [m.identity for m in b]
        np.testing.assert_allclose([m.similarity for m in a], [m.similarity for m in b], atol=1e-5)


def test_auto_index_switches_at_measured_size(monkeypatch, gal):
    assert gal.backend() == "numpy"
    monkeypatch.setattr(gm, "FAISS_MIN_SIZE", 10)
    assert gal.backend() == ("faiss" if gm._faiss() is not None else "numpy")


def test_concurrent_search_and_edits(gal):
    q = unit(np.random.default_rng(6), 64)
    serial = [gal.search(x, 3) for x in q]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda x: gal.search(x, 3), q)) == serial

    def churn(i):  # add/remove a temporary identity while others search
        gal.add(f"tmp{i}", -q[0])
        gal.remove(f"tmp{i}")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(churn, range(32)))
    assert len(gal) == 20 and [gal.search(x, 3) for x in q] == serial


def test_mask_flags_are_kept_and_old_files_read_as_unknown(tmp_path):
    g = Gallery(4)
    e = np.eye(4, dtype=np.float32)
    g.add("a", e[:2], masked=[True, False])
    g.add("b", e[2], masked=True)
    g.add("c", e[3])
    with pytest.raises(ValueError, match="one per embedding"):
        g.add("d", e[:2], masked=[True])
    g.remove("a")
    g.save(tmp_path / "g.npz")
    h = Gallery.load(tmp_path / "g.npz")
    assert [(m.identity, m.masked) for m in h.search(e[2] + e[3], 2)[0]] == [("b", True), ("c", None)]
    h.add("a", e[:2], masked=[True, False])  # several templates per identity: the best one's flag
    assert h.search(e[1], 1)[0][0] == gm.Match("a", 1.0, False)
    with np.load(tmp_path / "g.npz") as z:  # a file written before the flags
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if k != "masked"})
    assert [m.masked for m in Gallery.load(tmp_path / "old.npz").search(e[2], 2)[0]] == [None, None]


def test_rename_and_save_refuse_what_would_not_load(gal, tmp_path):
    """rename() to a non-string was stored, and the saved gallery then failed to load as "damaged"; a save into a
    missing folder named a temporary file the caller never gave."""
    for bad in (5, ["a"], None, ""):
        with pytest.raises(ValueError, match="non-empty string"):
            gal.rename("id4", bad)
    gal.save(tmp_path / "g.npz")
    assert Gallery.load(tmp_path / "g.npz").identities == gal.identities
    with pytest.raises(FileNotFoundError, match=r"cannot save the gallery .*g\.npz: folder .*no does not exist$"):
        gal.save(tmp_path / "no" / "g.npz")
