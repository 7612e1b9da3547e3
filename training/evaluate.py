"""LFW verification on unmasked and synthetic-masked faces, plus detection rates.

Three settings per model: unmasked<->unmasked, masked<->unmasked (first image of
each pair masked) and masked<->masked. Alignment uses landmarks found on the
unmasked image ("oracle" alignment) so recognition is measured on its own; the
"end-to-end" rows instead score a pair -inf when dlib's detector misses either
face, so detection failures show up as errors and are never dropped.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np

from maskfr.metrics import calibrate, paired_comparison, roc, verification_report
from maskfr.training.data import LFW, Pair

SETTINGS = {"unmasked-unmasked": (False, False), "masked-unmasked": (True, False), "masked-masked": (True, True)}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N,4) boxes (l, t, r, b), row by row."""
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def detection_report(cache: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """How often dlib HOG finds the face, unmasked and masked (IoU >= 0.5 with the unmasked box)."""
    found = cache["found"][rows]
    hit_m = cache["found_masked"][rows] & (box_iou(cache["box"][rows], cache["box_masked"][rows]) >= 0.5) & found
    return {"images": int(len(rows)), "found_unmasked": int(found.sum()), "rate_unmasked": float(found.mean()),
            "found_masked": int(hit_m.sum()), "rate_masked": float(hit_m.sum() / max(found.sum(), 1))}


def pair_index(pairs: list[Pair], paths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cache rows of each pair's two images, and the pairs' labels and folds: (ia, ib, same, folds)."""
    pos = {p: i for i, p in enumerate(paths)}
    missing = [p.a for p in pairs if p.a not in pos] + [p.b for p in pairs if p.b not in pos]
    if missing:
        raise KeyError(f"{len(missing)} pair images are not in the cache, e.g. {missing[0]}")
    return (np.array([pos[p.a] for p in pairs]), np.array([pos[p.b] for p in pairs]),
            np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))


def evaluate(embed: Callable[[bool], np.ndarray], cache: dict[str, np.ndarray], pairs: list[Pair],
             out_dir: str | Path | None = None, name: str = "model") -> dict:
    """Verification report for every setting. ``embed(masked)`` returns L2-normalised embeddings of
    every cached face (masked or not), row-aligned with the cache."""
    ia, ib, same, folds = pair_index(pairs, cache["path"])
    emb = {False: embed(False), True: embed(True)}
    detected = {False: cache["found"],
                True: cache["found_masked"] & (box_iou(cache["box"], cache["box_masked"]) >= 0.5)}
    report = {"model": name, "pairs": int(len(pairs)), "folds": sorted(int(f) + 1 for f in np.unique(folds)),
              "detection": detection_report(cache, np.unique(np.r_[ia, ib])), "settings": {}}
    curves = {}
    for setting, scores in setting_scores(emb, ia, ib).items():
        ma, mb = SETTINGS[setting]
        r = verification_report(scores, same, folds)
        e2e = np.where(detected[ma][ia] & detected[mb][ib], scores, -np.inf)
        r["end_to_end"] = verification_report(e2e, same, folds)
        report["settings"][setting] = r
        curves[setting] = roc(scores, same)
    counts = np.unique(cache["identity"], return_counts=True)[1]
    if len(counts) > 1 and counts.max() > 1:  # some person with two photos, and someone else
        report["dense_far1e-3"] = dense_tar(emb, cache["identity"])
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^\w.+-]+", "_", name)  # a row name may hold spaces or slashes
        (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
        _plot_roc(curves, out / f"{stem}_roc.png", name)
    return report


def setting_scores(emb: dict[bool, np.ndarray], ia: np.ndarray, ib: np.ndarray) -> dict[str, np.ndarray]:
    """Cosine score of every pair in each setting; ``emb[masked]`` are the cache's L2-normalised embeddings."""
    return {setting: np.sum(emb[ma][ia] * emb[mb][ib], axis=1).astype(np.float64)
            for setting, (ma, mb) in SETTINGS.items()}


def compare(emb_a: dict[bool, np.ndarray], emb_b: dict[bool, np.ndarray], cache: dict[str, np.ndarray],
            pairs: list[Pair]) -> dict[str, dict]:
    """Model A against model B on the same pairs, per setting (:func:`maskfr.metrics.paired_comparison`)."""
    ia, ib, same, folds = pair_index(pairs, cache["path"])
    sa, sb = setting_scores(emb_a, ia, ib), setting_scores(emb_b, ia, ib)
    return {setting: paired_comparison(sa[setting], sb[setting], same, folds) for setting in SETTINGS}


def comparison_rows(cmp: dict[str, dict]) -> list[str]:
    """Markdown table of :func:`compare`, header included."""
    rows = ["| setting | A - B accuracy, points | folds A better / B better | pairs only A right / only B right "
            "| McNemar p |", "|---|---|---|---|---|"]
    for setting, c in cmp.items():
        rows.append(f"| {setting} | {100 * c['difference']:+.2f} (fold std {100 * np.std(c['fold_differences']):.2f}) "
                    f"| {c['folds_a_better']} / {c['folds_b_better']} | {c['a_only_correct']} / {c['b_only_correct']} "
                    f"| {c['mcnemar_p']:.2g} |")
    return rows


def _plot_roc(curves: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4))
    for setting, (far, tar, _) in curves.items():
        ax.plot(np.maximum(far, 1e-4), tar, label=setting)
    ax.set(xscale="log", xlabel="FAR", ylabel="TAR", title=title, xlim=(1e-4, 1), ylim=(0, 1.01))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_rows(report: dict) -> list[str]:
    """One table row per setting: accuracy ± std, TAR@FAR, end-to-end accuracy."""
    rows = []
    for setting, r in report["settings"].items():
        rows.append(f"| {report['model']} | {setting} | {100 * r['accuracy']:.2f} ± {100 * r['std']:.2f} | "
                    f"{100 * r['tar@far=0.01']:.2f} | {100 * r['tar@far=0.001']:.2f} | "
                    f"{100 * r['end_to_end']['accuracy']:.2f} |")
    return rows


TABLE_HEADER = ["| model | setting | accuracy % (± over folds) | TAR@FAR1e-2 % | TAR@FAR1e-3 % | end-to-end acc % |",
                "|---|---|---|---|---|---|"]


def recommended_thresholds(embed: Callable[[bool], np.ndarray], cache: dict[str, np.ndarray],
                           fars: tuple[float, ...] = (1e-2, 1e-3)) -> dict:
    """Similarity thresholds for target FARs, from every face of ``cache`` masked AND unmasked.

    Deployed models meet both, so masked and unmasked embeddings are pooled under their
    identity and every pair among them counts (impostor pairs sampled, see ``calibrate``); and per
    comparison condition (``far=1e-3,u-u`` / ``,m-u`` / ``,m-m``), from that condition's pairs alone, which the
    runtime applies when it knows both faces' mask flags.
    Use people the model was NOT trained on: it separates its training people better than it will
    separate strangers, so thresholds from them come out too low (too permissive).
    """
    names, labels = np.unique(cache["identity"], return_inverse=True)
    emb = np.concatenate([embed(False), embed(True)])
    flags = np.r_[np.zeros(len(labels), bool), np.ones(len(labels), bool)]
    reps = [calibrate(emb, np.r_[labels, labels], far, masked=flags) for far in fars]
    key = lambda far: "far=" + f"{far:.0e}".replace("e-0", "e-")  # noqa: E731  "far=1e-3", as the runtime reads
    return {"thresholds": {**{key(r["far"]): round(r["threshold"], 4) for r in reps},
                           **{f"{key(r['far'])},{c}": round(rc["threshold"], 4)
                              for r in reps for c, rc in r["by_condition"].items()}},
            "tar": {key(r["far"]): round(r["tar"], 4) for r in reps}, "faces": int(len(labels)),
            "identities": int(len(names)), "impostor_pairs": reps[0]["impostor_pairs"],
            "genuine_pairs": reps[0]["genuine_pairs"]}


def dense_tar(emb: dict[bool, np.ndarray], identities: np.ndarray, far: float = 1e-3, impostors: int = 2_000_000,
              seed: int = 0) -> dict[str, dict]:
    """TAR at ``far`` per condition over every genuine pair of these faces, each unmasked and masked (a photo never
    paired with its own masked copy), against impostor pairs drawn as :func:`maskfr.metrics.calibration_pairs` does
    (``impostors`` of them): the 3,000 pairs' TAR at FAR 1e-3 hangs on the one or two highest of their 1,500 impostor
    scores, and FAR 1e-3 is where the runtime decides."""
    labels = np.unique(identities, return_inverse=True)[1]
    n = len(labels)
    rep = calibrate(np.concatenate([emb[False], emb[True]]), np.r_[labels, labels], far, impostors, seed,
                    masked=np.r_[np.zeros(n, bool), np.ones(n, bool)], photos=np.r_[np.arange(n), np.arange(n)])
    return {c: {k: r[k] for k in ("tar", "threshold", "genuine_pairs", "impostor_pairs")}
            for c, r in rep["by_condition"].items()}


def dense_line(name: str, dense: dict[str, dict], faces: int) -> str:
    """:func:`dense_tar` in one printed line."""
    rates = (f"{c} {100 * d['tar']:.1f} % ({d['genuine_pairs']:,} / {d['impostor_pairs']:,})" for c, d in dense.items())
    return (f"{name}: TAR at FAR 1e-3 over the {faces} faces, unmasked and masked (every genuine pair / sampled "
            "impostor pairs): " + ", ".join(rates))


def lfw_pairs(root: str | Path, folds: list[int] | None = None) -> list[Pair]:
    """View-2 pairs, optionally only some folds (1-based, as people.txt numbers them)."""
    pairs = LFW(root).pairs()
    return pairs if folds is None else [p for p in pairs if p.fold + 1 in folds]
