import numpy as np

from maskfr.metrics import best_threshold, kfold_accuracy, roc, tar_at_far, verification_report


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
