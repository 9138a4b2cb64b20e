"""Cold items: test items that never appear in training, scored from their text alone.

    python benchmarks/text_cold_items.py configs/scientific-text.toml [--cold-share 0.2]

Protocol (on the config's data and leave-one-out split; the config's models and params):
a seeded random ``cold-share`` of the catalogue is held out: every event on those items is
removed from training and validation (so they are absent from training sequences, from the
histories evaluation gives the models, and from early stopping), and they stay in the
catalogue. Each model is fitted on what is left and evaluated on the test split, full
ranking, seen items filtered, separately for the users whose test item is cold and for the
users whose test item is warm. ID-based SASRec is the control: a cold item keeps its random
initial vector. Paired t-tests on the same users against the config's first model.
Writes ``benchmarks/results/text_cold_items_<config>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import machine
from rich.console import Console
from rich.table import Table

from userlens.config import load_config
from userlens.data.datasets import find_mirror
from userlens.data.splits import Split
from userlens.evaluation.compare import paired_test
from userlens.evaluation.runner import evaluate
from userlens.models import create
from userlens.pipeline import give_side_data, load_data, make_split

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["hr@10", "ndcg@10", "recall@50"]


def cold_split(split: Split, cold: np.ndarray) -> tuple[Split, Split]:
    """Train and valid without any event on a cold item; test cut into cold-target and
    warm-target users."""
    is_cold = np.zeros(split.train.n_items, bool)
    is_cold[cold] = True
    train = split.train.take(np.flatnonzero(~is_cold[split.train.item_idx]))
    valid = split.valid.take(np.flatnonzero(~is_cold[split.valid.item_idx]))
    cold_test = split.test.take(np.flatnonzero(is_cold[split.test.item_idx]))
    warm_test = split.test.take(np.flatnonzero(~is_cold[split.test.item_idx]))
    return (Split(train, valid, cold_test, f"{split.method}+cold-items"),
            Split(train, valid, warm_test, f"{split.method}+cold-items"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--cold-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    config = load_config(args.config)
    dataset = load_data(config.data, mirror=find_mirror())
    split = make_split(dataset, config.split, config.seed)
    n_items = dataset.interactions.n_items
    rng = np.random.default_rng(config.seed)
    cold = np.sort(rng.choice(n_items, int(round(args.cold_share * n_items)), replace=False))
    cold_part, warm_part = cold_split(split, cold)
    console.print(f"{len(cold):,} of {n_items:,} items held out; test users with a cold "
                  f"target: {len(cold_part.test):,}, warm: {len(warm_part.test):,}; training "
                  f"events {len(cold_part.train):,} of {len(split.train):,}")
    rows, per_user = [], {}
    for entry in config.models:
        params = {**entry.params, **({"threads": args.threads} if args.threads else {})}
        model = create(entry.name, params)
        give_side_data(model, dataset)
        started = time.perf_counter()
        model.fit(cold_part.train, valid=cold_part.valid, seed=config.seed)
        fit_seconds = time.perf_counter() - started
        row = {"model": entry.display, "fit_seconds": fit_seconds}
        for name, part in (("cold", cold_part), ("warm", warm_part)):
            result = evaluate(model, part, METRICS, seed=config.seed)
            row[name] = result.means()
            per_user[(entry.display, name)] = result.per_user
        rows.append(row)
        console.print(f"{entry.display}: cold {row['cold']}, warm {row['warm']} "
                      f"({fit_seconds:.0f} s)")
    base = config.models[0].display
    for row in rows:
        row["vs_first"] = {}
        for part in ("cold", "warm"):
            for metric in METRICS:
                test = paired_test(per_user[(base, part)][metric],
                                   per_user[(row["model"], part)][metric])
                row["vs_first"][f"{part} {metric}"] = {"diff": test["difference"],
                                                       "p": test["t_pvalue"]}
    table = Table(title=f"cold items ({args.cold_share:.0%} held out), {config.name}")
    table.add_column("model")
    for part in ("cold", "warm"):
        for metric in METRICS:
            table.add_column(f"{part} {metric}", justify="right")
    table.add_column("fit s", justify="right")
    for row in rows:
        table.add_row(row["model"], *[f"{row[p][m]:.4f}" for p in ("cold", "warm")
                                      for m in METRICS], f"{row['fit_seconds']:.0f}")
    Console().print(table)
    out = ROOT / "benchmarks" / "results" / f"text_cold_items_{config.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": str(args.config), "cold_share": args.cold_share, "seed": config.seed,
        "cold_items": len(cold), "items": n_items, "cold_test_users": len(cold_part.test),
        "warm_test_users": len(warm_part.test), "protocol": "leave-one-out, full ranking, "
        "seen items filtered, file-order ties", "machine": machine(threads=args.threads),
        "results": rows}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
