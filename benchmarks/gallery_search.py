"""Gallery search latency, numpy brute force vs faiss IndexFlatIP, to set ``gallery.FAISS_MIN_SIZE``.

    nice -n 10 python benchmarks/gallery_search.py --sizes 10000,100000 [--with-1m] [--seconds 2]

One query (a camera frame's face) and a batch of 32, top-5. The 1M case needs ~0.5 GB and is
skipped unless asked for; every case stops after --seconds.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from maskfr import gallery as gm


def make(n: int, index: str, rng: np.random.Generator) -> gm.Gallery:
    return gm.Gallery.one_template_each(rng.standard_normal((n, 128)).astype(np.float32), index)


def time_search(g: gm.Gallery, q: np.ndarray, seconds: float) -> float:
    g.search(q, 5)  # warm-up (builds the faiss index)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        g.search(q, 5)
        n += 1
    return 1e3 * (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000,50000,100000")
    p.add_argument("--with-1m", action="store_true")
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")] + ([1_000_000] if a.with_1m else [])
    indexes = ["numpy"] + (["faiss"] if gm._faiss() is not None else [])
    rng = np.random.default_rng(0)
    q = rng.standard_normal((32, 128)).astype(np.float32)
    for n in sizes:
        for index in indexes:
            g = make(n, index, rng)
            row = {"identities": n, "index": index,
                   "ms_1_query": round(time_search(g, q[0], a.seconds), 3),
                   "ms_32_queries": round(time_search(g, q, a.seconds), 3)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
