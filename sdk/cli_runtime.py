"""Runtime sub-commands of ``maskfr``: embed, verify, enroll, identify, calibrate, bench, demo.

Exit codes scripts can rely on: the epilog of ``maskfr --help`` (:func:`maskfr.cli.build_parser`).
``--json`` prints one JSON object on stdout; progress goes to stderr and only for long loops.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _recognizer(a: argparse.Namespace) -> Any:
    from maskfr.recognizer import FaceRecognizer
    return FaceRecognizer(a.model, backend=a.backend, threshold=getattr(a, "threshold", None), min_face=a.min_face,
                          thresholds=getattr(a, "thresholds", None))


def _progress(items: list, what: str, enabled: bool = True) -> Iterable:
    """Yield items, drawing a one-line bar on stderr when there are many and stderr is a terminal."""
    show = enabled and len(items) > 20 and sys.stderr.isatty()
    for i, item in enumerate(items):
        if show:
            done = 30 * i // len(items)
            print(f"\r{what} [{'#' * done}{'.' * (30 - done)}] {i}/{len(items)}", end="", file=sys.stderr)
        yield item
    if show:
        print(f"\r{what} done: {len(items)}".ljust(60), file=sys.stderr)


def _face_json(f: Any, with_embedding: bool = False) -> dict:
    d = {"box": [round(float(v), 1) for v in f.box], "score": round(f.score, 4), "masked": f.masked,
         "mask_score": None if f.mask_score is None else round(f.mask_score, 4)}
    if with_embedding:
        d["embedding"] = [round(float(v), 6) for v in f.embedding]
    return d


def _thresholds_json(rec: Any) -> dict:
    """The thresholds a run applies, by the mask condition of the two faces compared ("any": the one used when a
    flag is not known); each face's own "threshold" says which one it got."""
    return {"any": rec.threshold, "u-u": rec.threshold_for(False, False), "m-u": rec.threshold_for(True, False),
            "m-m": rec.threshold_for(True, True)}


