"""Seed methods on masked LFW (pairs of folds 6-10): the dlib teacher, EUM (+SRT / +triplet), the MSE floor, MEER.

    nice -n 15 python benchmarks/seed_methods.py --lfw ../shared/data/lfw [--meer RUN/meer.pt] [--ablations] \
        [--student "G2D=model.onnx" ...] [--eum-on model.onnx] [--report "inpaint-then-teacher=RUN/x.json" ...]

EUM models are trained here (seconds on a CPU) on the teacher embeddings of the G2D training faces
(LFW people of people.txt folds 1-5 + CelebA, masked with the cache's fixed synthetic mask;
:func:`maskfr.training.eum.training_embeddings`). EUM touches masked faces only: masked-unmasked is
EUM(masked probe) vs teacher(unmasked), masked-masked is EUM on both sides (the paper's MR-MP
protocol), unmasked-unmasked is the teacher itself. ``--ablations`` prints the diagnosis table
(margin, embedding centring, schedule) instead of the main one.

Speed: ONNX Runtime, CPU, 1 thread (the machine is shared), batch 32, median of 7 timed calls;
EUM rows are teacher + the EUM graph. ``--student`` rows are exported students (112 crops, ONNX);
``--eum-on`` trains EUM + SRT on a student's embeddings instead of the teacher's; ``--report`` adds a row
from an evaluation JSON written by ``maskfr train --eval`` or ``maskfr eval`` (no size or speed).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maskfr.training import eum as E
from maskfr.training.cache import CACHE_ROOT, lfw_cache_path
from maskfr.training.embedders import dlib_port_embedder, l2n
from maskfr.training.evaluate import evaluate, lfw_pairs

LFW_NPZ = lfw_cache_path()
EVAL_FOLDS = [6, 7, 8, 9, 10]


class LazyRows(dict):
    """Rows of the LFW cache, each array read from the .npz only when first used (the full cache is ~3 GB)."""

    def __init__(self, path: Path, rows: np.ndarray):
        super().__init__()
        self.path, self.rows = path, rows

    def __missing__(self, key: str) -> np.ndarray:
        with np.load(self.path) as z:
            self[key] = z[key][self.rows]
        return self[key]


def lfw_subset(lfw_root: Path, folds: list[int]) -> LazyRows:
    pairs = lfw_pairs(lfw_root, folds)
    need = sorted({p.a for p in pairs} | {p.b for p in pairs})
    with np.load(LFW_NPZ) as z:
        rows = np.flatnonzero(np.isin(z["path"], need))
    return LazyRows(LFW_NPZ, rows)


def teacher_embeddings(lfw_root: Path) -> tuple[LazyRows, dict[bool, np.ndarray]]:
    """Teacher embeddings of the fold 6-10 pair images, cut from the `maskfr eval --folds 1-10` cache."""
    full = lfw_subset(lfw_root, list(range(1, 11)))
    emb = dlib_port_embedder(full)
    test = lfw_subset(lfw_root, EVAL_FOLDS)
    pos = np.searchsorted(full.rows, test.rows)
    return test, {m: emb(m)[pos] for m in (False, True)}


def ms_per_face(run, x: np.ndarray, repeats: int = 7) -> float:
    run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)) / len(x)


def ort(path: str | Path):
    from maskfr.export.onnx_export import ort_session
    return ort_session(path, threads=1)


def accuracy_cells(rep: dict) -> str:
    s = rep["settings"]
    acc = " | ".join(f"{100 * s[k]['accuracy']:.2f} ± {100 * s[k]['std']:.2f}"
                     for k in ("masked-masked", "masked-unmasked", "unmasked-unmasked"))
    return f"{acc} | {100 * s['masked-unmasked']['tar@far=0.001']:.2f}"


def eval_mapped(name: str, model: torch.nn.Module, sub: LazyRows, pairs, temb: dict, out: Path,
                space=lambda e: e) -> dict:
    """Masked side through ``model`` (after ``space``, e.g. centring), unmasked side the teacher (same space)."""
    mapped = E.apply(model, space(temb[True]))
    return evaluate(lambda m: l2n(mapped if m else space(temb[False])), sub, pairs, out, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--meer", type=Path, help="MEER checkpoint (python -m maskfr.training.meer) to add as a row")
    ap.add_argument("--out", type=Path, default=CACHE_ROOT / "runs" / "seed_methods")
    ap.add_argument("--ablations", action="store_true", help="print the EUM diagnosis table instead")
    ap.add_argument("--student", action="append", default=[], metavar="NAME=ONNX", help="an exported student as a row")
    ap.add_argument("--eum-on", type=Path, metavar="ONNX", help="also train EUM + SRT on this student's embeddings")
    ap.add_argument("--eum-margin", type=float, default=2.0, help="SRT margin (the paper: 2.0)")
    ap.add_argument("--report", action="append", default=[], metavar="NAME=JSON", help="a row from an eval JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    a.out.mkdir(parents=True, exist_ok=True)
    data = E.training_embeddings(a.lfw)
    sub, temb = teacher_embeddings(a.lfw)
    pairs = lfw_pairs(a.lfw, EVAL_FOLDS)
    if a.ablations:
        ablations(data, sub, pairs, temb, a.out)
        return
    from maskfr.training.teacher import load_dlib_resnet
    teacher_params = sum(p.numel() for p in load_dlib_resnet().parameters())
    teacher_sess = ort(CACHE_ROOT / "dlib_teacher.onnx")
    chips = sub["chip150_masked"][:32]
    from maskfr.training.teacher import chips_to_tensor
    x = chips_to_tensor(chips).numpy()
    t_ms = ms_per_face(lambda b: teacher_sess.run(None, {"input": b}), x)
    rows = [("dlib ResNet (teacher)", evaluate(lambda m: temb[m], sub, pairs, a.out, "teacher"),
             f"{teacher_params / 1e6:.2f} M", f"{t_ms:.2f}")]
    feats = temb[True][:32].copy()
    for name, loss in (("EUM + SRT", "srt"), ("EUM + triplet", "triplet"), ("MSE floor (residual MLP)", "mse")):
        model = E.ResidualMLP() if loss == "mse" else E.EUM()
        E.train_eum(model, data, loss, margin=a.eum_margin)
        torch.save(model.state_dict(), a.out / f"{loss}.pt")
        onnx_path = E.export_eum_onnx(model, a.out / f"{loss}.onnx")
        sess = ort(onnx_path)
        e_ms = ms_per_face(lambda b: sess.run(None, {E.INPUT_NAME: b}), feats)
        n = sum(p.numel() for p in model.parameters())
        rows.append((name, eval_mapped(loss, model, sub, pairs, temb, a.out),
                     f"{teacher_params / 1e6:.2f} M + {n / 1e3:.1f} k", f"{t_ms:.2f} + {e_ms:.4f}"))
    if a.meer:
        rows.append(meer_row(a.meer, sub, pairs, a.out))
    for spec in a.student:
        name, _, path = spec.partition("=")
        rows.append(student_row(name, Path(path), sub, pairs, a.out))
    if a.eum_on:
        rows.append(eum_on_student(a.eum_on, a.lfw, a.eum_margin, sub, pairs, a.out))
    for spec in a.report:
        name, _, path = spec.partition("=")
        rep = json.loads(Path(path).read_text())
        rows.append((name, rep, "-", "-"))
    print("| method | masked-masked acc % | masked-unmasked acc % | unmasked-unmasked acc % | "
          "TAR@FAR1e-3 % (masked-unmasked) | parameters | CPU ms/face |")
    print("|---|---|---|---|---|---|---|")
    for name, rep, params, ms in rows:
        print(f"| {name} | {accuracy_cells(rep)} | {params} | {ms} |")


def onnx_params(path: Path) -> int:
    import onnx
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def crop_embeddings(sess, sub: LazyRows) -> dict[bool, np.ndarray]:
    """{masked: unit embeddings} of the 112 crops by a student session (input ``input``)."""
    from maskfr.export.onnx_export import ort_embed
    return {m: l2n(ort_embed(sess, sub["img112_masked" if m else "img112"])) for m in (False, True)}


def student_row(name: str, path: Path, sub: LazyRows, pairs, out: Path, n_params: int | None = None) -> tuple:
    """An exported student (112 crops in, unit embeddings out) under ONNX Runtime."""
    from maskfr.align import to_input
    sess = ort(path)
    emb = crop_embeddings(sess, sub)
    ms = ms_per_face(lambda b: sess.run(None, {"input": b}), to_input(sub["img112_masked"][:32]))
    n = onnx_params(path) if n_params is None else n_params
    return name, evaluate(lambda m: emb[m], sub, pairs, out, name), f"{n / 1e6:.2f} M", f"{ms:.2f}"


def eum_on_student(path: Path, lfw: Path, margin: float, sub: LazyRows, pairs, out: Path) -> tuple:
    """EUM + SRT trained on a student's embeddings of the training faces, applied to its masked probes."""
    data = E.training_embeddings(lfw, model=path)
    model = E.EUM()
    E.train_eum(model, data, "srt", margin=margin)
    emb = crop_embeddings(ort(path), sub)
    n = sum(p.numel() for p in model.parameters())
    return (f"EUM + SRT on {path.stem}", eval_mapped(f"srt-on-{path.stem}", model, sub, pairs, emb, out),
            f"{onnx_params(path) / 1e6:.2f} M + {n / 1e3:.1f} k", "-")


