"""Success of a trained conversation bundle on test targets seen vs never seen in training.

    python benchmarks/conversation_cold.py runs/crs-lastfm-ear --dataset crs-lastfm-ear

Splits the published test pairs by whether their item occurs in any training pair, plays
each group with the served policy and with abs-greedy, and writes
``benchmarks/results/conversation_cold_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from userlens.conversation.bundle import ConversationBundle
from userlens.conversation.data import load_crs, resolve_crs
from userlens.conversation.policies import AbsGreedy
from userlens.conversation.simulator import UserSimulator, evaluate
from userlens.data.datasets import find_mirror

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="a [conversation] run folder")
    parser.add_argument("--dataset", default="crs-lastfm-ear")
    args = parser.parse_args()
    data = load_crs(resolve_crs(args.dataset, find_mirror(ROOT)), name=args.dataset)
    bundle = ConversationBundle.load(args.run)
    seen = np.zeros(data.n_items, dtype=bool)
    seen[data.pairs["train"][:, 1]] = True
    test = data.pairs["test"]
    rows = []
    simulator = UserSimulator(data, ("train", "valid"))  # as userlens run plays test pairs
    for group, mask in (("seen in training", seen[test[:, 1]]),
                        ("never in training", ~seen[test[:, 1]])):
        for policy in (bundle.policy, AbsGreedy()):
            result = evaluate(bundle.conversations, simulator, policy, test[mask])
            row = {"targets": group, "pairs": int(mask.sum()), "policy": policy.name,
                   **{k: result[k] for k in ("sr@5", "sr@10", "sr@15", "at")}}
            rows.append(row)
            print(row, flush=True)
    out = ROOT / "benchmarks" / "results" / f"conversation_cold_{args.dataset}.json"
    out.write_text(json.dumps({"run": str(args.run), "dataset": args.dataset, "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
