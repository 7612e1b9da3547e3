import json

import numpy as np

from maskfr.training.data import Pair
from maskfr.training.evaluate import box_iou, compare, comparison_rows, evaluate


def _fake_cache(n_people=20, per=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, 16))
    paths, ids, clean, masked = [], [], [], []
    for p in range(n_people):
        for k in range(per):
            paths.append(f"/x/p{p}_{k}.jpg")
            ids.append(f"p{p}")
            clean.append(centres[p] + 0.2 * rng.normal(size=16))
            masked.append(centres[p] + 1.5 * rng.normal(size=16))  # masks hurt
    n = len(paths)
    box = np.tile([10, 10, 50, 50], (n, 1)).astype(np.float32)
    box_m = box.copy()
    box_m[::4] = -1  # every 4th masked face is missed by the detector
    cache = {"path": np.array(paths), "identity": np.array(ids), "found": np.ones(n, bool),
             "found_masked": box_m[:, 0] >= 0, "box": box, "box_masked": box_m}
    norm = lambda x: np.array(x) / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return cache, norm(clean), norm(masked)


def _pairs(cache, n=200, seed=1):
    rng = np.random.default_rng(seed)
    ids, out = cache["identity"], []
    for i in range(n):
        a = rng.integers(len(ids))
        cands = np.flatnonzero((ids == ids[a]) if i % 2 == 0 else (ids != ids[a]))
        cands = cands[cands != a]
        out.append(Pair(cache["path"][a], cache["path"][rng.choice(cands)], i % 2 == 0, i * 10 // n))
    return out


def test_evaluate_reports_every_setting(tmp_path):
    cache, clean, masked = _fake_cache()
    pairs = _pairs(cache)
    rep = evaluate(lambda m: masked if m else clean, cache, pairs, tmp_path, "fake")
    s = rep["settings"]
    assert set(s) == {"unmasked-unmasked", "masked-unmasked", "masked-masked"}
    assert s["unmasked-unmasked"]["accuracy"] > 0.95
    assert s["masked-masked"]["accuracy"] < s["masked-unmasked"]["accuracy"] < s["unmasked-unmasked"]["accuracy"]
    # end-to-end scoring counts missed masked faces as rejections: never better than oracle alignment
    assert s["masked-masked"]["end_to_end"]["n_unscored"] > 0
    assert s["unmasked-unmasked"]["end_to_end"]["n_unscored"] == 0
    assert rep["detection"]["rate_unmasked"] == 1.0 and 0.7 < rep["detection"]["rate_masked"] < 0.8
    assert json.loads((tmp_path / "fake.json").read_text())["pairs"] == len(pairs)
    assert (tmp_path / "fake_roc.png").stat().st_size > 1000


def test_compare_finds_the_better_model_on_masked_pairs():
    cache, clean, masked = _fake_cache()
    pairs = _pairs(cache)
    # B: masked faces much noisier than A's, unmasked faces identical -> only masked settings differ
    rng = np.random.default_rng(5)
    worse = masked + 2.0 * rng.normal(size=masked.shape)
    worse /= np.linalg.norm(worse, axis=1, keepdims=True)
    cmp = compare({False: clean, True: masked}, {False: clean, True: worse}, cache, pairs)
    u = cmp["unmasked-unmasked"]
    assert u["difference"] == 0 and u["a_only_correct"] == u["b_only_correct"] == 0 and u["mcnemar_p"] == 1.0
    m = cmp["masked-masked"]
    assert m["difference"] > 0.05 and m["a_only_correct"] > m["b_only_correct"] and m["mcnemar_p"] < 0.05
    rows = comparison_rows(cmp)
    assert len(rows) == 5 and rows[2].startswith("| unmasked-unmasked | +0.00")


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [-1, -1, -1, -1]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [50 / 150, 0.0])


def test_recommended_thresholds_pool_masked_and_unmasked():
    from maskfr.training.evaluate import recommended_thresholds
    cache, clean, masked = _fake_cache(n_people=60, per=4)
    rep = recommended_thresholds(lambda m: masked if m else clean, cache)
    thr = rep["thresholds"]
    conditions = {f"{far},{c}" for far in ("far=1e-2", "far=1e-3") for c in ("u-u", "m-u", "m-m")}
    assert set(thr) == {"far=1e-2", "far=1e-3"} | conditions and thr["far=1e-2"] <= thr["far=1e-3"]
    assert rep["faces"] == 240 and rep["identities"] == 60
    # every pair among the 480 embeddings: masked and unmasked copies of a face are one identity
    emb = np.concatenate([clean, masked])
    lab = np.r_[cache["identity"], cache["identity"]]
    i, j = np.triu_indices(len(lab), 1)
    impostor = np.einsum("nd,nd->n", emb[i], emb[j])[lab[i] != lab[j]]
    assert rep["impostor_pairs"] == len(impostor) and rep["genuine_pairs"] == int((lab[i] == lab[j]).sum())
    assert (impostor >= thr["far=1e-3"]).mean() <= 1e-3 + 1e-4  # thresholds are rounded to 4 decimals
    assert (impostor >= thr["far=1e-2"]).mean() <= 1e-2 + 1e-4
    # per condition: each threshold meets its FAR on that condition's impostors (every ordered pair of
    # different people's faces; the thresholds come from a random sample of them)
    same = lab[:240, None] == lab[None, :240]
    for c, x, y in (("u-u", clean, clean), ("m-u", masked, clean), ("m-m", masked, masked)):
        imp = (x @ y.T)[~same]
        for far in (1e-2, 1e-3):
            assert (imp >= thr[f"far={far:.0e}".replace("e-0", "e-") + f",{c}"]).mean() <= far * 1.25, (c, far)


def test_embedding_cache_keyed_by_pixels(tmp_path, monkeypatch):
    """Two caches of the same images with other masks drawn must not share cached embeddings."""
    from maskfr.training import embedders
    monkeypatch.setattr(embedders, "CACHE_ROOT", tmp_path)
    paths = np.array(["/x/a.jpg", "/x/b.jpg"])
    first = {"path": paths, "chip150_masked": np.array([[[10, 20]], [[10, 20]]], np.uint8)}
    other = {"path": paths, "chip150_masked": np.array([[[10, 20]], [[20, 10]]], np.uint8)}
    calls = []

    def compute(chips):
        calls.append(len(chips))
        return chips.reshape(len(chips), -1).astype(np.float32)

    a = embedders._cached("t", first, compute, "chip150_masked")
    again = embedders._cached("t", first, compute, "chip150_masked")
    b = embedders._cached("t", other, compute, "chip150_masked")
    assert calls == [2, 2]  # the repeat came from disk, the other pixels were computed
    np.testing.assert_array_equal(a, again)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[1], b[1])