def images_in(folder: Path) -> list[Path]:
    """The images of one folder, sorted; hidden files (macOS ``._photo.jpg`` companions) are not images."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def folder_images(root: Path) -> dict[str, list[Path]]:
    """root/<identity>/*.jpg -> {identity: [paths]}; identity folders without images are named on stderr (a
    person whose photos sit one level deeper would otherwise be left out without a word)."""
    if not root.is_dir():
        raise FileNotFoundError(f"folder {root} does not exist")
    out = {d.name: images_in(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    empty = [k for k, v in out.items() if not v]
    if empty and len(empty) < len(out):
        print(f"note: {root}: skipped {len(empty)} folder(s) without images directly inside (sub-folders are not "
              f"searched): {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}", file=sys.stderr)
    out = {k: v for k, v in out.items() if v}
    if not out:
        raise ValueError(f"{root} has no <identity>/ sub-folders with images")
    return out


# -- commands -----------------------------------------------------------------------------------
def cmd_embed(a: argparse.Namespace) -> int:
    rec = _recognizer(a)
    results, all_emb, missing = [], [], 0
    for path in _progress(a.images, "embedding", not a.json):
        if a.aligned:
            e = rec.embed([path], aligned=True)
            results.append({"image": path, "faces": [{"embedding": e[0].round(6).tolist()} if a.json else {}]})
            all_emb.append(e)
            continue
        faces = rec.analyze([path])[0]
        missing += not faces
        all_emb += [f.embedding[None] for f in faces]
        results.append({"image": path, "faces": [_face_json(f, a.json) for f in faces]})
    if a.out:
        with open(a.out, "wb") as f:  # np.save(name) appends ".npy" to other names: write where told (and reported)
            np.save(f, np.concatenate(all_emb) if all_emb else np.zeros((0, 128), np.float32))
    if a.json:
        print(json.dumps({"images": results, "out": a.out}))
    else:
        for r in results:
            masked = sum(bool(f.get("masked")) for f in r["faces"])
            print(f"{r['image']}: {len(r['faces'])} face(s), {masked} masked")
        if a.out:
            print(f"wrote {sum(len(e) for e in all_emb)} embeddings to {a.out}")
    return 1 if missing else 0


def cmd_verify(a: argparse.Namespace) -> int:
    rec = _recognizer(a)
    fa, fb = rec.face(a.a, "first image"), rec.face(a.b, "second image")
    r = rec.verify(fa, fb)  # the faces, not their embeddings: the threshold of their mask condition
    if a.json:
        print(json.dumps({"similarity": round(r.similarity, 6), "same": r.same, "threshold": r.threshold,
                          "masked": [fa.masked, fb.masked], "model_version": rec.model_version}))
    else:
        print(f"{'SAME' if r.same else 'DIFFERENT'} person: similarity {r.similarity:.4f} "
              f"(threshold {r.threshold:.4f}; masked: {fa.masked}, {fb.masked})")
    return 0 if r.same else 1


def cmd_enroll(a: argparse.Namespace) -> int:
    from maskfr.gallery import Gallery
    if a.identity and not a.folder:  # else nothing is enrolled, silently
        raise ValueError("--identity needs the FOLDER of that person's images")
    path = Path(a.gallery)
    Gallery.check_save_path(path)  # before the enrolment work, not after it
    rec = _recognizer(a)
    gallery = Gallery.load(path) if path.exists() else rec.new_gallery()
    report: dict[str, Any] = {}
    if a.remove:
        gallery.remove(a.remove)
        report["removed"] = a.remove
    if a.rename:
        gallery.rename(*a.rename)
        report["renamed"] = a.rename
    if a.folder:
        root = Path(a.folder)
        people = {a.identity: images_in(root)} if a.identity else folder_images(root)
        enrolled, no_face = {}, 0
        for name, paths in _progress(list(people.items()), "enrolling", not a.json):
            n = rec.enroll(gallery, name, paths)
            enrolled[name], no_face = n, no_face + len(paths) - n
        report.update(enrolled=enrolled, images_without_face=no_face)
    gallery.save(path)
    report.update(gallery=str(path), identities=len(gallery), templates=gallery.n_templates)
    if a.json:
        print(json.dumps(report))
    else:
        print(f"{path}: {len(gallery)} identities, {gallery.n_templates} templates"
              + (f"; enrolled {sum(report['enrolled'].values())} faces, {report['images_without_face']} images "
                 "without a face" if "enrolled" in report else ""))
    return 0


def cmd_identify(a: argparse.Namespace) -> int:
    from maskfr.gallery import Gallery
    rec = _recognizer(a)
    gallery = Gallery.load(a.gallery)
    if not len(gallery):  # else every face reads "unknown", as if no one matched
        raise ValueError(f"{a.gallery} holds no identities: enrol some with `maskfr enroll {a.gallery} FOLDER`")
    out, found = [], False
    for img in a.images:
        res = rec.identify(img, gallery, a.top_k)
        found |= any(r.identity for r in res)
        out.append({"image": img, "faces": [dict(_face_json(r.face), identity=r.identity, threshold=r.threshold,
                    matches=[{"identity": m.identity, "similarity": round(m.similarity, 6)} for m in r.matches])
                    for r in res]})
    if a.json:
        print(json.dumps({"results": out, "thresholds": _thresholds_json(rec), "model_version": rec.model_version}))
    else:
        for o in out:
            names = [f"{f['identity'] or 'unknown'} ({f['matches'][0]['similarity']:.3f})" if f["matches"] else "unknown"
                     for f in o["faces"]]
            print(f"{o['image']}: " + (", ".join(names) if names else "no face"))
    return 0 if found else 1


def cmd_calibrate(a: argparse.Namespace) -> int:
    from maskfr.fileio import write_then_rename
    from maskfr.metrics import calibrate, check_far
    check_far(a.far)  # before minutes of embedding
    rec = _recognizer(a)
    # an identity's sub-folders of the same name in every folder are one person; the same file name there, one photo
    items = [(name, p) for folder in a.folders for name, paths in folder_images(Path(folder)).items() for p in paths]
    people = {name: k for k, name in enumerate(sorted({name for name, _ in items}))}
    photo_ids: dict[tuple[str, str], int] = {}
    embs, labels, photos, flags, no_face = [], [], [], [], 0
    for name, p in _progress(items, "embedding", not a.json):
        faces = rec.analyze([p])[0]
        if faces:
            embs.append(faces[0].embedding)
            labels.append(people[name])
            photos.append(photo_ids.setdefault((name, p.name), len(photo_ids)))
            flags.append(faces[0].masked)
        no_face += not faces
    if not embs:
        raise ValueError(f"no face found in any of the {len(items)} images of {', '.join(a.folders)}")
    known = None not in flags  # mask flags need the mask classifier
    report = calibrate(np.stack(embs), np.array(labels), a.far, masked=np.array(flags, bool) if known else None,
                       photos=np.array(photos))
    by = report.get("by_condition")
    lacking = [c for c in ("u-u", "m-u", "m-m") if c not in by] if by is not None else []
    report.update(images=len(items), images_without_face=no_face, model_version=rec.model_version,
                  conditions_not_calibrated=lacking)
    if a.output:  # the model metadata's format, for FaceRecognizer(thresholds=...) / --thresholds
        key = "far=" + f"{a.far:.0e}".replace("e-0", "e-")
        thresholds = {key: round(report["threshold"], 4), **{f"{key},{c}": round(r["threshold"], 4)
                                                             for c, r in report.get("by_condition", {}).items()}}
        write_then_rename(Path(a.output), (json.dumps(thresholds) + "\n").encode())
        report["thresholds_file"] = a.output
    if a.json:
        print(json.dumps(report))
    else:
        rows = [("all pairs", report)] + list(report.get("by_condition", {}).items())
        for what, r in rows:
            print(f"{what}: threshold {r['threshold']:.4f} -> TAR {100 * r['tar']:.2f} % at FAR {a.far:g} "
                  f"({r['genuine_pairs']} genuine / {r['impostor_pairs']} impostor pairs)"
                  + (f"; note: {r['note']}" if r["note"] else ""))
        print(f"{no_face} of {len(items)} images without a face" + (f"; wrote {a.output}" if a.output else ""))
        if lacking:
            print(f"no {' / '.join(lacking)} pairs: those comparisons will use the all-pairs threshold. For masked "
                  "ones, add masked photos, or masked copies of these (pip install 'maskfr[train]'; maskfr mask "
                  "FOLDER MASKED; maskfr calibrate FOLDER MASKED)")
    return 0


def _timeit(fn: Callable[[], Any], seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def cmd_bench(a: argparse.Namespace) -> int:
    from maskfr.align import similarity_transform, template
    from maskfr.gallery import Gallery
    from maskfr.preprocess import preprocess
    batches = [int(v) for v in a.batch.split(",")]
    if min(batches) < 1 or a.gallery_size < 1:
        raise ValueError("--batch sizes and --gallery-size must be >= 1")
    rec = _recognizer(a)
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        x = rng.uniform(-1, 1, (b, 3, 112, 112)).astype(np.float32)
        t = _timeit(lambda: rec.runner.infer(x), a.seconds)
        rows.append({"stage": "embed", "backend": rec.runner.name, "batch": b, "ms": 1e3 * t, "faces_per_s": b / t})
        frame = rng.integers(0, 255, (720, 1280, 3), np.uint8)
        mats = np.stack([similarity_transform(template(112) * 2 + 300, template(112))] * b)
        t = _timeit(lambda: preprocess([frame], np.zeros(b, np.int64), mats, backend=rec.preprocess_backend), a.seconds)
        rows.append({"stage": "preprocess", "batch": b, "ms": 1e3 * t, "faces_per_s": b / t})
    e = rng.standard_normal((a.gallery_size, 128)).astype(np.float32)
    g = Gallery.one_template_each(e)
    t = _timeit(lambda: g.search(e[0], 5), a.seconds)
    rows.append({"stage": "gallery_search", "backend": g.backend(), "identities": a.gallery_size, "ms": 1e3 * t})
    if a.json:
        print(json.dumps({"results": rows}))
    else:
        for r in rows:
            print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    return 0


def _demo_face(rec: Any, img: np.ndarray, what: str) -> Any:
    """The largest face of a demo image, or None (``NoFaceError`` is an answer here, not an error)."""
    from maskfr.recognizer import NoFaceError
    try:
        return rec.face(img, what)
    except NoFaceError:
        return None


def cmd_demo(a: argparse.Namespace) -> int:
    """Offline demo on public-domain photos from scikit-image: a face, the same face with a drawn mask,
    and a photo without a face. Exit 0 when every answer is the expected one, 1 otherwise."""
    from maskfr.demo import CREDITS, DemoDataMissing, annotate, demo_images, draw_mask
    from maskfr.recognizer import DEFAULT_MODEL, FaceRecognizer
    if a.model is None and not DEFAULT_MODEL.exists():
        print(f"maskfr demo: the default model {DEFAULT_MODEL.name} is not installed in this build yet; "
              "run with --model PATH.onnx", file=sys.stderr)
        return 2
    try:
        photos = demo_images()
    except DemoDataMissing as exc:
        print(f"maskfr demo: {exc}", file=sys.stderr)
        return 2
    try:
        rec = FaceRecognizer(a.model, backend=a.backend, min_face=a.min_face)
        face = _demo_face(rec, photos["astronaut"], "astronaut")
    except (RuntimeError, FileNotFoundError) as exc:  # e.g. no detector in this build, detector nets missing
        print(f"maskfr demo: {exc}", file=sys.stderr)
        return 2
    if face is None:
        print("maskfr demo: no face found in the astronaut photo; the detector is not working", file=sys.stderr)
        return 1
    masked_img = draw_mask(photos["astronaut"], face.landmarks)
    masked = _demo_face(rec, masked_img, "astronaut + drawn mask")
    coffee = _demo_face(rec, photos["coffee"], "coffee")
    # (label, face a, face b, expected answer)
    trials = [("astronaut vs astronaut + drawn mask", face, masked, "same"), ("astronaut vs coffee", face, coffee, "no face")]
    rows = []
    for label, fa, fb, expected in trials:
        row: dict[str, Any] = {"pair": label, "expected": expected, "similarity": None, "same": None,
                               "threshold": None, "masked": [fa.masked, None if fb is None else fb.masked]}
        if fb is None:
            row["answer"] = "no face"
        else:
            r = rec.verify(fa, fb)  # the threshold of the two faces' mask condition, as for any two images
            row.update(similarity=round(r.similarity, 4), same=r.same, threshold=r.threshold,
                       answer="same" if r.same else "different")
        row["correct"] = row["answer"] == expected
        rows.append(row)
    flags = [("astronaut", face, False)] + ([("astronaut + drawn mask", masked, True)] if masked is not None else [])
    mask_flags = [{"image": n, "masked": f.masked, "mask_score": None if f.mask_score is None else round(f.mask_score, 4),
                   "expected": want, "correct": f.masked is None or f.masked == want} for n, f, want in flags]
    ok = all(r["correct"] for r in rows) and all(m["correct"] for m in mask_flags)
    written = []
    if a.out:
        import cv2
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, img, faces, label in (
                ("astronaut.png", photos["astronaut"], [face], "astronaut (NASA, public domain)"),
                ("astronaut_masked.png", masked_img, [masked] if masked is not None else [], "astronaut + drawn mask"),
                ("coffee.png", photos["coffee"], [coffee] if coffee is not None else [],
                 "coffee: no face" if coffee is None else "coffee")):
            cv2.imwrite(str(out / name), annotate(img, faces, label))
            written.append(str(out / name))
    if a.json:
        print(json.dumps({"model_version": rec.model_version, "backend": rec.runner.name, "thresholds": _thresholds_json(rec),
                          "photos": CREDITS, "face": _face_json(face),
                          "masked_face": None if masked is None else _face_json(masked),
                          "mask_flags": mask_flags, "verify": rows, "all_correct": ok, "out": written}))
        return 0 if ok else 1
    print(f"maskfr demo: model {rec.model_version} on {rec.runner.name}")  # thresholds: per pair, below
    print(f"  photos: {CREDITS['astronaut']}; {CREDITS['coffee']}")
    for m in mask_flags:
        got = "n/a (no mask classifier)" if m["masked"] is None else \
            f"{'mask' if m['masked'] else 'no mask'} (score {m['mask_score']:.3f})"
        print(f"  mask flag, {m['image']:<24} {got:<26} expected {'mask' if m['expected'] else 'no mask'}"
              f"  {'ok' if m['correct'] else 'WRONG'}")
    for r in rows:
        got = f"{r['answer'].upper()} (similarity {r['similarity']:+.3f}, threshold {r['threshold']:.3f})" \
            if r["similarity"] is not None else f"no face in {r['pair'].split(' vs ')[1]}"
        print(f"  verify {r['pair']:<36} {got:<48} expected {r['expected']}  {'ok' if r['correct'] else 'WRONG'}")
    for p in written:
        print(f"  wrote {p}")
    print("all correct" if ok else "some answers differ from the expected ones (see above)")
    return 0 if ok else 1


# -- parser -------------------------------------------------------------------------------------
def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Missing components (model, detector, backend) are exit code 2 with a one-line message."""
    def run(a: argparse.Namespace) -> int:
        try:
            return fn(a)
        except RuntimeError as exc:
            print(f"maskfr {a.cmd}: error: {exc}", file=sys.stderr)
            return 2
    return run


def add_runtime_commands(sub: argparse._SubParsersAction) -> None:
    """Register the runtime sub-commands on ``maskfr``'s sub-parsers."""
    def common(p: argparse.ArgumentParser, threshold: bool = False) -> None:
        p.add_argument("--model", help="ONNX model or TensorRT engine (default: the packaged model)")
        p.add_argument("--backend", default="auto", help="auto, cpu, cuda or tensorrt")
        p.add_argument("--min-face", type=int, help="smallest face side to look for, pixels (default 20; 12 finds "
                       "smaller faces at about twice the detection time)")
        if threshold:
            p.add_argument("--threshold", type=float, help="one similarity threshold for every comparison (default: "
                           "the model's at FAR 1e-3, one per mask condition)")
            p.add_argument("--thresholds", metavar="FILE", help="thresholds per mask condition from 'maskfr "
                           "calibrate -o FILE', instead of the model's")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    def add(name: str, fn: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=_guard(fn))
        return p

    p = add("embed", cmd_embed, "embed the faces of images (exit 1 if some image has no face)")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--aligned", action="store_true", help="images are aligned 112x112 crops")
    p.add_argument("--out", help="write all embeddings to this .npy file: one row per face, in the order the output "
                   "lists them (images in the order given, each one's largest face first)")
    common(p)
    p = add("verify", cmd_verify, "are the largest faces of two images the same person? (exit 0 yes, 1 no, 2 bad input or no face)")
    p.add_argument("a", help="image file")
    p.add_argument("b", help="image file")
    common(p, threshold=True)
    p = add("enroll", cmd_enroll, "create/update a gallery from root/<identity>/*.jpg (or one folder + --identity)")
    p.add_argument("gallery", help="gallery file (.npz), created if missing")
    p.add_argument("folder", nargs="?", help="root/<identity>/*.jpg (each sub-folder one person), or one person's "
                   "photos with --identity")
    p.add_argument("--identity", help="enrol every image of FOLDER as this identity")
    p.add_argument("--remove", metavar="NAME", help="delete this identity from the gallery")
    p.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"), help="rename an identity")
    common(p)
    p = add("identify", cmd_identify, "who is in these images? (exit 0 if anyone was recognised, else 1)")
    p.add_argument("gallery", help="gallery file (.npz) from 'maskfr enroll'")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="matches listed per face (default 3)")
    common(p, threshold=True)
    p = add("calibrate", cmd_calibrate, "threshold for a target FAR on labelled root/<identity>/*.jpg folders")
    p.add_argument("folders", nargs="+", metavar="folder", help="same-named <identity> sub-folders are one person "
                   "(e.g. your photos and their 'maskfr mask' copies; a photo is never paired with its copy)")
    p.add_argument("--far", type=float, default=1e-3, help="false accept rate to pick the threshold for (default 1e-3)")
    p.add_argument("-o", "--output", help="write the thresholds (all pairs, and per mask condition) to this JSON "
                   "file, for --thresholds / FaceRecognizer(thresholds=...)")
    common(p)
    p = add("bench", cmd_bench, "time embedding, preprocessing and gallery search")
    p.add_argument("--batch", default="1,8,32", help="batch sizes to time, comma-separated")
    p.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement")
    p.add_argument("--gallery-size", type=int, default=10_000, help="identities in the stand-in gallery searched")
    common(p)
    p = add("demo", cmd_demo, "offline demo on public-domain photos from scikit-image (pip install 'maskfr[demo]'): "
            "a face verified against itself with a drawn mask, mask flags, and a photo without a face")
    p.add_argument("--out", metavar="DIR", help="write the annotated photos here")
    common(p)


__all__ = ["add_runtime_commands"]
