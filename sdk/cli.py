"""``maskfr`` command line. Sub-commands import their heavy dependencies lazily."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _folds(text: str) -> list[int]:
    """``6-10`` or ``6``: LFW folds, numbered 1-10 as pairs.txt and people.txt number them."""
    lo, dash, hi = text.partition("-")
    try:  # "6-" read as fold 6
        folds = list(range(int(lo), int(hi if dash else lo) + 1))
    except ValueError:
        folds = []
    # "11" or "5-1" matched no pair (a confusing "need at least one array" later), and "0" read fold 10
    if not folds or folds[0] < 1 or folds[-1] > 10:
        raise ValueError(f"--folds {text!r}: give one of LFW's folds 1-10 or a range of them, e.g. 6 or 6-10")
    return folds


def cmd_mask(a: argparse.Namespace) -> int:
    from maskfr.training.mask_folder import mask_folder
    n, skipped = mask_folder(a.src, a.dst, a.masks, seed=a.seed)
    print(json.dumps({"masked": n, "skipped_no_face": skipped}) if a.json else
          f"masked {n} images into {a.dst}; {len(skipped)} without a detectable face (or unreadable) were copied "
          "unmasked")
    return 0


# MaskSynth's settings for each --mask-style: the share of MaskTheFace template masks (the rest are procedural
# shapes and fills), of masks worn below the nose, of scarves, gaiters and bandanas instead of masks, and of
# sunglasses worn with the mask
MASK_STYLES = {"mixed": {"p_template": 0.5}, "template": {"p_template": 1.0}, "procedural": {"p_template": 0.0},
               "below-nose": {"p_template": 0.5, "p_below_nose": 1.0}, "scarf": {"p_template": 0.0, "p_scarf": 1.0},
               "sunglasses": {"p_template": 0.5, "p_sunglasses": 1.0}}


def cmd_eval(a: argparse.Namespace) -> int:
    import numpy as np

    from maskfr.training import cache as fc
    from maskfr.training.data import LFW
    from maskfr.training.embedders import dlib_embedder, dlib_port_embedder, onnx_embedder
    from maskfr.training.evaluate import (TABLE_HEADER, compare, comparison_rows, dense_line, dense_tar, evaluate,
                                          lfw_pairs, markdown_rows)
    cache_path = Path(a.cache) if a.cache else fc.lfw_cache_path(a.mask_style)
    if MASK_STYLES[a.mask_style]["p_template"] > 0 and not a.masks and not cache_path.exists():
        raise ValueError(f"building the cache with --mask-style {a.mask_style} draws MaskTheFace templates: give their "
                         "folder with --masks (or use --mask-style procedural)")
    folds = _folds(a.folds)
    if len(folds) < 2:  # with one fold there is no other to pick its threshold on: every accuracy read 50 %
        raise ValueError(f"--folds {a.folds}: each fold's threshold is picked on the other folds, so give at least "
                         "two, e.g. 6-10")
    pairs = lfw_pairs(a.lfw, folds)
    if not pairs:
        raise ValueError(f"no pairs of folds {a.folds} in {Path(a.lfw) / 'pairs.txt'}")
    # opened before the cache is built (up to half an hour on a fresh machine): a mistyped model is named at once
    makers = {m: {"dlib": dlib_embedder, "dlib-port": dlib_port_embedder}.get(m) or onnx_embedder(m)
              for m in (a.model, a.baseline) if m}
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    wanted = set(need)
    people = sorted({Path(p).parent.name for p in need})
    samples = [s for s in LFW(a.lfw).samples(people) if s.path in wanted]  # an existing cache must hold these
    if a.cache is None and a.mask_style == "mixed" and not cache_path.exists():
        # masks are seeded by cache row: the default mixed cache is training's (all of LFW, in its order), so the
        # masks, and the README's figures, are the same whichever command builds it
        samples = LFW(a.lfw).samples()
    fc.build(samples, cache_path, a.masks, **MASK_STYLES[a.mask_style])
    cache = fc.load(cache_path)
    rows = np.flatnonzero(np.isin(cache["path"], need))
    sub = {k: v[rows] for k, v in cache.items()}

    def embeddings(model: str) -> dict:
        embed = makers[model](sub)
        return {masked: embed(masked) for masked in (False, True)}

    emb = embeddings(a.model)
    name = a.name or Path(a.model).stem
    report = evaluate(emb.__getitem__, sub, pairs, a.out, name)
    if a.baseline:
        base = embeddings(a.baseline)
        report["baseline"] = a.baseline
        report["vs_baseline"] = compare(emb, base, sub, pairs)
        if "dense_far1e-3" in report:
            report["baseline_dense_far1e-3"] = dense_tar(base, sub["identity"])
    if a.json:
        print(json.dumps(report))
    else:
        d = report["detection"]
        print(f"detection (dlib HOG): unmasked {d['found_unmasked']}/{d['images']} ({100 * d['rate_unmasked']:.1f} %),"
              f" masked {d['found_masked']}/{d['found_unmasked']} ({100 * d['rate_masked']:.1f} %)")
        print("\n".join(TABLE_HEADER + markdown_rows(report)))
        if "dense_far1e-3" in report:
            print("\n" + dense_line(name, report["dense_far1e-3"], len(rows)))
        if "baseline_dense_far1e-3" in report:
            print(dense_line(a.baseline, report["baseline_dense_far1e-3"], len(rows)))
        if a.baseline:
            print(f"\nA = {name}, B = {a.baseline}, same pairs, thresholds cross-validated per model\n")
            print("\n".join(comparison_rows(report["vs_baseline"])))
    return 0


def cmd_thresholds(a: argparse.Namespace) -> int:
    import numpy as np

    from maskfr.training import cache as fc
    from maskfr.training.data import LFW
    from maskfr.training.embedders import onnx_embedder
    from maskfr.fileio import write_then_rename
    from maskfr.training.evaluate import recommended_thresholds
    folds = LFW(a.lfw).people_folds()
    wanted = _folds(a.folds)
    if wanted[-1] > len(folds):
        raise ValueError(f"--folds {a.folds}: {Path(a.lfw) / 'people.txt'} has {len(folds)} folds")
    embedder = onnx_embedder(a.model)  # a mistyped model named before the cache is read
    people = sorted({p for f in wanted for p in folds[f - 1]})
    cache_path = Path(a.cache) if a.cache else fc.lfw_cache_path()
    if not cache_path.exists():
        raise ValueError(f"no cache {cache_path}: 'maskfr train' builds the one of every LFW image there")
    # every face of these people, as the README's figures count them: a cache of 'maskfr eval' holds only its
    # pairs' images, and thresholds from it were computed on about half of the faces, in silence
    lacking = fc.missing(cache_path, LFW(a.lfw).samples(people))
    if lacking:
        raise ValueError(f"the cache {cache_path} lacks {len(lacking)} images of the people of folds {a.folds}, "
                         f"e.g. {lacking[0]} ('maskfr eval' keeps only its pairs' images; 'maskfr train' caches "
                         "every LFW image)")
    cache = fc.load(cache_path)
    rows = np.flatnonzero(np.isin(cache["identity"], people))
    sub = {k: v[rows] for k, v in cache.items()}
    rep = recommended_thresholds(embedder(sub), sub)
    rep.update(model=str(a.model), folds=a.folds)
    write_then_rename(Path(a.output), (json.dumps(rep["thresholds"]) + "\n").encode())
    print(json.dumps(rep))
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from maskfr.training.train import train_from_args
    return train_from_args(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskfr", description="Masked face recognition SDK", epilog="Exit codes: 0 ok "
                                "(same person, identified), 1 no (not the same person, nobody identified; embed: an "
                                "image without a face), 2 bad input (verify: an image without a face) or a missing "
                                "component; with --json a failure prints "
                                '{"error": ..., "exit_code": 2}.')
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mask", help="make a masked copy of a root/<identity>/*.jpg dataset folder")
    m.add_argument("src", help="root/<identity>/*.jpg folder to copy")
    m.add_argument("dst", help="folder for the masked copy (outside SRC)")
    m.add_argument("--masks", help="MaskTheFace templates folder (masks.cfg); procedural masks only if omitted")
    m.add_argument("--seed", type=int, default=0, help="random seed of the masks (default 0)")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(fn=cmd_mask)
    e = sub.add_parser("eval", help="LFW verification, unmasked and masked, with detection rates")
    e.add_argument("--model", default="dlib", help="'dlib' (the teacher, through dlib), 'dlib-port' (the same "
                   "network, our batched torch port) or a path to an ONNX student")
    e.add_argument("--name", help="row name in the table (default: model file stem)")
    e.add_argument("--lfw", required=True, help="LFW root (images_*/, pairs.txt, people.txt)")
    e.add_argument("--masks", help="MaskTheFace templates folder: builds the cache, and a cache built with one is "
                   "reused only when given it again")
    e.add_argument("--folds", default="1-10", help="pairs.txt folds to evaluate, e.g. 6-10")
    e.add_argument("--mask-style", choices=list(MASK_STYLES), default="mixed",
                   help="masks drawn on the test faces: half MaskTheFace templates and half procedural (mixed, "
                   "as in training), or one family only, e.g. to test a model trained without it; occluders the "
                   "packaged model never trained on: masks worn below the nose (below-nose), scarves, gaiters and "
                   "bandanas (scarf), or masks with sunglasses (sunglasses)")
    e.add_argument("--cache", help="aligned-face cache (.npz); default lfw.npz, or lfw-<style>.npz for a single "
                   "--mask-style, in the cache folder ($MASKFR_CACHE, else ~/.cache/maskfr)")
    e.add_argument("--out", default="eval_out", help="folder for the JSON report and ROC plot")
    e.add_argument("--baseline", help="a second model (same choices as --model) to compare with on the same "
                   "pairs: accuracy difference per fold and McNemar's exact test on the pairs they decide differently")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(fn=cmd_eval)
    h = sub.add_parser("thresholds", help="recommended similarity thresholds (FAR 1e-2, 1e-3) of an ONNX model, "
                       "from masked and unmasked faces of LFW people the model was NOT trained on")
    h.add_argument("--model", required=True, help="ONNX student")
    h.add_argument("--lfw", required=True, help="LFW root (images_*/, people.txt)")
    h.add_argument("--folds", default="6-10", help="people.txt folds of people never trained on (default 6-10, "
                   "the held-out people of configs/g2d_*.py)")
    h.add_argument("--cache", help="aligned-face cache (.npz); default lfw.npz in the cache folder ($MASKFR_CACHE, "
                   "else ~/.cache/maskfr)")
    h.add_argument("-o", "--output", required=True, help="JSON file of thresholds, for 'maskfr export --thresholds'")
    h.set_defaults(fn=cmd_thresholds)
    t = sub.add_parser("train", help="train G2D (inpaint -> reformer -> classifier), resumable")
    t.add_argument("config", help="a configs/*.py file")
    t.add_argument("--lfw", required=True, help="LFW root (images_*/, pairs.txt, people.txt)")
    t.add_argument("--celeba", help="CelebA-style folder (images/ + identity.txt) added to training")
    t.add_argument("--masks", help="MaskTheFace templates folder")
    t.add_argument("--run", help="run folder (default runs/<config name> in the cache folder: $MASKFR_CACHE, else "
                   "~/.cache/maskfr)")
    t.add_argument("--set", action="append", help="override a config key, e.g. --set generative_pretraining=False")
    t.add_argument("--eval", action="store_true", help="evaluate on the held-out LFW folds when done")
    t.set_defaults(fn=cmd_train)
    from maskfr.cli_runtime import add_runtime_commands
    add_runtime_commands(sub)
    try:  # export commands need the export extra (and a source tree with export/); the runtime does not
        from maskfr.export.cli import add_export_commands
    except ImportError:
        pass
    else:
        add_export_commands(sub)
    return p


# the extras each command needs beyond the runtime's own install
EXTRAS = {"mask": "train", "eval": "train", "thresholds": "train", "train": "train", "export": "train,export",
          "quantize": "export", "build-engine": "export,trt", "export-triton": "export"}
# commands whose RuntimeErrors are answers about the input (TensorRT cannot parse or build the model, the export
# disagrees with torch) and whose ImportErrors name what to install (no TensorRT of the flavour asked for)
EXPORT_COMMANDS = ("export", "quantize", "build-engine", "export-triton")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ModuleNotFoundError as exc:  # a command whose extra is not installed: say which, not a traceback
        if args.cmd not in EXTRAS:
            raise
        message = f"{exc.name} is not installed; this command needs pip install 'maskfr[{EXTRAS[args.cmd]}]'"
    except (ValueError, OSError, KeyError) as exc:
        # OSError (a file given as a folder, an unreadable image, a full disk) is bad input, not "no match";
        # KeyError's str() would add quotes
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    except (RuntimeError, ImportError) as exc:
        if args.cmd not in EXPORT_COMMANDS:
            raise
        message = str(exc)
    print(f"maskfr {args.cmd}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):  # scripts reading --json get an object for failures too
        print(json.dumps({"error": message, "exit_code": 2}))
    return 2


if __name__ == "__main__":
    sys.exit(main())
