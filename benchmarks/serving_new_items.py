"""Time for a running service to take new items scored from their text (``POST /items``).

    python benchmarks/serving_new_items.py [--items 50000] [--ann hnsw] [--threads 1]

A ``text_sasrec`` over a catalogue of ``--items`` items (random unit 384-d text vectors, one
quick epoch on random events: the timing does not depend on what it learned) is served by an
``Engine``; batches of 1, 10 and 100 new items with real texts (Amazon Scientific's titles,
categories and brands from ../shared/data/amazon-scientific-unisrec, numbered so each is
distinct) are added with ``Engine.with_items``, as the service does on ``POST /items``.
Reported per batch size (median of ``--repeats``): the whole addition, the sentence
embedding alone, and for reference, in the same run, loading the same artefact from disk
(what a reload costs) and one recommendation before and after the growth. Writes
``benchmarks/results/serving_new_items_<items>_<ann>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine

from userlens.data.datasets import find_mirror
from userlens.data.interactions import IdIndex, Interactions
from userlens.data.readers import read
from userlens.data.text import embed_texts
from userlens.models.nn.text import TextSASRec
from userlens.models.sequential_config import TextSASRecConfig
from userlens.serving.engine import Engine

ROOT = Path(__file__).resolve().parents[1]


def served_model(n_items: int, threads: int) -> TextSASRec:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(n_items, 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    users = np.repeat(np.arange(2_000), 10)
    events = Interactions.from_arrays(users, rng.integers(0, n_items, len(users)),
                                      timestamp=np.arange(len(users)), n_items=n_items)
    model = TextSASRec(TextSASRecConfig(dim=64, max_len=50, max_epochs=1, batch_size=256,
                                        threads=threads, loss="sampled_softmax",
                                        n_negatives=256))
    model.set_item_text_embeddings(text)
    return model.fit(events, seed=0)


def timed(call, repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--ann", choices=["none", "hnsw", "ivf"], default="hnsw")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mirror = find_mirror()
    if mirror is None:
        raise SystemExit("needs ../shared/data (amazon-scientific-unisrec)")
    base = read(mirror / "amazon-scientific-unisrec", "unisrec").catalog.texts()
    texts = [t for t in base if t]

    print(f"training a text_sasrec over {args.items:,} items ...", flush=True)
    model = served_model(args.items, args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "artefact"
        model.save(path / "model")
        IdIndex([f"i{i}" for i in range(args.items)]).save(path / "items.json")
        (path / "manifest.json").write_text(json.dumps({"label": "text"}))
        ann_min = 1 if args.ann != "none" else 10**9
        kind = args.ann if args.ann != "none" else "ivf"
        # the first load builds the ANN index and saves it beside the model; a reload
        # reads it back (the median of three loads)
        reload_seconds, engine = timed(lambda: Engine.load(path, ann_min_items=ann_min,
                                                           ann_kind=kind), 3)
    history = [f"i{i}" for i in range(0, 500, 50)]
    first_call_seconds, _ = timed(lambda: embed_texts(["warm up"], use_cache=False), 1)
    before, _ = timed(lambda: engine.recommend(history, 10), args.repeats)
    rows = []
    counter = 0
    for batch in (1, 10, 100):
        def records(batch: int = batch) -> list[tuple[str, dict]]:
            nonlocal counter
            counter += batch
            return [(f"new-{counter + j}", {"text": f"{texts[(counter + j) % len(texts)]} "
                                                    f"#{counter + j}"})
                    for j in range(batch)]

        add_seconds, grown = timed(lambda: engine.with_items(records()), args.repeats)
        embed_seconds, _ = timed(lambda: embed_texts([f["text"] for _, f in records()],
                                                     use_cache=False), args.repeats)
        after, _ = timed(lambda grown=grown: grown.recommend(history, 10), args.repeats)
        assert grown.n_items == args.items + batch
        rows.append({"new_items": batch, "add_seconds": add_seconds,
                     "embed_seconds": embed_seconds, "recommend_after_ms": 1000 * after})
        print(f"{batch:>4} new items: {add_seconds:.3f} s (embedding {embed_seconds:.3f} s); "
              f"a recommendation after: {1000 * after:.1f} ms", flush=True)
    result = {"catalogue_items": args.items, "ann": args.ann, "threads": args.threads,
              "repeats": args.repeats, "reload_artefact_seconds": reload_seconds,
              "first_embedding_call_seconds": first_call_seconds,
              "recommend_before_ms": 1000 * before, "batches": rows,
              "machine": machine(threads=args.threads),
              "torch": torch.__version__}
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks" / "results" / f"serving_new_items_{args.items}_{args.ann}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
