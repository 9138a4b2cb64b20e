"""Ada-Retrieval's cost against its backbone alone: epoch time and scoring 10,000 users.

    python benchmarks/ada_retrieval_speed.py configs/beauty-s3rec-ada-retrieval.toml

For every ``ada_retrieval`` model of the config and the backbone it runs (same settings),
on the config's training split, one thread, no validation: the backbone trains
``--epochs`` epochs alone; Ada-Retrieval trains the same first stage and then ``--epochs``
epochs of its second stage (five forward passes per prefix, one prefix per user); then both
score the first 10,000 users' training histories (the full n_items matrix; Ada-Retrieval's
rounds included). Reports medians and ratios; writes
``benchmarks/results/ada_retrieval_speed_<config>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _machine import machine

from userlens.config import load_config
from userlens.data.datasets import find_mirror
from userlens.models import create
from userlens.models.registry import config_class
from userlens.pipeline import load_data, make_split

ROOT = Path(__file__).resolve().parents[1]


def _scoring_seconds(model, histories, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.score(histories)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    dataset = load_data(config.data, mirror=find_mirror())
    split = make_split(dataset, config.split, config.seed)
    users = np.arange(min(args.users, split.train.n_users))
    histories = split.train.histories(users)
    results = {}
    for entry in config.models:
        if entry.name != "ada_retrieval":
            continue
        params = {**entry.params, "threads": 1, "max_epochs": args.epochs,
                  "adapt_max_epochs": args.epochs}
        backbone = params.get("backbone", "sasrec")
        fields = config_class(backbone).model_fields  # the backbone's own settings
        alone_params = {k: v for k, v in params.items() if k in fields}
        params.pop("backbone_from", None)  # both stages are timed
        alone = create(backbone, alone_params).fit(split.train, seed=config.seed)
        ada = create("ada_retrieval", params).fit(split.train, seed=config.seed)
        backbone_epochs = [e["seconds"] for e in alone.training_log()["epochs"]]
        adapt_epochs = [e["seconds"] for e in ada.training_log()["epochs"]]
        score_alone = _scoring_seconds(alone, histories, args.repeats)
        score_ada = _scoring_seconds(ada, histories, args.repeats)
        row = {
            "backbone": backbone,
            "backbone_epoch_seconds": statistics.median(backbone_epochs),
            "adapt_epoch_seconds": statistics.median(adapt_epochs),
            "epoch_ratio": statistics.median(adapt_epochs) / statistics.median(backbone_epochs),
            "scoring_seconds_backbone": score_alone,
            "scoring_seconds_ada": score_ada,
            "scoring_ratio": score_ada / score_alone,
            "users_scored": len(users),
        }
        results[entry.display] = row
        print(f"{entry.display}: epoch {row['backbone_epoch_seconds']:.1f} s alone, "
              f"{row['adapt_epoch_seconds']:.1f} s second stage (x{row['epoch_ratio']:.2f}); "
              f"scoring {len(users):,} users {score_alone:.2f} s alone, {score_ada:.2f} s "
              f"(x{row['scoring_ratio']:.2f})", flush=True)
    out = ROOT / "benchmarks" / "results" / f"ada_retrieval_speed_{config.name}.json"
    out.write_text(json.dumps({"config": str(args.config), "epochs": args.epochs,
                               "machine": machine(threads=1),
                               "models": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
