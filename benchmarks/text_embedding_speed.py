"""Time to embed a 50,000-item catalogue with the packaged all-MiniLM-L6-v2, on this CPU.

    python benchmarks/text_embedding_speed.py [--items 50000] [--threads N]

The texts are real item texts (Amazon Scientific's title, categories and brand, from
../shared/data/amazon-scientific-unisrec), repeated with a running number so that every one
is distinct and the lengths are those of a real catalogue. Reports texts per second, the
first (cold) call and a second call that hits the embedding cache, and writes
``benchmarks/results/text_embedding_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine

from userlens.data.datasets import find_mirror
from userlens.data.readers import read
from userlens.data.text import embed_texts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mirror = find_mirror()
    if mirror is None:
        raise SystemExit("needs ../shared/data (amazon-scientific-unisrec)")
    base = read(mirror / "amazon-scientific-unisrec", "unisrec").catalog.texts()
    texts = [f"{base[i % len(base)]} #{i}" for i in range(args.items)]
    lengths = np.array([len(t.split()) for t in texts])
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            print(f"{done:,} / {total:,} texts, {time.perf_counter() - started:.0f} s",
                  flush=True)

        vectors = embed_texts(texts, cache=Path(cache), progress=progress)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = embed_texts(texts, cache=Path(cache))
        cached = time.perf_counter() - started
    assert np.array_equal(vectors, again)
    result = {"items": args.items, "dim": int(vectors.shape[1]),
              "words_per_text_mean": float(lengths.mean()),
              "threads": torch.get_num_threads(), "seconds": cold,
              "texts_per_second": args.items / cold, "cached_seconds": cached,
              "machine": machine(),
              "torch": torch.__version__}
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks" / "results" / "text_embedding_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
