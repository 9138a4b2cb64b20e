"""Epoch time of the contrastive sequence models against SASRec + CE on the same data.

    python benchmarks/contrastive_epochs.py configs/beauty-s3rec-icsrec.toml --epochs 3

Trains SASRec + CE (the config's model with the auxiliary losses switched off, i.e. the
same encoder and next-item loss), ICSRec and ICLRec (each with the config's settings; the
ICLRec-only keys default) for a few epochs each on the config's training split, one thread,
no validation, in alternating order, and reports the median seconds per epoch and the ratio
to SASRec: the cost of the auxiliary objectives (for ICSRec the per-epoch k-means too).
Writes ``benchmarks/results/contrastive_epochs_<config>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _machine import machine

from userlens.config import load_config
from userlens.data.datasets import find_mirror
from userlens.models import create
from userlens.pipeline import load_data, make_split

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"loss", "dim", "n_blocks", "n_heads", "max_len", "dropout", "learning_rate",
          "batch_size", "loss_mean", "positions"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    dataset = load_data(config.data, mirror=find_mirror())
    split = make_split(dataset, config.split, config.seed)
    base = {k: v for k, v in config.models[0].params.items() if k in SHARED}
    base.update(threads=1, max_epochs=args.epochs)
    source = config.models[0].params
    variants = {
        "sasrec": ("sasrec", base),
        "icsrec": ("icsrec", {**base, **{k: v for k, v in source.items() if k in (
            "coarse_weight", "fine_weight", "n_intents", "temperature", "similarity",
            "false_negative_mask", "cl_positions")}, "positions": "from_start"}),
        "iclrec": ("iclrec", {**base, "similarity": "cos"}),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for label, (name, params) in variants.items():
            model = create(name, params).fit(split.train, seed=config.seed)
            epochs = [e["seconds"] for e in model.training_log()["epochs"]]
            seconds[label] += epochs
            print(f"{label}: {', '.join(f'{s:.1f}' for s in epochs)} s per epoch", flush=True)
    median = {label: statistics.median(values) for label, values in seconds.items()}
    result = {
        "config": str(args.config), "epochs": args.epochs, "rounds": args.rounds,
        "machine": machine(threads=1),
        "median_epoch_seconds": median,
        "ratio_to_sasrec": {label: median[label] / median["sasrec"] for label in median},
        "params": {label: params for label, (_, params) in variants.items()},
    }
    out = ROOT / "benchmarks" / "results" / f"contrastive_epochs_{config.name}.json"
    out.write_text(json.dumps(result, indent=2))
    for label in median:
        print(f"{label:8s} {median[label]:7.1f} s/epoch  x{result['ratio_to_sasrec'][label]:.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
