"""Train the runtime's mask / no-mask flag: a tiny MLP on ``maskfr.recognizer.mask_features``.

Data: the aligned-face cache (``img112`` unmasked, ``img112_masked`` with a synthetic mask), each crop
also as a monochrome sensor gives it (night cameras in infrared mode), where colour cues are gone.
People of LFW ``people.txt`` folds 1-5 train it, folds 6-10 measure it, so the reported
accuracy is on unseen people. The result is a few numbers in ``sdk/models/mask_classifier.json``.

    python -m maskfr.training.mask_classifier --lfw ../shared/data/lfw

``--cache`` more than once pools caches with other masks (e.g. worn below the nose, ``maskfr eval --mask-style
below-nose --folds 1-5 --cache ...``), split by the same people.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from itertools import product
from pathlib import Path

import numpy as np

from maskfr.align import to_input
from maskfr.recognizer import MASK_CLASSIFIER, MaskClassifier, mask_features
from maskfr.training.cache import lfw_cache_path
from maskfr.training.data import LFW
from maskfr.training.train import to_grey


def features(crops: np.ndarray, chunk: int = 512, grey: bool = False) -> np.ndarray:
    """Features of RGB crops, optionally made monochrome first (:func:`~maskfr.training.train.to_grey`)."""
    return np.concatenate([mask_features(to_input(to_grey(c) if grey else c))
                           for c in (crops[i:i + chunk] for i in range(0, len(crops), chunk))])


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 32, epochs: int = 60, lr: float = 3e-3,
            weight_decay: float = 1e-3, seed: int = 0) -> list[dict]:
    """Standardised features -> ``MaskClassifier`` layers (features -> ``hidden`` ReLU -> one logit).

    A logistic regression on the same features flags 95-96 % of grey masked faces at best; one hidden
    layer of 32 reaches 98 % (benchmarks/RESULTS.md, "Night cameras").
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=weight_decay)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 256):
            idx = perm[i:i + 256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [{"weights": lin.weight.detach().double().numpy().T.round(6).tolist(),
             "bias": lin.bias.detach().double().numpy().round(6).tolist()} for lin in (net[0], net[2])]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lfw", required=True, help="LFW root (people.txt)")
    p.add_argument("--cache", action="append", help="aligned-face cache(s) (default: the mixed-mask LFW cache)")
    p.add_argument("--out", default=str(MASK_CLASSIFIER))
    a = p.parse_args(argv)
    folds = LFW(a.lfw).people_folds()
    train_people, test_people = set(sum(folds[:5], [])), set(sum(folds[5:], []))
    parts = defaultdict(list)  # (masked, grey, split) -> features, one array per cache
    caches = a.cache or [str(lfw_cache_path())]
    for cache in caches:
        with np.load(cache, allow_pickle=False) as z:
            person = np.array([Path(s).parent.name for s in z["path"]])
            rows = {split: np.flatnonzero(np.isin(person, list(people)))
                    for split, people in (("train", train_people), ("test", test_people))}
            for masked, key in ((0, "img112"), (1, "img112_masked")):
                arr = z[key]
                for (split, r), grey in product(rows.items(), (False, True)):
                    if len(r):  # a cache may hold training people only
                        parts[masked, grey, split].append(features(arr[r], grey=grey))
                del arr
    feats = {(m, g): {s: np.concatenate(parts[m, g, s]) for s in ("train", "test")}
             for m, g in product((0, 1), (False, True))}
    x = np.concatenate([f["train"] for f in feats.values()])
    y = np.concatenate([np.full(len(f["train"]), m, float) for (m, _), f in feats.items()])
    mean, std = x.mean(0, dtype=np.float64).round(6), (x.std(0, dtype=np.float64) + 1e-6).round(6)  # as stored
    layers = fit_mlp((x - mean) / std, y)
    clf = MaskClassifier(mean, std, layers)

    def accuracy(xs: np.ndarray, masked: "int | np.ndarray") -> float:
        return float(((clf.proba_from_features(xs) >= clf.threshold) == masked).mean())
    test = {f"test_accuracy_{'masked' if m else 'unmasked'}{'_grey' if g else ''}": accuracy(f["test"], m)
            for (m, g), f in feats.items()}
    info = {"train_accuracy": accuracy(x, y), "test_accuracy": float(np.mean(list(test.values()))), **test,
            "n_train_images": len(feats[0, False]["train"]), "n_test_images": len(feats[0, False]["test"]),
            "data": f"LFW aligned-face caches ({', '.join(Path(c).name for c in caches)}), synthetic masks, each crop "
                    "also in grey; train people.txt folds 1-5, test folds 6-10"}
    out = {"mean": mean.tolist(), "std": std.tolist(), "layers": layers, "threshold": clf.threshold, **info}
    Path(a.out).write_text(json.dumps(out) + "\n")
    print(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    main()
