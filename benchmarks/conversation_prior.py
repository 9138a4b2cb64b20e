"""Choose the weight of a userlens prior for conversational recommendation on validation
pairs only (the test pairs are played once, by ``userlens run``).

    python benchmarks/conversation_prior.py --dataset crs-lastfm-star --model ease \
        --params '{"l2": 100}' --weights 0,0.25,0.5,1,2 --pairs 2000

For each weight: the EAR FM (trained once, as in the config) plus ``weight`` times the
model's standardised scores of the user's whole training history; abs-greedy and
max-entropy success rates on a fixed sample of validation pairs. Writes
``benchmarks/results/conversation_prior_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from userlens.config import EstimatorConfig
from userlens.conversation.data import load_crs, resolve_crs
from userlens.conversation.estimator import fit_estimator
from userlens.conversation.experiment import prior_scores
from userlens.conversation.policies import make_policy
from userlens.conversation.session import Conversations
from userlens.conversation.simulator import UserSimulator, evaluate
from userlens.data.datasets import find_mirror

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="crs-lastfm-star")
    parser.add_argument("--model", default="ease")
    parser.add_argument("--params", default='{"l2": 100.0}')
    parser.add_argument("--weights", default="0,0.25,0.5,1,2")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_crs(resolve_crs(args.dataset, find_mirror(ROOT)), name=args.dataset)
    started = time.perf_counter()
    estimator, _ = fit_estimator(data, EstimatorConfig(), seed=args.seed)
    prior = prior_scores(data, args.model, json.loads(args.params), seed=args.seed)
    print(f"estimator + prior: {time.perf_counter() - started:.0f} s", flush=True)
    valid = data.pairs["valid"]
    valid = valid[np.random.default_rng(args.seed).choice(len(valid), min(args.pairs,
                                                                           len(valid)),
                                                          replace=False)]
    rows = []
    for weight in (float(w) for w in args.weights.split(",")):
        conversations = Conversations.from_data(data, estimator, prior=prior,
                                                prior_weight=weight)
        for name in ("abs_greedy", "max_entropy"):
            result = evaluate(conversations, UserSimulator(data),
                              make_policy(name, n_attributes=data.n_attributes), valid,
                              seed=args.seed + 1)
            row = {"weight": weight, "policy": name,
                   **{k: result[k] for k in ("sr@5", "sr@10", "sr@15", "at")}}
            rows.append(row)
            print(row, flush=True)
    out = ROOT / "benchmarks" / "results" / f"conversation_prior_{args.dataset}.json"
    out.write_text(json.dumps({"dataset": args.dataset, "model": args.model,
                               "params": json.loads(args.params), "split": "valid",
                               "pairs": int(len(valid)), "seed": args.seed, "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
