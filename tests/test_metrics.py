import numpy as np

from maskfr.metrics import best_threshold, kfold_accuracy, paired_comparison, roc, tar_at_far, verification_report


def test_best_threshold_hand_case():
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    t, acc = best_threshold(scores, same)
    # t in (0.6, 0.8) gets 5/6 (0.3 missed); t in (0.2, 0.3] gets 5/6 (0.6 false accept) -> first wins
    assert acc == 5 / 6
    assert 0.2 < t <= 0.8


def test_kfold_uses_other_folds_threshold():
    # fold 0 alone would pick a threshold between 0.5 and 0.9; fold 1 forces one in (0.3, 0.4]
    scores = np.array([0.9, 0.5, 0.4, 0.3])
    same = np.array([1, 0, 1, 0], bool)
    folds = np.array([0, 0, 1, 1])
    r = kfold_accuracy(scores, same, folds)
    # threshold from fold 1 (~0.35) applied to fold 0: 0.9 accepted (right), 0.5 accepted (wrong) -> 0.5
    # threshold from fold 0 (~0.7) applied to fold 1: 0.4 rejected (wrong), 0.3 rejected (right) -> 0.5
    assert r["fold_accuracies"] == [0.5, 0.5]
    assert r["accuracy"] == 0.5 and r["std"] == 0.0


def test_perfect_separation_and_unscored_pairs():
    scores = np.array([0.9, 0.8, -np.inf, 0.1, 0.2, 0.0])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    folds = np.array([0, 1, 0, 1, 0, 1])
    r = verification_report(scores, same, folds)
    assert r["n_unscored"] == 1
    # the undetected matched pair is always rejected: one error among 6 pairs
    assert abs(r["accuracy"] - 5 / 6) < 1e-9


def test_roc_and_tar_at_far():
    scores = np.array([0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    same = np.array([1, 0, 1, 1, 0, 1, 0, 0], bool)
    far, tar, thr = roc(scores, same)
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    t, th = tar_at_far(scores, same, 0.0)
    assert t == 0.25 and th == 0.9  # only the top score accepted before the first impostor
    t, _ = tar_at_far(scores, same, 0.25)
    assert t == 0.75  # one impostor (0.7) of four allowed -> accept down to 0.5


def test_paired_comparison_counts_discordant_pairs():
    # 2 folds of 10 pairs (5 same, 5 different); A separates every pair (0.9 vs 0.1).
    same = np.tile([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 2).astype(bool)
    folds = np.repeat([0, 1], 10)
    a = np.where(same, 0.9, 0.1)
    b = a.copy()
    b[:3] = 0.05  # B scores three matched pairs of fold 0 below every impostor
    # B's thresholds: from fold 1 (perfect) ~0.5 -> those 3 rejected; from fold 0 also ~0.5 (3 errors
    # there against 5 for any threshold under 0.05) -> fold 1 all right. A is right everywhere.
    r = paired_comparison(a, b, same, folds)
    assert r["a_only_correct"] == 3 and r["b_only_correct"] == 0
    assert np.allclose(r["fold_differences"], [0.3, 0.0]) and abs(r["difference"] - 0.15) < 1e-12
    assert r["folds_a_better"] == 1 and r["folds_b_better"] == 0
    assert r["mcnemar_p"] == 2 * 1 / 2 ** 3  # both tails of Bin(3, 1/2) at 0 and 3
    swapped = paired_comparison(b, a, same, folds)
    assert swapped["b_only_correct"] == 3 and swapped["mcnemar_p"] == r["mcnemar_p"]
    assert abs(swapped["difference"] + 0.15) < 1e-12
    assert paired_comparison(a, a, same, folds)["mcnemar_p"] == 1.0  # no discordant pair


def test_paired_comparison_exact_binomial_tail():
    # 10 discordant pairs, 9 won by A: p = 2 * (C(10,0) + C(10,1)) / 2^10
    n = 10
    same = np.ones(2 * n, bool)
    folds = np.repeat([0, 1], n)
    # all matched pairs: a threshold below every score accepts all (right); score -inf is always rejected
    a = np.where(np.arange(2 * n) == 0, -np.inf, 1.0)
    b = np.where(np.arange(2 * n) < 10, -np.inf, 1.0)
    b[0] = 1.0
    r = paired_comparison(a, b, same, folds)
    assert (r["a_only_correct"], r["b_only_correct"]) == (9, 1)
    assert abs(r["mcnemar_p"] - 2 * 11 / 1024) < 1e-15


def test_calibration_pairs_enumerate_few_and_draw_many():
    """Few faces: every pair but two copies of one photo. Many: every genuine pair still, impostors drawn (never
    enumerated: 100,000 faces would be 5 G pairs), and a threshold close to the exact one."""
    from maskfr.metrics import calibrate, calibration_pairs
    labels, photos = np.array([0, 0, 0, 1, 1, 0]), np.array([0, 1, 2, 3, 4, 0])  # face 5: a copy of face 0
    i, j = calibration_pairs(labels, photos)
    assert sorted(zip(i.tolist(), j.tolist())) == [(a, b) for a in range(6) for b in range(a + 1, 6) if (a, b) != (0, 5)]

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(100_000), 2)
    i, j = calibration_pairs(labels, max_impostors=50_000)
    gen = labels[i] == labels[j]
    assert gen.sum() == 100_000 and (i[gen] != j[gen]).all() and 49_000 < (~gen).sum() <= 50_000
    centres = rng.standard_normal((300, 32))
    e = np.repeat(centres, 4, 0) + 0.7 * rng.standard_normal((1200, 32))
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    exact = calibrate(e, np.repeat(np.arange(300), 4), 1e-2)  # 719,400 pairs: all of them
    drawn = calibrate(e, np.repeat(np.arange(300), 4), 1e-2, max_impostors=200_000)
    assert exact["impostor_pairs"] == 717_600 and drawn["genuine_pairs"] == exact["genuine_pairs"] == 1800
    assert abs(drawn["threshold"] - exact["threshold"]) < 0.01 and abs(drawn["tar"] - exact["tar"]) < 0.02