def test_dense_tar_pairs_every_face_but_never_a_photo_with_its_own_masked_copy():
    """Two people, three photos each, unmasked and masked: every genuine pair counts once per condition except a
    photo with its own masked copy (an easy pair no deployment meets); impostor pairs are all counted while few, drawn
    at random past ``impostors``."""
    from maskfr.training.evaluate import dense_tar
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    ids = np.array(["a"] * 3 + ["b"] * 3)
    unmasked = basis[[0, 0, 0, 1, 1, 1]]
    masked = basis[[2, 3, 4, 5, 6, 7]] * 0.6 + unmasked * 0.8  # each copy: 0.8 like its own person, and itself
    d = dense_tar({False: unmasked, True: masked}, ids, far=0.5, impostors=4000)
    # u-u: 3 pairs per person; m-u: a photo's copy with the person's 2 other photos (12), never its own (6 more)
    assert [d[c]["genuine_pairs"] for c in ("u-u", "m-u", "m-m")] == [6, 12, 6]
    # 66 pairs of 12 rows, fewer than 4000: every impostor pair, 6 x 6, split 1:2:1 between the conditions
    assert [d[c]["impostor_pairs"] for c in ("u-u", "m-u", "m-m")] == [9, 18, 9]
    drawn = dense_tar({False: unmasked, True: masked}, ids, far=0.5, impostors=60)
    assert [drawn[c]["genuine_pairs"] for c in ("u-u", "m-u", "m-m")] == [6, 12, 6]
    # 60 random pairs, kept when the people differ: about half of them
    assert 15 < sum(drawn[c]["impostor_pairs"] for c in drawn) < 45
    assert d["u-u"]["tar"] == 1.0 and d["m-u"]["tar"] == 1.0  # genuine 1.0 and 0.8 against impostors at 0
