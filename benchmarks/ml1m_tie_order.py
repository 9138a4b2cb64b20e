"""How ML-1M orders ratings made in the same second, and why it matters for the published numbers.

MovieLens users rate in bursts: many events share one timestamp second, so a "chronological"
sequence has to break ties somehow. SASRec's ml-1m.txt (the file behind the published SASRec,
gSASRec and BERT4Rec numbers) sorts each user's ratings by time stably, so same-second ratings
keep ratings.dat's row order. Our sequences (DiffuRec's file, ``../shared/data/ml-1m``) break
those ties another way. This script measures, from the shared data alone:

1. how many consecutive events share a second (timestamps of the 10 rated rows per user in
   ``test_ratings.dat``, placed in our sequences);
2. whether ratings.dat's row order (``test_ratings.dat`` keeps each user's rows in that order)
   is a fixed order over items, the same for every user: if it is, SASRec's within-second
   order is a rule a sequence model can learn, and ours is not that rule;
3. how often our sequences keep that row order inside a same-second pair.

    python benchmarks/ml1m_tie_order.py [--out benchmarks/results/ml1m_tie_order.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

from userlens.data import read

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ml-1m"


def events_by_user(path: Path, data_format: str) -> dict[str, list[tuple[str, int]]]:
    """External user id -> [(external item id, timestamp)] in the file's row order. The
    sequences format numbers each user's events 0, 1, ... as its timestamps."""
    data = read(path, data_format)
    events = data.interactions
    users = data.users.external(events.user_idx)
    items = data.items.external(events.item_idx)
    by_user = defaultdict(list)
    for row in np.argsort(events.row_id, kind="stable"):
        by_user[users[row]].append((items[row], int(events.timestamp[row])))
    return by_user


def measure(positions, rows, seed: int = 0) -> dict:
    adjacent = adjacent_tied = last_adjacent = last_tied = 0
    tied = tied_kept = 0
    orders = defaultdict(list)  # (a, b) with a < b -> [row order puts a first?] per user
    for user, rated in rows.items():
        position = dict(positions[user])  # item -> place in the user's sequence
        last = len(position) - 1
        for (first, t_first), (second, t_second) in combinations(rated, 2):
            low, high = sorted((first, second))
            orders[(low, high)].append(first == low)
            gap = abs(position[first] - position[second])
            if gap == 1:
                adjacent += 1
                adjacent_tied += t_first == t_second
                if max(position[first], position[second]) == last:
                    last_adjacent += 1
                    last_tied += t_first == t_second
            if t_first == t_second:
                tied += 1
                tied_kept += position[first] < position[second]
    repeated = [np.array(v) for v in orders.values() if len(v) >= 3]
    majority = float(np.mean([max(v.mean(), 1 - v.mean()) for v in repeated]))
    rng = np.random.default_rng(seed)  # the same statistic if each user's order were random
    shuffled = [(rng.random(v.size) < 0.5).mean() for v in repeated]
    chance = float(np.mean([max(m, 1 - m) for m in shuffled]))
    return {
        "consecutive_events_in_the_same_second": {
            "pairs_observed": adjacent, "share": adjacent_tied / adjacent,
            "pairs_ending_at_the_last_event": last_adjacent,
            "share_ending_at_the_last_event": last_tied / last_adjacent},
        "row_order_is_one_item_order": {
            "item_pairs_seen_in_3_or_more_users": len(repeated),
            "mean_share_of_users_agreeing_with_the_majority_order": majority,
            "same_statistic_if_row_order_were_random": chance},
        "our_sequences_keep_row_order_in_same_second_pairs": {
            "pairs": tied, "share": tied_kept / tied},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    positions = events_by_user(DATA / "ml-1m_user_sequences.tsv.gz", "sequences")
    rows = events_by_user(DATA / "test_ratings.dat", "movielens")
    result = measure(positions, rows)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
