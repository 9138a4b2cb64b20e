"""Choose a conversation setting on validation pairs only (the test pairs are never read).

    python benchmarks/conversation_validation.py configs/crs-lastfm-ear.toml \
        --variant estimator.item_identity=all --variant estimator.item_identity=seen

For each variant (dotted overrides of the config's ``[conversation]`` section, several
joined by commas) it trains the estimator and the learned policies exactly as
``userlens run`` does, then plays a fixed sample of validation pairs with every policy and
reports SR@5/10/15 and AT, split by whether the target item occurs in a training pair, and
where the target ranks among the candidates once all its attributes are confirmed (the
best a policy can narrow the candidates to; 0 = top, 0.5 = a random order). Writes
``benchmarks/results/conversation_validation_<config>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path

import numpy as np

from userlens.config import ConversationConfig
from userlens.conversation.data import CRSData
from userlens.conversation.estimator import Estimator, fit_estimator
from userlens.conversation.experiment import load_conversation_data
from userlens.conversation.policies import LearnedPolicy, make_policy
from userlens.conversation.session import Conversations
from userlens.conversation.simulator import UserSimulator, evaluate
from userlens.data.datasets import find_mirror

ROOT = Path(__file__).resolve().parents[1]


def override(section: dict, assignments: str) -> dict:
    section = json.loads(json.dumps(section))
    for assignment in filter(None, assignments.split(",")):
        key, _, raw = assignment.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *path, last = key.strip().split(".")
        node = section
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return section


def full_attribute_rank(estimator: Estimator, data: CRSData, pairs: np.ndarray) -> np.ndarray:
    """Per pair: the share of candidates (items carrying every attribute of the target)
    the FM scores above the target, given the user and all those attributes."""
    ranks = np.full(len(pairs), np.nan)
    for row, (user, item) in enumerate(pairs):
        own = data.attributes_of(item)
        if len(own) == 0:
            continue
        carriers = np.asarray(data.item_attributes[:, own].sum(1)).ravel() == len(own)
        candidates = np.flatnonzero(carriers)
        query = estimator.query(estimator.user[user], own)
        scores = estimator.item[candidates] @ query
        ranks[row] = float((scores > float(estimator.item[item] @ query)).sum()) / max(
            len(candidates) - 1, 1)
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--variant", action="append", default=None,
                        help="dotted overrides, e.g. estimator.item_identity=seen")
    parser.add_argument("--pairs", type=int, default=3000, help="validation pairs played")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", default=None,
                        help="comma-separated policies to play (default: the config's)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/"
                        "conversation_validation_<config>.json")
    args = parser.parse_args()
    raw = tomllib.loads(args.config.read_text())
    data = load_conversation_data(raw["data"].get("dataset"), raw["data"].get("path"),
                                  mirror=find_mirror(ROOT))
    valid = data.pairs["valid"]
    rng = np.random.default_rng(args.seed + 1)  # not the sample the policies select on
    sample = valid[rng.choice(len(valid), min(args.pairs, len(valid)), replace=False)]
    seen = np.zeros(data.n_items, dtype=bool)
    seen[data.pairs["train"][:, 1]] = True
    cold = ~seen[sample[:, 1]]
    rows = []
    for variant in args.variant or [""]:
        config = ConversationConfig.model_validate(override(raw.get("conversation", {}),
                                                            variant))
        started = time.perf_counter()
        estimator, history = fit_estimator(data, config.estimator, seed=args.seed)
        ranks = full_attribute_rank(estimator, data, sample)
        conversations = Conversations.from_config(data, estimator, config)
        simulator = UserSimulator(data, ("train",))
        row = {"variant": variant or "(config)", "estimator_epochs": len(history),
               "estimator_valid": max(h["valid"] for h in history),
               "rank_all_attributes": {"warm": float(np.nanmean(ranks[~cold])),
                                       "cold": float(np.nanmean(ranks[cold]))},
               "policies": {}}
        for name in args.policies.split(",") if args.policies else config.policies:
            policy = make_policy(name, n_attributes=data.n_attributes,
                                 max_turns=config.max_turns, training=config.training,
                                 seed=args.seed)
            if isinstance(policy, LearnedPolicy):
                policy.fit(conversations, simulator, data.pairs["train"], valid,
                           max_turns=config.max_turns)
            result = {}
            for group, mask in (("all", np.ones(len(sample), bool)), ("warm", ~cold),
                                ("cold", cold)):
                summary = evaluate(conversations, simulator, policy, sample[mask],
                                   seed=args.seed, max_turns=config.max_turns)
                result[group] = {k: round(summary[k], 4) for k in
                                 ("sr@5", "sr@10", f"sr@{config.max_turns}", "at",
                                  "questions_per_episode")}
            row["policies"][name] = result
            print(json.dumps({"variant": row["variant"], "policy": name, **result["all"]}),
                  flush=True)
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("variant", "estimator_valid",
                                              "rank_all_attributes", "seconds")}), flush=True)
    out = args.out or (ROOT / "benchmarks" / "results" /
                       f"conversation_validation_{args.config.stem}.json")
    out.write_text(json.dumps({"config": str(args.config), "pairs": len(sample),
                               "cold_share": float(cold.mean()), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