def meer_row(ckpt: Path, sub: LazyRows, pairs, out: Path) -> tuple:
    """MEER's deployed part (encoder, occlusion head, reformer) exported to ONNX and run on the 112 crops."""
    from maskfr.training.meer import MeerEmbedder, create_meer, parameter_count
    model = create_meer(pretrained=False)
    model.load_state_dict(torch.load(ckpt, map_location="cpu")["model"])
    net = MeerEmbedder(model).eval()
    path = Path(tempfile.mkdtemp()) / "meer.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 112, 112),), str(path), input_names=["input"], output_names=["embedding"],
                      opset_version=17, dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
    return student_row("MEER-style", path, sub, pairs, out, parameter_count(net))


def ablations(data: E.EmbeddingPairs, sub: LazyRows, pairs, temb: dict, out: Path) -> None:
    """Why SRT lags: dlib's embeddings sit in a narrow cone, so m=2 is never reachable (see RESULTS.md)."""
    d_pn = 2 - 2 * float((data.unmasked[:4096] @ data.unmasked[:4096].T).mean())
    d_ap = float(((data.masked - data.unmasked) ** 2).sum(1).mean())
    print(f"raw teacher space: mean d(p,n) = {d_pn:.3f}, mean d(masked, unmasked same face) = {d_ap:.3f}")
    center = data.unmasked.mean(0)
    centred = E.EmbeddingPairs(l2n(data.masked - center), l2n(data.unmasked - center), data.labels)
    d_pn_c = 2 - 2 * float((centred.unmasked[:4096] @ centred.unmasked[:4096].T).mean())
    print(f"centred space: mean d(p,n) = {d_pn_c:.3f}")
    to_c = lambda e: l2n(e - center)  # noqa: E731
    print("| variant | space | loss | margin | epochs (step) | masked-masked acc % | masked-unmasked acc % | "
          "unmasked-unmasked acc % | TAR@FAR1e-3 % (m-u) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rep = evaluate(lambda m: l2n(to_c(temb[m])), sub, pairs, out, "teacher-centred")
    print(f"| teacher | centred | - | - | - | {accuracy_cells(rep)} |")
    variants = [("raw", "srt", 2.0, 10, 3), ("raw", "srt", 0.3, 10, 3), ("raw", "srt", 0.3, 40, 12),
                ("raw", "triplet", 0.3, 10, 3), ("centred", "srt", 2.0, 10, 3), ("centred", "srt", 1.0, 10, 3),
                ("centred", "srt", 1.0, 40, 12), ("centred", "triplet", 1.0, 10, 3), ("centred", "mse", 0, 10, 3),
                ("raw", "mse", 0, 40, 12)]
    for space, loss, margin, epochs, step in variants:
        d = centred if space == "centred" else data
        model = E.ResidualMLP() if loss == "mse" else E.EUM()
        E.train_eum(model, d, loss, epochs=epochs, step=step, margin=margin)
        rep = eval_mapped(f"abl-{space}-{loss}-{margin}-{epochs}", model, sub, pairs, temb, out,
                          to_c if space == "centred" else (lambda e: e))
        print(f"| EUM | {space} | {loss} | {margin} | {epochs} ({step}) | {accuracy_cells(rep)} |", flush=True)


if __name__ == "__main__":
    main()
