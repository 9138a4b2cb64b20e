"""Time one validation pass of a sequence model, ranking two ways on the same model and users.

Training validates every epoch on up to 10,000 users. "device" is what the trainer does now:
scores stay on the model's device and each target's position comes from counting the items
ahead of it (:func:`userlens.models.nn.sequential.target_ranks`), no sort and no copy. "numpy"
is what it did before and what the evaluation runner does for the final numbers: scores copied
to numpy, the user's items set to -inf, then :func:`userlens.models.base.top_k`. Both print
NDCG@10; they must agree. The model is BERT4Rec with the Beauty config's shape, trained for
one epoch on 500 users (the ranking cost does not depend on the weights).

    python benchmarks/validation_ranking.py [--threads 2] [--device cpu] [--repeats 3]
        [--out benchmarks/results/validation_ranking.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from userlens.data import leave_one_out, read
from userlens.evaluation.metrics import ndcg
from userlens.models import create
from userlens.models.base import mask_seen, top_k

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "data" / "amazon-beauty-bert4rec" / "beauty.txt"


def numpy_ndcg(model, histories, targets: np.ndarray, batch: int) -> float:
    """NDCG@10 the way the evaluation runner ranks: numpy scores, seen items masked, top-k."""
    total = 0.0
    for start in range(0, len(histories), batch):
        part = histories.slice(start, min(start + batch, len(histories)))
        scores = mask_seen(np.array(model.score(part), copy=True), part)
        items, _ = top_k(scores, 10)
        hits = items == targets[start:start + len(part)][:, None]
        total += float(ndcg(hits, np.ones(len(part), np.int64), 10).sum())
    return total / len(histories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    events = read(BEAUTY, "sequences").interactions
    split = leave_one_out(events)
    few = np.flatnonzero(split.train.user_idx < 500)
    model = create("bert4rec", {
        "layout": "post_norm", "mask_prob": 0.4, "dim": 64, "n_blocks": 2, "n_heads": 2,
        "ff_mult": 4, "max_len": 50, "max_epochs": 1, "max_valid_users": 10000,
        "threads": args.threads, "device": args.device})
    model.fit(split.train.take(few), seed=0)
    validate = model._validator(split.train, split.valid, 0)

    users, target = model._validation_users(split.train, split.valid, 0)  # the same users
    histories = split.train.histories(users)

    timings: dict[str, list[float]] = {"device": [], "numpy": []}
    values = {}
    for _ in range(args.repeats):
        for name, run in (("device", validate),
                          ("numpy", lambda: numpy_ndcg(model, histories, target[users],
                                                       model.config.inference_batch_size))):
            started = time.perf_counter()
            values[name] = run()
            timings[name].append(time.perf_counter() - started)
    median = {name: float(np.median(t)) for name, t in timings.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                   f"{torch.get_num_threads()}, device {args.device}" + (
                       f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        "data": str(BEAUTY.relative_to(ROOT.parent)),
        "users": len(users), "items": split.train.n_items,
        "seconds_median": median, "seconds_all": timings,
        "speedup": median["numpy"] / median["device"],
        "ndcg@10": values,
    }
    print(f"validation on {len(users):,} users x {split.train.n_items:,} items: "
          f"device ranking {median['device']:.2f} s, numpy top-k {median['numpy']:.2f} s "
          f"({result['speedup']:.1f}x); NDCG@10 {values['device']:.6f} vs "
          f"{values['numpy']:.6f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
