"""Epoch and scoring time of a config's sequence models against its SASRec + CE.

    python benchmarks/sequence_model_speed.py configs/beauty-s3rec-mqsa-ted.toml
    python benchmarks/sequence_model_speed.py configs/wikipedia-repeat.toml
    python benchmarks/sequence_model_speed.py configs/beauty-s3rec-sasrec.toml \
        configs/beauty-s3rec-icsrec.toml configs/beauty-s3rec-iclrec.toml --epochs 1

Every torch model of the config (with its settings, one thread, ``--epochs`` epochs, no
validation) trains on the config's training split, in the config's order, and then scores
the first ``--users`` users' training histories (the full n_items matrix). For an
``mqsa_ted`` model the same model without the distillation term (``distill_weight = 0``)
runs too, which splits the cost of the second attention stack from that of the
distillation. Reports the median seconds per epoch and per scoring pass and their ratios to
the config's ``sasrec``; writes ``benchmarks/results/sequence_model_speed_<config>.json``.
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
from userlens.models.sequential_config import SequentialConfig
from userlens.pipeline import load_data, make_split

ROOT = Path(__file__).resolve().parents[1]


def _median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, nargs="+",
                        help="one config, or several on the same data (their models together, "
                             "on the first one's split)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configs = [load_config(path) for path in args.config]
    config = configs[0]
    for other in configs[1:]:
        if other.data != config.data or other.split != config.split:
            raise SystemExit(f"{other.name} reads other data or splits it otherwise than "
                             f"{config.name}")
    dataset = load_data(config.data, mirror=find_mirror())
    split = make_split(dataset, config.split, config.seed)
    users = np.arange(min(args.users, split.train.n_users))
    histories = split.train.histories(users)
    runs = []
    for entry in [entry for c in configs for entry in c.models]:
        if not issubclass(config_class(entry.name), SequentialConfig):
            continue
        params = {**entry.params, "threads": 1, "max_epochs": args.epochs}
        runs.append((entry.display, entry.name, params))
        if entry.name == "mqsa_ted":
            runs.append((f"{entry.display} without distillation", entry.name,
                         {**params, "distill_weight": 0.0}))
    rows = {}
    for label, name, params in runs:
        model = create(name, params).fit(split.train, seed=config.seed)
        epoch = statistics.median(e["seconds"] for e in model.training_log()["epochs"])
        scoring = _median_seconds(lambda m=model: m.score(histories), args.repeats)
        rows[label] = {"model": name, "epoch_seconds": epoch, "scoring_seconds": scoring}
        print(f"{label}: {epoch:.1f} s per epoch, {scoring:.2f} s to score "
              f"{len(users):,} users", flush=True)
    base = rows.get("sasrec")
    if base is not None:
        for row in rows.values():
            row["epoch_ratio"] = row["epoch_seconds"] / base["epoch_seconds"]
            row["scoring_ratio"] = row["scoring_seconds"] / base["scoring_seconds"]
        for label, row in rows.items():
            print(f"{label}: epoch x{row['epoch_ratio']:.2f}, scoring "
                  f"x{row['scoring_ratio']:.2f} of sasrec")
    name = "+".join([config.name] + [c.name.removeprefix(_common(config.name, c.name))
                                     for c in configs[1:]])
    out = ROOT / "benchmarks" / "results" / f"sequence_model_speed_{name}.json"
    out.write_text(json.dumps({"config": [str(p) for p in args.config], "epochs": args.epochs,
                               "users_scored": len(users),
                               "machine": machine(threads=1),
                               "models": rows}, indent=2))
    print(f"wrote {out}")


def _common(a: str, b: str) -> str:
    """The shared leading words of two config names ("beauty-s3rec-")."""
    words = []
    for x, y in zip(a.split("-"), b.split("-"), strict=False):
        if x != y:
            break
        words.append(x + "-")
    return "".join(words)


if __name__ == "__main__":
    main()
